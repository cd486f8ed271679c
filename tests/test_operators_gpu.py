"""GPU checks: CUDA tensors through torch_sparse, ASTRA CUDA 2D/3D. Skipped without a GPU."""

from __future__ import annotations

import warnings

import pytest
import torch

import operators as ops

pytestmark = pytest.mark.gpu


def _astra_cuda():
    astra = pytest.importorskip("astra")
    if not astra.use_cuda():
        pytest.skip("ASTRA has no CUDA device")
    return astra


def test_torch_sparse_on_cuda_matches_cpu():
    A = ops.Operator(ops.volume((4, 48, 48)), ops.fan_flat(30, 96, 1.5, 96.0, 48.0))
    x = torch.rand(2, 4, 48, 48, dtype=torch.float64)
    y_cpu = A(x)
    y_gpu = A(x.cuda())
    assert y_gpu.is_cuda
    torch.testing.assert_close(y_gpu.cpu(), y_cpu)
    assert ops.dot_test(A, torch.float64, device="cuda") <= 1e-10


def test_autograd_on_cuda_stays_on_device():
    A = ops.Operator(*ops.svct(8, 32))
    x = torch.rand(3, 32, 32, device="cuda", requires_grad=True)
    A(x).square().sum().backward()
    assert x.grad.is_cuda


@pytest.mark.parametrize("backend", ["joseph", "raymarch"])
def test_3d_backends_on_cuda_match_cpu(backend):
    A = ops.Operator(
        ops.volume((12, 16, 16)), ops.cone(10, (16, 24), 1.5, 60.0, 30.0), backend=backend
    )
    x = torch.rand(2, 12, 16, 16, dtype=torch.float64)
    y = torch.rand(2, *A.range_shape, dtype=torch.float64)
    torch.testing.assert_close(A(x.cuda()).cpu(), A(x))
    torch.testing.assert_close(A.T(y.cuda()).cpu(), A.T(y))
    assert ops.dot_test(A, torch.float32, device="cuda", batch=2) <= 1e-5


def test_astra_cuda_cone_matches_raymarch_and_is_matched():
    _astra_cuda()
    vg, pg = ops.volume((24, 32, 32)), ops.cone(36, (32, 48), 1.5, 100.0, 50.0)
    g = torch.stack(
        torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in vg.shape), indexing="ij")
    )
    x = torch.exp(-((g[0] - 12) ** 2 + (g[1] - 16) ** 2 + (g[2] - 15) ** 2) / 40.0)
    astra_op = ops.Operator(vg, pg, backend="astra")
    march = ops.Operator(vg, pg, backend="raymarch")
    y_astra = astra_op(x.cuda()).cpu()
    y_march = march(x)
    assert torch.linalg.vector_norm(y_astra - y_march) / torch.linalg.vector_norm(y_march) < 2e-2
    assert (
        ops.dot_test(astra_op, torch.float32, device="cuda") <= 1e-2
    )  # ASTRA CUDA BP is approximate


def test_astra_cuda_2d_parallel_close_to_torch_sparse():
    _astra_cuda()
    vg, pg = ops.volume((3, 64, 64)), ops.parallel(45, 128)
    x = torch.rand(3, 64, 64, device="cuda")
    y_astra = ops.Operator(vg, pg, backend="astra")(x)
    y_sparse = ops.Operator(vg, pg, backend="torch_sparse")(x)
    assert torch.linalg.vector_norm(y_astra - y_sparse) / torch.linalg.vector_norm(y_sparse) < 2e-2


def test_astra_cuda_gradients_flow_and_match_the_adjoint():
    _astra_cuda()
    A = ops.Operator(ops.volume((2, 32, 32)), ops.parallel(16, 48), backend="astra")
    x = torch.rand(2, 32, 32, device="cuda", requires_grad=True)
    w = torch.rand(A.range_shape, device="cuda")
    (A(x) * w).sum().backward()
    assert x.grad.is_cuda
    torch.testing.assert_close(x.grad, A.T(w), rtol=1e-4, atol=1e-4)


def test_astra_runs_on_the_tensors_device_not_the_current_one():
    _astra_cuda()
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    A = ops.Operator(ops.volume((32, 32)), ops.parallel(16, 48), backend="astra")
    x = torch.rand(32, 32)
    with torch.cuda.device(0):
        y1 = A(x.to("cuda:1"))
    assert y1.device == torch.device("cuda:1")
    torch.testing.assert_close(y1.cpu(), A(x.cuda()).cpu())


def test_auto_is_matched_and_astra_cuda_says_once_that_it_is_not():
    _astra_cuda()
    vg, pg = ops.volume((8, 16, 16)), ops.cone(12, (12, 24), 1.5, 60.0, 30.0)
    assert ops.Operator(vg, pg).backend.name == "joseph"
    with pytest.warns(UserWarning, match="approximately the adjoint"):
        A = ops.Operator(vg, pg, backend="astra")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        A.T(A(torch.rand(vg.shape, device="cuda")))  # no second warning


def test_a_bf16_training_step_on_cuda(tmp_path):
    from ctblend.training import BlobDataset, load_config, train

    cfg = load_config(
        "tiny",
        image_size=16,
        batch_size=4,
        warmup_steps=1,
        checkpoint_every=2,
        phases=[{"steps": 2, "crop": None}],
        device="cuda",
        precision="bf16",
    )
    result = train(cfg, BlobDataset(32, 16), tmp_path / "run", progress=False)
    assert result.steps == 2 and torch.isfinite(torch.tensor(result.last_loss))
    assert next(result.model.parameters()).is_cuda


def test_a_sampler_step_on_cuda():
    from pathlib import Path

    from ctblend.pipeline import reconstruct
    from ctblend.priors.loading import load_prior

    weights = Path(__file__).resolve().parents[1] / "ctblend" / "weights" / "blendpp_cpu128"
    prior = load_prior(weights, device="cuda")
    A = ops.Operator(ops.volume((3, 128, 128)), ops.parallel(8, 256))
    y = A(torch.rand(3, 128, 128, device="cuda"))
    x, record = reconstruct("diffusionblend++", y, A, prior, nfe=1)
    assert x.is_cuda and x.shape == (3, 128, 128) and bool(torch.isfinite(x).all())
