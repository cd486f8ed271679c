"""Interop: ASTRA geometry dicts → our geometries (checked against ASTRA's CPU projectors and
its own conversions), and an Operator as a deepinv LinearPhysics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import operators as ops
from operators.interop import deepinv_maps, to_deepinv

TYPES_2D = ("parallel", "parallel_vec", "fanflat", "fanflat_vec")
TYPES_3D = ("parallel3d", "parallel3d_vec", "cone", "cone_vec")
# ASTRA's CPU kernel for each 2D type and the bound on its difference from ours: `linear` is
# the same Joseph kernel as ours; `line_fanflat` (intersection lengths) differs by the kernels.
KERNELS = {
    "parallel": ("linear", 1e-4),
    "parallel_vec": ("linear", 1e-4),
    "fanflat": ("line_fanflat", 1e-2),
    "fanflat_vec": ("line_fanflat", 1e-2),
}


@pytest.fixture
def astra():
    """The ASTRA module; skips only the test that asks for it when ASTRA is absent."""
    return pytest.importorskip("astra")


def astra_dicts(astra, kind: str) -> tuple[dict, dict]:
    """``(proj_geom, vol_geom)`` made by ASTRA's own ``create_proj_geom``/``create_vol_geom``:
    an off-centre grid of 0.5 mm pixels (2D: 48 rows × 64 columns; 3D: 10 slices × 20 × 24)."""
    if kind in TYPES_2D:
        vg = astra.create_vol_geom(48, 64, -40.0, -8.0, -6.0, 18.0)
    else:
        vg = astra.create_vol_geom(20, 24, 10, -4.0, 8.0, -6.0, 4.0, -1.0, 4.0)
    half, full = np.linspace(0, math.pi, 40, endpoint=False), np.linspace(0.1, 6.2, 45)
    if kind == "parallel":
        return astra.create_proj_geom("parallel", 0.5, 192, half), vg
    if kind == "fanflat":
        return astra.create_proj_geom("fanflat", 1.0, 192, full, 150.0, 100.0), vg
    if kind == "parallel_vec":
        a = np.linspace(0.2, 3.0, 37)
        s, c, z = np.sin(a), np.cos(a), np.zeros_like(a)
        vec = np.stack([s, -c, z + 0.7, z - 0.3, 0.55 * c, 0.55 * s], axis=1)
        return astra.create_proj_geom("parallel_vec", 192, vec), vg
    if kind == "fanflat_vec":
        fan = astra.create_proj_geom("fanflat", 1.1, 180, full, 140.0, 90.0)
        vec = astra.geom_2vec(fan)["Vectors"]
        vec[:, 2:4] += 0.3 * vec[:, 4:6]  # the detector shifted by 0.3 of a bin
        return astra.create_proj_geom("fanflat_vec", 180, vec), vg
    if kind == "parallel3d":
        return astra.create_proj_geom("parallel3d", 0.8, 1.2, 14, 30, half[:9]), vg
    if kind == "cone":
        return astra.create_proj_geom("cone", 0.9, 1.3, 16, 28, full[:11], 60.0, 30.0), vg
    base = {"parallel3d_vec": "parallel3d", "cone_vec": "cone"}[kind]
    vec = astra.geom_2vec(astra_dicts(astra, base)[0])["Vectors"]
    vec[:, 9:12] = [0.1, 0.0, 1.1]  # a tilted detector row axis
    return astra.create_proj_geom(kind, 16, 28, vec), vg


def blobs(shape: tuple[int, int]) -> np.ndarray:
    """A smooth, asymmetric phantom: three Gaussian blobs, (H, W) float64."""
    r, c = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    img = np.zeros(shape)
    for r0, c0, sigma, amp in ((12, 20, 4.0, 1.0), (30, 45, 6.0, 0.6), (35, 12, 3.0, 0.8)):
        img += amp * np.exp(-((r - r0) ** 2 + (c - c0) ** 2) / (2 * sigma**2))
    return img


def astra_cpu(astra, kernel: str, pg: dict, vg: dict, img: np.ndarray) -> tuple:
    """ASTRA's CPU ``(sinogram of img, backprojection of that sinogram)``, float32."""
    pid = astra.create_projector(kernel, pg, vg)
    try:
        sid, sino = astra.create_sino(img, pid)
        bid, bp = astra.create_backprojection(sino, pid)
        astra.data2d.delete([sid, bid])
    finally:
        astra.projector.delete(pid)
    return sino, bp


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("kind", TYPES_2D)
def test_operator_from_astra_dicts_projects_like_astra_cpu(kind, astra):
    pg, vg = astra_dicts(astra, kind)
    kernel, bound = KERNELS[kind]
    img = blobs((48, 64))
    theirs, _ = astra_cpu(astra, kernel, pg, vg, img)
    A = ops.Operator(*ops.from_astra(pg, vg))
    ours = A(torch.tensor(img)).numpy()
    shifted = A(torch.tensor(np.roll(img, 1, axis=1))).numpy()  # one pixel off: must fail
    assert rel(ours, theirs) <= bound < rel(shifted, theirs)


