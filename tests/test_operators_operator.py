"""Operator: exact adjoint, batching, dtypes, autograd, ASTRA as oracle, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage.data import shepp_logan_phantom
from skimage.transform import resize

import operators as ops
from operators.rays import rays_2d


@pytest.fixture
def astra():
    """The ASTRA module; skips only the test that asks for it when ASTRA is absent."""
    return pytest.importorskip("astra")


GEOMETRIES_2D = {
    "parallel": ops.parallel(11, 48, 0.9),
    "parallel_vec": ops.parallel_vec(
        np.asarray(ops.parallel(np.linspace(0.3, 2.9, 6), 40).to_vec().vectors)
        * [1, 1, 1, 1, 1.1, 1.1]
        + [0, 0, 0.7, -0.2, 0, 0],
        40,
    ),
    "fan_flat": ops.fan_flat(13, 50, 1.4, 60.0, 40.0),
    "fan_arc": ops.fan_arc(13, 50, 1.4, 60.0, 40.0),
}


def phantom(n: int, smooth: float = 0.0) -> np.ndarray:
    img = resize(shepp_logan_phantom(), (n, n), anti_aliasing=True).astype(np.float64)
    img[n // 10 : n // 10 + 4, n // 2 : n // 2 + n // 4] = 0.7  # break the left/right symmetry
    return gaussian_filter(img, smooth) if smooth else img


@pytest.mark.parametrize("name", GEOMETRIES_2D)
def test_dot_test_torch_sparse(name):
    A = ops.Operator(ops.volume((32, 30), spacing=(1.0, 1.2)), GEOMETRIES_2D[name])
    assert ops.dot_test(A, torch.float64, batch=2) <= 1e-10
    assert ops.dot_test(A, torch.float32) <= 1e-5


@pytest.mark.parametrize("name", ["parallel", "parallel_vec", "fan_flat"])
def test_dot_test_astra_cpu(name, astra):
    A = ops.Operator(ops.volume((32, 30)), GEOMETRIES_2D[name], backend="astra")
    assert ops.dot_test(A, torch.float32, batch=3) <= 1e-5


@pytest.mark.parametrize(
    "pg", [ops.parallel3d(7, (12, 20), 1.1), ops.cone(9, (14, 22), 1.2, 40.0, 20.0)]
)
@pytest.mark.parametrize("backend", ["joseph", "raymarch"])
def test_dot_test_3d(pg, backend):
    A = ops.Operator(ops.volume((10, 12, 14)), pg, backend=backend)
    assert ops.dot_test(A, torch.float64) <= 1e-10
    assert ops.dot_test(A, torch.float32) <= 1e-5


@pytest.mark.parametrize("name", ["parallel", "fan_arc"])
def test_gradcheck_small(name):
    A = ops.Operator(ops.volume((6, 7)), GEOMETRIES_2D[name])
    assert ops.gradcheck(A)


def test_gradcheck_raymarch():
    A = ops.Operator(ops.volume((4, 5, 6)), ops.cone(3, (5, 6), 1.5, 30.0, 10.0))
    assert ops.gradcheck(A)


def test_parallel_matches_astra_linear(astra):
    n = 96
    vg, pg = ops.volume((n, n)), ops.parallel(45, 2 * n)
    img = phantom(n)
    ours = ops.Operator(vg, pg)(torch.tensor(img)).numpy()
    pid = astra.create_projector("linear", pg.to_astra(), vg.to_astra())
    try:
        _, theirs = astra.create_sino(img, pid)
    finally:
        astra.projector.delete(pid)
    assert np.linalg.norm(ours - theirs) / np.linalg.norm(theirs) <= 1e-4


def test_fan_flat_matches_astra_line_fanflat(astra):
    n = 128
    vg, pg = ops.volume((n, n)), ops.fan_flat(45, 2 * n, 1.5, 3 * n, 2 * n)
    img = phantom(n, smooth=1.5)
    ours = ops.Operator(vg, pg)(torch.tensor(img)).numpy()
    pid = astra.create_projector("line_fanflat", pg.to_astra(), vg.to_astra())
    try:
        _, theirs = astra.create_sino(img, pid)
    finally:
        astra.projector.delete(pid)
    assert np.linalg.norm(ours - theirs) / np.linalg.norm(theirs) <= 5e-3


@pytest.mark.parametrize("name", ["fan_flat", "fan_arc"])
def test_fan_rays_match_astra_joseph_along_the_same_lines(name, astra):
    """Each fan ray as a one-bin parallel_vec view: ASTRA's Joseph kernel must agree exactly."""
    vg, pg = ops.volume((40, 40)), GEOMETRIES_2D[name]
    origin, direction = (a.reshape(-1, 2) for a in rays_2d(pg))
    normal = np.stack([-direction[:, 1], direction[:, 0]], axis=1)
    single = ops.parallel_vec(np.concatenate([direction, origin, normal], axis=1), 1)
    img = phantom(40)
    pid = astra.create_projector("linear", single.to_astra(), vg.to_astra())
    try:
        _, theirs = astra.create_sino(img, pid)
    finally:
        astra.projector.delete(pid)
    ours = ops.Operator(vg, pg)(torch.tensor(img)).numpy().reshape(-1)
    assert np.linalg.norm(ours - theirs.reshape(-1)) / np.linalg.norm(theirs) <= 1e-4


