"""torch_sparse: the vectorised Joseph matrix against ASTRA's own matrix; its caches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import operators as ops
from operators.backends import sparse


@pytest.mark.parametrize(
    "pg",
    [
        ops.parallel(np.linspace(0.0, 2 * np.pi, 23, endpoint=False), 40, 0.9),
        ops.parallel_vec(
            np.asarray(ops.parallel(np.linspace(0.3, 2.9, 6), 40).to_vec().vectors)
            * [1, 1, 1, 1, 1.1, 1.1]
            + [0, 0, 0.7, -0.2, 0, 0],
            40,
        ),
    ],
)
def test_matrix_equals_astras_linear_matrix(pg):
    astra = pytest.importorskip("astra")
    vg = ops.volume((24, 20), spacing=1.1)
    pid = astra.create_projector("linear", pg.to_astra(), vg.to_astra())
    try:
        theirs = astra.matrix.get(astra.projector.matrix(pid)).toarray()
    finally:
        astra.projector.delete(pid)
    m = ops.Operator(vg, pg).backend.matrix("cpu", torch.float64)
    np.testing.assert_allclose(m.forward.to_dense().numpy(), theirs, rtol=1e-5, atol=1e-4)


def test_csr_invariants_and_exact_transpose():
    vg, pg = ops.volume((30, 34)), ops.fan_flat(17, 60, 1.3, 50.0, 40.0)
    m = ops.Operator(vg, pg).backend.matrix("cpu", torch.float64)
    for csr in (m.forward, m.transpose):
        crow, col = csr.crow_indices(), csr.col_indices()
        for r in range(len(crow) - 1):
            assert bool((col[crow[r] + 1 : crow[r + 1]] > col[crow[r] : crow[r + 1] - 1]).all())
    assert torch.equal(m.forward.to_dense().T, m.transpose.to_dense())


def test_disk_cache_is_keyed_by_the_geometry(tmp_path, monkeypatch):
    monkeypatch.setenv("OPERATORS_SPARSE_CACHE_DIR", str(tmp_path))
    vg, pg = ops.volume((12, 12)), ops.parallel(5, 20)
    x = torch.rand(12, 12, dtype=torch.float64)
    sparse.CACHE.clear()
    y = ops.Operator(vg, pg)(x)
    assert len(list(tmp_path.glob("*.pt"))) == 1
    sparse.CACHE.clear()

    def no_build(*args):
        raise AssertionError("built again instead of read from the disk cache")

    monkeypatch.setattr(sparse, "build_matrix", no_build)
    torch.testing.assert_close(ops.Operator(vg, pg)(x), y)
    with pytest.raises(AssertionError, match="built again"):
        ops.Operator(vg, ops.parallel(6, 20))(x)  # another geometry, another key
    sparse.CACHE.clear()


def test_the_cpu_and_gpu_transposes_agree():
    vg, pg = ops.volume((20, 18)), ops.fan_flat(9, 40, 1.3, 50.0, 40.0)
    crow, col, val = sparse.build_matrix(vg, pg)
    shape = (len(crow) - 1, 20 * 18)
    for a, b in zip(
        sparse.transpose_scipy(crow, col, val, shape),
        sparse.transpose_torch(crow, col, val, shape),
        strict=True,
    ):
        assert torch.equal(a.to(b.dtype), b)