@pytest.mark.parametrize("kind", TYPES_2D + TYPES_3D)
def test_astra_dict_round_trips_through_from_astra(kind, astra):
    pg, vg = astra_dicts(astra, kind)
    vol, proj = ops.from_astra(pg, vg)
    for theirs, back in ((pg, proj.to_astra()), (vg, vol.to_astra())):
        assert back.keys() == theirs.keys()
        for key, value in theirs.items():
            if isinstance(value, dict):
                assert back[key] == pytest.approx(value, rel=1e-12)
            elif isinstance(value, str):
                assert back[key] == value
            else:
                np.testing.assert_allclose(back[key], value, rtol=1e-12)
    assert tuple(ops.from_astra(proj.to_astra(), vol.to_astra())) == (vol, proj)


@pytest.mark.parametrize("kind", ("parallel", "fanflat", "parallel3d", "cone"))
def test_from_astra_vectors_equal_astra_geom_2vec(kind, astra):
    pg, _ = astra_dicts(astra, kind)
    ours = np.asarray(ops.from_astra(pg).to_vec().vectors)
    np.testing.assert_allclose(ours, astra.geom_2vec(pg)["Vectors"], atol=1e-12)


def test_from_astra_volumes_are_astra_windows(astra):
    vol, _ = ops.from_astra(*astra_dicts(astra, "parallel"))
    assert (vol.shape, vol.spacing, vol.center) == ((48, 64), (0.5, 0.5), (6.0, -24.0))
    vol, proj = ops.from_astra(*astra_dicts(astra, "cone"))
    assert (vol.shape, vol.spacing, vol.center) == ((10, 20, 24), (0.5, 0.5, 0.5), (1.5, -1, 2))
    # No ASTRA 3D call here: without a GPU it kills the process. Shapes in ASTRA's layout.
    A = ops.Operator(vol, proj)
    assert (A.domain_shape, A.range_shape) == ((10, 20, 24), (16, 11, 28))


@pytest.mark.parametrize(
    "proj_geom, vol_geom, message",
    [
        ({"type": "cyl_cone_vec", "Vectors": np.zeros((1, 12))}, None, "'cyl_cone_vec' is not"),
        ({"type": "sparse_matrix"}, None, "not supported; expected one of parallel"),
        ("parallel", None, "None is not supported"),
        (
            {"type": "parallel", "DetectorWidth": 1.0, "ProjectionAngles": [0.0]},
            None,
            "lacks 'DetectorCount'",
        ),
        ({"type": "cone_vec", "Vectors": np.zeros((1, 12))}, None, "lacks 'DetectorRowCount'"),
        (
            {"type": "parallel_vec", "Vectors": np.zeros((3, 5)), "DetectorCount": 4},
            None,
            r"\(n_angles >= 1, 6\)",
        ),
        (ops.parallel(3, 8).to_astra(), {"GridRowCount": 4, "GridColCount": 4}, "'option'"),
        (
            ops.parallel(3, 8).to_astra(),
            {**ops.volume((4, 4)).to_astra(), "GridColCount": -4},
            "shape",
        ),
    ],
)
def test_from_astra_bad_dicts_raise_one_clear_error(proj_geom, vol_geom, message):
    with pytest.raises(ValueError, match=message):
        ops.from_astra(proj_geom, vol_geom)


def test_deepinv_maps_are_the_operator_and_its_exact_adjoint(astra):
    """Without deepinv: the adapter's A / A_adjoint on deepinv's (B, C, H, W) layout equal
    ASTRA's CPU `linear` FP and BP, and are exact adjoints of each other (float64)."""
    pg, vg = astra_dicts(astra, "parallel")
    img = blobs((48, 64))
    sino, bp = astra_cpu(astra, "linear", pg, vg, img)
    forward, adjoint = deepinv_maps(ops.Operator(*ops.from_astra(pg, vg)))
    x = torch.tensor(img).expand(2, 1, 48, 64)
    y = forward(x, theta=None)  # deepinv passes its physics parameters as keywords
    assert y.shape == (2, 1, 40, 192) and rel(y[1, 0].numpy(), sino) <= 1e-4
    assert rel(adjoint(torch.tensor(sino)[None, None].double())[0, 0].numpy(), bp) <= 1e-4
    u, v = torch.rand(2, 1, 48, 64, dtype=torch.float64), torch.rand_like(y)
    assert abs((forward(u) * v).sum() - (u * adjoint(v)).sum()) <= 1e-12 * (forward(u) * v).sum()


def _deepinv():
    try:
        import deepinv
    except ImportError as e:  # e.g. absent, or its torchvision absent (PyPI's is a CUDA build)
        pytest.skip(f"deepinv cannot be imported here: {e}")
    return deepinv


def test_to_deepinv_is_a_linear_physics_matching_astra(astra):
    dinv = _deepinv()
    pg, vg = astra_dicts(astra, "parallel")
    img = blobs((48, 64))
    sino, bp = astra_cpu(astra, "linear", pg, vg, img)
    physics = to_deepinv(ops.Operator(*ops.from_astra(pg, vg)))
    assert isinstance(physics, dinv.physics.LinearPhysics)
    x = torch.tensor(img)[None, None]
    assert rel(physics(x)[0, 0].numpy(), sino) <= 1e-4
    assert rel(physics.A_adjoint(torch.tensor(sino)[None, None].double())[0, 0].numpy(), bp) <= 1e-4
    assert physics.adjointness_test(x).abs() <= 1e-10


def test_to_deepinv_without_deepinv_says_how_to_install():
    try:
        import deepinv  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"to_deepinv needs deepinv \(pip install deepinv\)"):
            to_deepinv(ops.Operator(*ops.svct(2, 8)))
    else:
        pytest.skip(
            "deepinv is importable here: test_to_deepinv_is_a_linear_physics_matching_astra"
        )