def test_astra_backend_matches_torch_sparse_for_parallel(astra):
    vg, pg = ops.volume((3, 40, 40)), ops.parallel(17, 64)
    x = torch.rand(2, 3, 40, 40)
    a = ops.Operator(vg, pg, backend="astra")
    s = ops.Operator(vg, pg, backend="torch_sparse")
    torch.testing.assert_close(a(x), s(x), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a.T(s(x)), s.T(s(x)), rtol=1e-4, atol=1e-3)


def test_slicewise_volume_equals_loop_over_slices():
    vg3, pg = ops.volume((5, 20, 22)), ops.parallel(9, 30)
    A3 = ops.Operator(vg3, pg)
    A2 = ops.Operator(ops.volume((20, 22)), pg)
    x = torch.rand(2, 5, 20, 22, dtype=torch.float64)
    y = A3(x)
    assert y.shape == (2, 5, 9, 30) and A3.range_shape == (5, 9, 30)
    for b in range(2):
        for z in range(5):
            torch.testing.assert_close(y[b, z], A2(x[b, z]))


def test_parallel3d_raymarch_agrees_with_slicewise_parallel():
    """A 3D parallel beam with vertical detector rows is the 2D projector applied per slice."""
    n = 24
    g = np.mgrid[:8, :n, :n].astype(float)
    x = torch.tensor(np.exp(-((g[1] - 11) ** 2 + (g[2] - 13) ** 2) / 30.0) * (1 + 0.1 * g[0]))
    y3 = ops.Operator(ops.volume((8, n, n)), ops.parallel3d(6, (8, 2 * n)))(x)  # (rows, V, cols)
    y2 = ops.Operator(ops.volume((8, n, n)), ops.parallel(6, 2 * n))(x.flip(1))  # ASTRA 2D: y up
    assert torch.linalg.vector_norm(y3 - y2) / torch.linalg.vector_norm(y2) < 1e-2


def test_ball_projection_is_chord_length():
    """Analytic reference: a smooth radial profile's parallel projection (Abel transform)."""
    n, sigma = 40, 5.0
    g = np.mgrid[:n, :n, :n] - (n - 1) / 2
    blob = np.exp(-(g**2).sum(0) / (2 * sigma**2))
    A = ops.Operator(ops.volume((n, n, n)), ops.cone(4, (n, n), 1.0, 1e5, 1.0))
    p = A(torch.tensor(blob))[:, 0].numpy()
    v, u = np.mgrid[:n, :n] - (n - 1) / 2
    expected = np.sqrt(2 * np.pi) * sigma * np.exp(-(u**2 + v**2) / (2 * sigma**2))
    assert np.linalg.norm(p - expected) / np.linalg.norm(expected) < 2e-3


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes_are_accepted_and_returned(dtype):
    A = ops.Operator(ops.volume((10, 10)), ops.parallel(4, 14))
    x = torch.rand(2, 10, 10).to(dtype)
    y = A(x)
    assert y.dtype == dtype and A.T(y).dtype == dtype


def test_leading_batch_dims():
    A = ops.Operator(ops.volume((10, 12)), ops.parallel(4, 14))
    x = torch.rand(2, 3, 10, 12, dtype=torch.float64)
    y = A(x)
    assert y.shape == (2, 3, 4, 14)
    torch.testing.assert_close(y[1, 2], A(x[1, 2]))


def test_autograd_backward_is_the_adjoint():
    A = ops.Operator(ops.volume((12, 12)), ops.fan_flat(8, 20, 1.0, 40.0, 20.0))
    x = torch.rand(12, 12, dtype=torch.float64, requires_grad=True)
    w = torch.rand(A.range_shape, dtype=torch.float64)
    (A(x) * w).sum().backward()
    torch.testing.assert_close(x.grad, A.T(w))


