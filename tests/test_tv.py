"""3D TV least squares (PDHG) against independent references."""

from __future__ import annotations

import pytest
import torch

import operators as ops
from ctblend.tv import gradient, gradient_adjoint, tv_least_squares


def test_gradient_adjoint_dot_test():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 6, 7, generator=g, dtype=torch.float64)
    p = torch.randn(3, 2, 5, 6, 7, generator=g, dtype=torch.float64)
    lhs = torch.sum(gradient(x) * p)
    rhs = torch.sum(x * gradient_adjoint(p))
    assert float(abs(lhs - rhs)) < 1e-10 * float(torch.linalg.vector_norm(p))


def test_gradient_has_no_wrap_around():
    x = torch.zeros(3, 2, 2)
    x[0] = 1.0
    assert torch.equal(gradient(x)[0, -1], torch.zeros(2, 2))


def test_without_tv_it_solves_the_consistent_system():
    A = ops.Operator(ops.volume((2, 6, 6)), ops.parallel(10, 10))
    x_true = torch.rand(2, 6, 6, dtype=torch.float64)
    y = A(x_true)
    x = tv_least_squares(A, y, lam=0.0, iterations=3000, bounds=None)
    assert torch.linalg.vector_norm(A(x) - y) < 1e-3 * torch.linalg.vector_norm(y)


def test_tv_beats_least_squares_on_a_piecewise_constant_volume_from_few_views():
    z, n = 4, 24
    x_true = torch.zeros(z, n, n, dtype=torch.float64)
    x_true[:, 6:18, 5:15] = 0.6
    x_true[1:3, 9:13, 9:20] = 0.9
    A = ops.Operator(ops.volume((z, n, n)), ops.parallel(5, 2 * n))
    y = A(x_true)
    err = lambda x: float(torch.linalg.vector_norm(x - x_true))  # noqa: E731
    tv = tv_least_squares(A, y, lam=0.05, iterations=400)
    assert err(tv) < 0.5 * err(ops.cg(A, y, 30))
    assert float(tv.min()) >= 0.0 and float(tv.max()) <= 1.0


def test_tv_needs_a_volume_operator():
    with pytest.raises(ValueError, match="Z, H, W"):
        tv_least_squares(ops.Operator(ops.volume((6, 6)), ops.parallel(3, 8)), torch.zeros(3, 8))


def test_a_batch_equals_individual_solves():
    batch = 2
    A = ops.Operator(ops.volume((3, 6, 6)), ops.parallel(5, 10))
    x_true = torch.rand(
        batch, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4)
    )
    y = A(x_true)
    together = tv_least_squares(A, y, lam=0.02, iterations=50)
    assert together.shape == x_true.shape
    for b in range(batch):
        single = tv_least_squares(A, y[b], lam=0.02, iterations=50)
        torch.testing.assert_close(together[b], single, atol=1e-10, rtol=0)
