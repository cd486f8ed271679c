"""CG and SIRT against dense linear algebra."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import operators as ops


def dense(A: ops.Operator) -> torch.Tensor:
    n = int(np.prod(A.domain_shape))
    eye = torch.eye(n, dtype=torch.float64)
    return torch.stack([A(e.reshape(A.domain_shape)).reshape(-1) for e in eye], dim=1)


@pytest.fixture(scope="module")
def small():
    A = ops.Operator(ops.volume((8, 8)), ops.parallel(12, 14))
    g = torch.Generator().manual_seed(1)
    x_true = torch.rand(8, 8, generator=g, dtype=torch.float64)
    return A, x_true, A(x_true)


def test_cg_matches_dense_least_squares(small):
    A, _, y = small
    M = dense(A)
    x_ls = torch.linalg.lstsq(M, y.reshape(-1, 1)).solution.reshape(8, 8)
    x = ops.cg(A, y, 200)
    torch.testing.assert_close(x, x_ls, atol=1e-8, rtol=1e-6)


def test_cg_residual_decreases_monotonically(small):
    A, _, y = small
    residuals = []
    ops.cg(
        A,
        y,
        30,
        callbacks=[lambda k, x: residuals.append(float(torch.linalg.vector_norm(A(x) - y)))],
    )
    assert all(b <= a * (1 + 1e-12) for a, b in zip(residuals, residuals[1:], strict=False))
    assert residuals[-1] < 0.05 * residuals[0]


def test_cg_warm_start_and_zero_iterations(small):
    A, x_true, y = small
    torch.testing.assert_close(ops.cg(A, y, 0, x0=x_true), x_true)
    torch.testing.assert_close(ops.cg(A, y, 5, x0=x_true), x_true)  # already the solution


def test_cg_per_slice_inner_products_equal_independent_solves():
    A = ops.Operator(ops.volume((3, 8, 8)), ops.parallel(5, 12))
    A2 = ops.Operator(ops.volume((8, 8)), ops.parallel(5, 12))
    x = torch.rand(3, 8, 8, dtype=torch.float64)
    y = A(x)
    batched = ops.cg(A, y, 4, reduce_dims=2)
    for z in range(3):
        torch.testing.assert_close(batched[z], ops.cg(A2, y[z], 4))
    global_solve = ops.cg(A, y, 4)
    assert not torch.allclose(global_solve, batched)  # one global solve differs after 4 steps


def test_cg_with_regulariser_matches_dense_ridge(small):
    A, _, y = small
    M = dense(A)
    lam = 0.3
    x_ridge = torch.linalg.solve(
        M.T @ M + lam * torch.eye(64, dtype=torch.float64), M.T @ y.reshape(-1)
    )
    x = ops.cg(A, y, 200, regularizer=lambda v: lam * v)
    torch.testing.assert_close(x.reshape(-1), x_ridge, atol=1e-8, rtol=1e-6)


def test_sirt_converges_to_consistent_solution(small):
    A, x_true, y = small
    x = ops.sirt(A, y, 2000)
    assert torch.linalg.vector_norm(A(x) - y) < 1e-3 * torch.linalg.vector_norm(y)
    clipped = ops.sirt(A, y, 5, min_constraint=0.0, max_constraint=0.1)
    assert float(clipped.max()) <= 0.1 and float(clipped.min()) >= 0.0


def test_cg_solves_batch_items_independently_by_default():
    """A batch of slices through a 2D operator: each item is its own problem, as ``A(x)`` is."""
    A = ops.Operator(ops.volume((8, 8)), ops.parallel(5, 12))
    x = torch.rand(4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x[0] *= 10  # items of different scale: a shared inner product couples them
    y = A(x)
    for kwargs in ({}, {"reduce_dims": 2}, {"x0": torch.zeros_like(x)}):
        batched = ops.cg(A, y, 4, **kwargs)
        single = torch.stack([ops.cg(A, y[i], 4) for i in range(4)])
        torch.testing.assert_close(batched, single, atol=1e-10, rtol=0)


def test_cg_reduce_dims_without_x0_reduces_over_trailing_axes():
    A = ops.Operator(ops.volume((3, 8, 8)), ops.parallel(5, 12))
    A2 = ops.Operator(ops.volume((8, 8)), ops.parallel(5, 12))
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y = A(x)
    batched = ops.cg(A, y, 4, reduce_dims=2)
    for b in range(2):
        for z in range(3):
            torch.testing.assert_close(batched[b, z], ops.cg(A2, y[b, z], 4), atol=1e-10, rtol=0)


def test_cg_checks_finiteness_once_per_step_not_per_product(small, monkeypatch):
    """Each NaN/inf check is a host sync on CUDA: the inputs once, then one per step."""
    A, _, y = small
    calls = []
    real = torch.isfinite
    monkeypatch.setattr(torch, "isfinite", lambda t: calls.append(1) or real(t))
    ops.cg(A, y, 10)
    assert len(calls) == 1 + 10
    bad = y.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ops.cg(A, bad, 3)