def test_norm_matches_dense_svd():
    A = ops.Operator(ops.volume((9, 9)), ops.parallel(5, 13))
    M = torch.stack([A(e.reshape(9, 9)).reshape(-1) for e in torch.eye(81, dtype=torch.float64)], 1)
    assert A.norm(iterations=200) == pytest.approx(float(torch.linalg.matrix_norm(M, 2)), rel=1e-6)


def test_operator_repr_and_transpose_shapes():
    A = ops.Operator(*ops.svct(4, 16))
    assert A.T.domain_shape == A.range_shape == (4, 32)
    assert A.T.T is A
    assert "torch_sparse" in repr(A)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda A: A(torch.zeros(9, 10)), "expected shape"),
        (lambda A: A.T(torch.zeros(4, 13)), "expected shape"),
        (lambda A: A(torch.full((10, 10), float("nan"))), "NaN"),
        (lambda A: A(torch.full((10, 10), float("inf"))), "NaN or inf"),
        (lambda A: A(torch.zeros(10, 10, dtype=torch.int64)), "floating-point"),
        (lambda A: A(np.zeros((10, 10))), "torch.Tensor"),
        (
            lambda A: ops.cg(A, torch.zeros(4, 14), 2, x0=torch.zeros(10, 10, device="meta")),
            "devices",
        ),
    ],
)
def test_bad_input_raises_one_clear_error(call, message):
    A = ops.Operator(ops.volume((10, 10)), ops.parallel(4, 14))
    with pytest.raises(ValueError, match=message):
        call(A)


def test_geometry_that_misses_the_volume():
    vg = ops.volume((10, 10), center=(0.0, 500.0))  # 500 mm along x; vertical rays near x = 0
    with pytest.raises(ValueError, match="misses the volume"):
        ops.Operator(vg, ops.parallel([0.0], 10))
    with pytest.raises(ValueError, match="misses the volume"):
        ops.Operator(vg, ops.fan_flat([0.0], 10, 1.0, 50.0, 50.0))
    with pytest.raises(ValueError, match="misses the volume"):
        ops.Operator(ops.volume((4, 10, 10), center=(0, 0, 500.0)), ops.parallel3d([0.0], (4, 4)))


def test_memory_budget_error_names_the_size():
    with pytest.raises(ValueError, match=r"needs about .* GiB"):
        ops.Operator(*ops.svct(180, 256), memory_budget=2**20)(torch.zeros(256, 256))


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend"):
        ops.Operator(*ops.svct(4, 16), backend="nope")


def test_astra_3d_without_gpu_is_a_clear_error_not_a_crash(astra):
    if astra.use_cuda():
        pytest.skip("ASTRA has a GPU here")
    with pytest.raises(ValueError, match="need a CUDA GPU"):
        ops.Operator(ops.volume((4, 8, 8)), ops.cone(3, (6, 6), 1.0, 30.0, 10.0), backend="astra")


def test_astra_fan_arc_is_refused(astra):
    with pytest.raises(ValueError, match="arc"):
        ops.Operator(ops.volume((8, 8)), GEOMETRIES_2D["fan_arc"], backend="astra")


BACKENDS_TINY = {
    "torch_sparse": (ops.volume((6, 7)), ops.fan_flat(5, 10, 1.5, 30.0, 10.0)),
    "astra": (ops.volume((6, 7)), ops.parallel(5, 10)),
    "joseph": (ops.volume((4, 5, 6)), ops.cone(3, (5, 6), 1.5, 30.0, 10.0)),
    "raymarch": (ops.volume((4, 5, 6)), ops.cone(3, (5, 6), 1.5, 30.0, 10.0)),
}


def _tiny(backend: str) -> ops.Operator:
    if backend == "astra":
        pytest.importorskip("astra")
    return ops.Operator(*BACKENDS_TINY[backend], backend=backend)


@pytest.mark.parametrize("backend", BACKENDS_TINY)
def test_gradients_flow_through_every_backend(backend):
    """float32 leaves that require grad reach the backend detached; the gradients equal the
    dense matrix M (columns = A of unit vectors, forward only): Mᵀw for A, Mx for Aᵀ."""
    A = _tiny(backend)
    n = math.prod(A.domain_shape)
    with torch.no_grad():
        M = A(torch.eye(n).reshape(n, *A.domain_shape)).reshape(n, -1).T  # (range, domain)
    x = torch.rand(2, *A.domain_shape, requires_grad=True)
    w = torch.rand(2, *A.range_shape)
    (A(x) * w).sum().backward()
    expected = (w.reshape(2, -1) @ M).reshape(x.shape)
    torch.testing.assert_close(x.grad, expected, rtol=1e-4, atol=1e-4)
    y = torch.rand(2, *A.range_shape, requires_grad=True)
    (A.T(y) * x.detach()).sum().backward()
    expected = (x.detach().reshape(2, -1) @ M.T).reshape(y.shape)
    torch.testing.assert_close(y.grad, expected, rtol=1e-4, atol=1e-4)
    # ASTRA computes in float32: finite differences need a wider step and tolerance
    loose = {"eps": 1e-2, "atol": 1e-3, "rtol": 1e-3} if backend == "astra" else {}
    assert ops.gradcheck(A, **loose)


@pytest.mark.parametrize("backend", BACKENDS_TINY)
def test_autocast_keeps_projections_in_the_operator_dtype(backend):
    A = _tiny(backend)
    x = torch.rand(2, *A.domain_shape)
    y = torch.rand(2, *A.range_shape)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ax, aty = A(x), A.T(y)
    assert ax.dtype == aty.dtype == torch.float32
    torch.testing.assert_close(ax, A(x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(aty, A.T(y), rtol=1e-6, atol=1e-6)


def test_an_astra_failure_raises_instead_of_returning_zeros(astra, monkeypatch):
    """ASTRA's CUDA kernel without a GPU fails inside ASTRA and leaves the output at zero."""
    if astra.use_cuda():
        pytest.skip("ASTRA has a GPU here, so its CUDA kernel does not fail")
    A = ops.Operator(ops.volume((8, 8)), ops.parallel(4, 12), backend="astra")
    vg, pg = A.vol_geom.to_astra(), A.proj_geom.to_astra()
    broken = astra.create_projector("cuda", pg, vg)
    try:
        A(torch.rand(8, 8)), A.T(torch.rand(4, 12))  # the ray masks are probed while it works
        monkeypatch.setattr(A.backend, "_projector", lambda *kind: broken)
        with pytest.raises(RuntimeError, match="inputs that its rays see: its FP failed"):
            A(torch.rand(8, 8))
        with pytest.raises(RuntimeError, match="inputs that its rays see: its BP failed"):
            A.T(torch.rand(4, 12))
    finally:
        astra.projector.delete(broken)


def test_astra_projectors_are_deleted_by_the_module_that_made_them(astra, monkeypatch):
    """3D projectors live in ``astra.projector3d``; deleting them as 2D ones leaks them."""
    backend = ops.Operator(ops.volume((8, 8)), ops.parallel(4, 12), backend="astra").backend
    deleted = []
    monkeypatch.setattr(astra.projector, "delete", lambda pid: deleted.append(("2d", pid)))
    monkeypatch.setattr(astra.projector3d, "delete", lambda pid: deleted.append(("3d", pid)))
    backend._projectors.update({("cpu", 0): 11, ("cuda3d", 0): 12})
    backend.close()
    assert sorted(deleted) == [("2d", 11), ("3d", 12)] and not backend._projectors


def test_astra_older_than_2_5_is_refused(astra, monkeypatch):
    from operators.backends import astra as astra_backend

    monkeypatch.setattr(astra, "__version__", "2.1.0")
    with pytest.raises(ValueError, match="2.5"):
        astra_backend.AstraBackend(ops.volume((8, 8)), ops.parallel(4, 12))


def test_auto_picks_an_exactly_matched_pair():
    assert ops.Operator(ops.volume((8, 8)), ops.parallel(4, 12)).backend.name == "torch_sparse"
    A = ops.Operator(ops.volume((4, 8, 8)), ops.cone(3, (6, 6), 1.0, 30.0, 10.0))
    assert A.backend.name == "joseph" and ops.dot_test(A) <= 1e-10


@pytest.mark.parametrize(
    "geometry",
    [
        (ops.volume((3, 12, 12)), ops.parallel(7, 20)),  # slice-wise 2D, torch_sparse
        (ops.volume((4, 6, 6)), ops.cone(8, (5, 7), 1.3, 20.0, 10.0)),  # joseph
    ],
)
def test_outputs_are_contiguous(geometry):
    """``A(x)`` and ``A.T(y)`` come back C-contiguous (ASTRA's direct calls and the next
    product read them without a copy; torch_sparse's were transposed views)."""
    A = ops.Operator(*geometry)
    y = A(torch.rand(2, *A.domain_shape))
    assert y.is_contiguous() and A.T(y).is_contiguous()
