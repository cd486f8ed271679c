"""Posterior sampler and data consistency: oracle priors, CG/ADMM references, seeds, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import operators as ops
from ctblend.diffusion import VPSchedule
from ctblend.pipeline import limited_angle, method_config, reconstruct
from ctblend.priors.base import InferenceOptions
from ctblend.priors.blend import BlendPrior
from ctblend.priors.blendpp import BlendPPPrior
from ctblend.priors.slice2d import Slice2DPrior
from ctblend.sampling import (
    ADMMTVz,
    CGConsistency,
    NoiseAwareConsistency,
    diff_z,
    diff_z_adjoint,
    posterior_sample,
)

SCHEDULE = VPSchedule()


class OracleNet(nn.Module):
    """Returns the exact ε of the known volume ``x0`` for whatever slices it is given.

    Each input channel is an exact copy of one slice of the current ``x_t`` (set by
    ``OraclePrior``), so the slice index is found by equality; ε then follows from x0 and x_t.
    A wrong group/slice bookkeeping in the prior puts the wrong ε on a slice.
    """

    def __init__(self, x0_prior: torch.Tensor, outputs: str):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.x0 = x0_prior.float()
        self.outputs = outputs  # "all" channels or the "middle" one
        self.x_t: torch.Tensor | None = None

    def forward(self, x, t, gap):
        slices = self.x_t.float().flatten(1)
        out = torch.empty_like(x)
        for n in range(x.shape[0]):
            for c in range(x.shape[1]):
                z = int(torch.nonzero((slices == x[n, c].flatten()).all(dim=1))[0])
                out[n, c] = SCHEDULE.eps_from_x0(self.x_t[z].float(), self.x0[z], int(t[n]))
        return out if self.outputs == "all" else out[:, 1:2]


class OraclePrior:
    """Wraps a real VolumePrior so its oracle network sees the current x_t."""

    def __init__(self, prior, net: OracleNet):
        self.prior, self.net = prior, net
        self.kind, self.image_size, self.schedule = prior.kind, prior.image_size, prior.schedule

    def eps(self, x_t, t, step, generator=None):
        self.net.x_t = x_t
        return self.prior.eps(x_t, t, step, generator)

    def with_policy(self, policy):
        return OraclePrior(self.prior.with_policy(policy), self.net)


def _volume(z=11, n=16, seed=3):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(z, n, n, generator=g)
    return torch.nn.functional.avg_pool2d(base[:, None], 3, 1, 1)[:, 0] * 0.8 + 0.1


def _oracle(kind: str, x0_unit: torch.Tensor):
    opts = InferenceOptions(group_batch=4)
    n = x0_unit.shape[-1]
    x0_prior = 2 * x0_unit - 1
    if kind == "blend++":
        net = OracleNet(x0_prior, "all")
        return OraclePrior(BlendPPPrior(net, n, SCHEDULE, options=opts), net)
    if kind == "blend":
        net = OracleNet(x0_prior, "middle")
        return OraclePrior(BlendPrior(net, n, SCHEDULE, opts), net)
    net = OracleNet(x0_prior, "all")
    return OraclePrior(Slice2DPrior(net, n, SCHEDULE, opts), net)


def _with_eps_changed(prior, change):
    """A prior whose ε is ``change(ε, step)`` of ``prior``'s (to make oracle tests fail)."""

    class Changed:
        kind, image_size, schedule = prior.kind, prior.image_size, prior.schedule

        def eps(self, x_t, t, step, generator=None):
            return change(prior.eps(x_t, t, step, generator), step)

    return Changed()


@pytest.mark.parametrize(
    "method, kind, extra",
    [
        ("diffusionblend++", "blend++", {}),
        ("diffusionblend++", "blend++", {"partition": "fixed"}),
        ("diffusionblend", "blend", {}),
        ("dds2d", "slice2d", {}),
        ("dds", "slice2d", {"lam": 0.0, "rho": 0.0}),  # TV off: x0 is then a fixed point
        ("diffusionblend++", "blend++", {"consistency": "admm-tvz", "lam": 0.0, "rho": 0.0}),
        ("diffusionblend++", "blend++", {"eps_from": "x0"}),
        ("dds", "slice2d", {"lam": 0.0, "rho": 0.0, "eps_from": "x0"}),
    ],
)
def test_oracle_prior_returns_the_known_volume(method, kind, extra):
    x0 = _volume()
    A = ops.Operator(ops.volume(tuple(x0.shape)), ops.parallel(6, 24))
    y = A(x0)
    x, record = reconstruct(method, y, A, _oracle(kind, x0), nfe=8, **extra)
    assert record["nfe"] == 8
    assert torch.max(torch.abs(x - x0)) <= 1e-5


def test_oracle_detects_wrong_blending():
    """The oracle test can fail: a prior that shifts ε by one slice does not return x0."""
    x0 = _volume()
    A = ops.Operator(ops.volume(tuple(x0.shape)), ops.parallel(6, 24))
    shifted = _with_eps_changed(
        _oracle("slice2d", x0), lambda eps, step: torch.roll(eps, 1, dims=0)
    )
    x, _ = reconstruct("dds2d", A(x0), A, shifted, nfe=4)
    assert torch.max(torch.abs(x - x0)) > 1e-2


def test_same_seed_same_volume_different_seed_different_volume():
    x0 = _volume(z=6, n=12)
    A = ops.Operator(ops.volume(tuple(x0.shape)), ops.parallel(4, 18))

    class Shrink:  # a simple non-oracle prior: ε = x_t scaled (deterministic given x_t)
        kind, image_size, schedule = "slice2d", 12, SCHEDULE

        def eps(self, x_t, t, step, generator=None):
            return 0.5 * x_t

    a, _ = reconstruct("dds2d", A(x0), A, Shrink(), nfe=5, seed=1)
    b, _ = reconstruct("dds2d", A(x0), A, Shrink(), nfe=5, seed=1)
    c, _ = reconstruct("dds2d", A(x0), A, Shrink(), nfe=5, seed=2)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_diff_z_is_non_circular_and_adjoint():
    x = torch.zeros(4, 2, 2)
    x[0], x[-1] = 1.0, 5.0  # distinct first and last slices: a wrap-around would see 5 − 1
    d = diff_z(x)
    assert d.shape == (3, 2, 2)
    assert torch.equal(d[:, 0, 0], torch.tensor([-1.0, 0.0, 5.0]))
    u, v = torch.randn(5, 3, 3, dtype=torch.float64), torch.randn(4, 3, 3, dtype=torch.float64)
    assert torch.sum(diff_z(u) * v) == pytest.approx(float(torch.sum(u * diff_z_adjoint(v))))


def test_cg_consistency_lowers_the_residual_from_the_warm_start():
    x_true = _volume(z=4, n=16)
    A = ops.Operator(ops.volume(tuple(x_true.shape)), ops.parallel(5, 24))
    y = A(x_true)
    start = torch.full_like(x_true, 0.5)
    for per_slice in (False, True):
        x = CGConsistency(iterations=5, per_slice=per_slice)(start, A, y)
        assert torch.linalg.vector_norm(A(x) - y) < 0.5 * torch.linalg.vector_norm(A(start) - y)


def test_admm_tv_z_converges_to_the_tv_solution():
    """ADMM-TV-z on a tiny problem ½‖Ax − y‖² + λ‖D_z x‖₁ against two independent references:
    (1) the optimality certificate (KKT) — with g = Aᵀ(Ax − y), s = cumsum_z(g) must satisfy
    Σ_z g = 0, |s| ≤ λ and s = λ·sign(D_z x) where D_z x ≠ 0; (2) the objective reached by many
    iterations of a different method (Chambolle–Pock PDHG), which ADMM must match or beat."""
    torch.manual_seed(0)
    z, n, lam = 4, 5, 0.5
    A = ops.Operator(ops.volume((z, n, n)), ops.parallel(3, 8))
    y = A(torch.rand(z, n, n, dtype=torch.float64)) + 0.05 * torch.randn(
        A.range_shape, dtype=torch.float64
    )

    def objective(x):
        return 0.5 * float(((A(x) - y) ** 2).sum()) + lam * float(diff_z(x).abs().sum())

    admm = ADMMTVz(rho=1.0, lam=lam, iterations=30, admm_iterations=1, persistent=True)
    x = torch.zeros(z, n, n, dtype=torch.float64)
    for _ in range(400):
        x = admm(x, A, y)
    g = A.T(A(x) - y)
    s = torch.cumsum(g, dim=0)
    assert float(s[-1].abs().max()) < 1e-6  # Σ_z g = 0
    s = s[:-1]
    assert float(s.abs().max()) <= lam + 1e-6
    jump = diff_z(x).abs() > 1e-6
    assert jump.any() and (~jump).any()  # both branches of the subgradient are exercised
    torch.testing.assert_close(s[jump], lam * torch.sign(diff_z(x)[jump]), atol=1e-6, rtol=0)

    norm = float(np.sqrt(A.norm(iterations=100) ** 2 + 4))
    tau = sigma = 0.99 / norm
    xp = torch.zeros_like(x)
    xb, p, q = xp.clone(), torch.zeros_like(y), torch.zeros(z - 1, n, n, dtype=torch.float64)
    for _ in range(5000):
        p = (p + sigma * (A(xb) - y)) / (1 + sigma)
        q = (q + sigma * diff_z(xb)).clamp(-lam, lam)
        x_new = xp - tau * (A.T(p) + diff_z_adjoint(q))
        xb, xp = 2 * x_new - xp, x_new
    assert objective(x) <= objective(xp) + 1e-9
    assert objective(x) >= objective(xp) - 1e-2  # same problem: PDHG is close behind
    # The default (restarted) mode runs the same ADMM inside one call: same solution.
    restarted = ADMMTVz(rho=1.0, lam=lam, iterations=30, admm_iterations=400)
    assert objective(restarted(torch.zeros_like(x), A, y)) <= objective(xp) + 1e-9


def test_admm_state_starts_at_zero_and_reset_forgets_it():
    """The split variable starts at z = 0 (as in the DDS code), so the first pass pulls the slice
    differences of a noisy estimate toward zero instead of keeping them; reset() starts over."""
    x_true = _volume(z=8, n=12)
    A = ops.Operator(ops.volume(tuple(x_true.shape)), ops.parallel(6, 24))
    y = A(x_true)
    noisy = x_true + 0.3 * torch.randn(x_true.shape, generator=torch.Generator().manual_seed(0))
    admm = ADMMTVz(rho=10.0, lam=0.04, iterations=5, admm_iterations=1, persistent=True)
    first = admm(noisy, A, y)
    plain = CGConsistency(iterations=5)(noisy, A, y)
    assert float(diff_z(first).abs().mean()) < 0.5 * float(diff_z(plain).abs().mean())
    v = diff_z(first)  # w starts at 0: z = soft(D_z x, λ/ρ), w = D_z x − z
    torch.testing.assert_close(admm.z, torch.sign(v) * (v.abs() - 0.004).clamp_min(0))
    torch.testing.assert_close(admm.w, v - admm.z)
    second = admm(noisy, A, y)
    assert float((second - first).abs().max()) > 1e-4  # the state carries over
    admm.reset()
    torch.testing.assert_close(admm(noisy, A, y), first, rtol=0, atol=0)


def test_dds_restarted_admm_survives_a_bad_first_estimate():
    """An oracle prior whose first ε is off (as an undertrained network's at t ≈ T): DDS with the
    per-step ADMM restart still lands near x0 (TV-z bias only). The DDS code's persistent ADMM
    state carries an unclipped first x̂0 (off by ~50 at t ≈ T) through the run and ends far off;
    clipping x̂0 to the data range (the default) bounds what it can carry."""
    x0 = _volume()
    A = ops.Operator(ops.volume(tuple(x0.shape)), ops.parallel(6, 24))
    error = 0.3 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    first_off = _with_eps_changed(
        _oracle("slice2d", x0), lambda eps, step: eps + error if step == 0 else eps
    )
    persistent = {"admm_persistent": True, "admm_iterations": 1}
    for clip_x0 in (True, False):
        restarted, _ = reconstruct("dds", A(x0), A, first_off, nfe=20, clip_x0=clip_x0)
        assert float((restarted - x0).abs().max()) < 0.2
    carried, _ = reconstruct("dds", A(x0), A, first_off, nfe=20, clip_x0=False, **persistent)
    assert float((carried - x0).abs().max()) > 1.0
    clipped, _ = reconstruct("dds", A(x0), A, first_off, nfe=20, **persistent)
    assert float((clipped - x0).abs().max()) < 0.2
    with pytest.raises(ValueError, match="admm_iterations"):
        ADMMTVz(admm_iterations=0)


@pytest.mark.parametrize(
    "angles, limited",
    [
        (np.linspace(0, np.pi, 4, endpoint=False), False),  # svct4: 135° span + 45° = 180°
        (np.linspace(0, np.pi, 8, endpoint=False), False),
        (np.deg2rad(np.arange(90)), True),  # lact90
        (np.linspace(0, 2 * np.pi / 3, 60, endpoint=False), True),
        (np.linspace(0, 2 * np.pi, 8, endpoint=False), False),
        ([0.3], True),
    ],
)
def test_limited_angle_is_coverage_below_180_degrees(angles, limited):
    A = ops.Operator(ops.volume((2, 8, 8)), ops.parallel(list(angles), 16))
    assert limited_angle(A) is limited


@pytest.mark.parametrize(
    "make_y, prior_kind, method, message",
    [
        (lambda A: torch.zeros(3, 4, 24), "blend++", "diffusionblend++", "does not match"),
        (lambda A: torch.full(A.range_shape, float("nan")), "blend++", "diffusionblend++", "NaN"),
        (
            lambda A: torch.zeros(A.range_shape),
            "blend",
            "diffusionblend++",
            "needs a 'blend\\+\\+' prior",
        ),
        (lambda A: torch.zeros(A.range_shape), None, "dds", "needs a trained prior"),
        (lambda A: torch.zeros(A.range_shape), "blend++", "magic", "unknown method"),
    ],
)
def test_bad_input_fails_before_heavy_work(make_y, prior_kind, method, message):
    A = ops.Operator(ops.volume((6, 16, 16)), ops.parallel(6, 24))
    prior = None
    if prior_kind:

        class Bomb:  # any network call would fail loudly
            kind, image_size, schedule = prior_kind, 16, SCHEDULE

            def eps(self, *args, **kwargs):
                raise AssertionError("heavy work started")

        prior = Bomb()
    with pytest.raises(ValueError, match=message):
        reconstruct(method, make_y(A), A, prior)


def test_prior_trained_at_another_size_is_rejected():
    A = ops.Operator(ops.volume((6, 16, 16)), ops.parallel(6, 24))

    class Other:
        kind, image_size, schedule = "blend++", 32, SCHEDULE

    with pytest.raises(ValueError, match="trained at 32"):
        reconstruct("diffusionblend++", torch.zeros(A.range_shape), A, Other())


class ExplodingNet(nn.Module):
    """A network that must not be called: any forward pass fails the test."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, *args, **kwargs):
        raise AssertionError("the network was called before the options were checked")


@pytest.mark.parametrize(
    "method, options, message",
    [
        ("diffusionblend++", {"eta": 1.5}, r"eta=1.5; expected a number in \[0.0, 1.0\]"),
        ("dds", {"eta": -0.5}, r"eta=-0.5; expected a number in \[0.0, 1.0\]"),
        ("diffusionblend++", {"consistency": "noise-aware", "gamma": 0}, "gamma=0; expected"),
        ("dds2d", {"consistency": "noise-aware", "gamma": -1.0}, "gamma=-1.0; expected"),
        ("diffusionblend", {"nfe": 0}, "nfe=0; expected an integer >= 1"),
        ("diffusionblend++", {"nfe": 100000}, r"nfe=100000; expected an integer in \[1, 1000\]"),
        ("dds", {"cg_iters": -1}, "cg_iters=-1"),
        ("dds", {"rho": -1.0}, "rho=-1.0"),
        ("dds", {"lam": -0.1}, "lam=-0.1"),
        ("dds", {"admm_iterations": 0}, "admm_iterations=0"),
        ("diffusionblend++", {"cross_every": 0}, "cross_every=0"),
        ("diffusionblend++", {"consistency": "admm-tvz", "rho": -2.0}, "rho=-2.0"),
    ],
)
def test_every_bound_is_checked_before_the_network_is_called(method, options, message):
    A = ops.Operator(ops.volume((9, 16, 16)), ops.parallel(4, 24))
    kind = {"diffusionblend++": "blend++", "diffusionblend": "blend"}.get(method, "slice2d")
    cls = {"blend++": BlendPPPrior, "blend": BlendPrior, "slice2d": Slice2DPrior}[kind]
    prior = cls(ExplodingNet(), 16, SCHEDULE, options=InferenceOptions(group_batch=4))
    with pytest.raises(ValueError, match=message) as info:
        reconstruct(method, torch.zeros(A.range_shape), A, prior, options)
    assert "\n" not in str(info.value)


def test_posterior_sample_checks_eta_and_eps_from_before_the_network():
    A = ops.Operator(ops.volume((9, 16, 16)), ops.parallel(4, 24))
    prior = BlendPPPrior(ExplodingNet(), 16, SCHEDULE)
    y = torch.zeros(A.range_shape)
    for bad, message in (({"eta": 1.5}, r"eta=1.5"), ({"eps_from": "both"}, "eps_from='both'")):
        with pytest.raises(ValueError, match=message):
            posterior_sample(prior, A, y, CGConsistency(), nfe=4, **bad)
    with pytest.raises(ValueError, match="gamma=0"):
        NoiseAwareConsistency(gamma=0)


def test_dds_is_the_2d_prior_with_admm_tvz_through_the_same_path():
    x0 = _volume(z=9, n=12)
    A = ops.Operator(ops.volume(tuple(x0.shape)), ops.parallel(4, 18))

    class Shrink:  # deterministic given x_t
        kind, image_size, schedule = "slice2d", 12, SCHEDULE

        def eps(self, x_t, t, step, generator=None):
            return 0.5 * x_t

    dds, record = reconstruct("dds", A(x0), A, Shrink(), nfe=6)
    same, _ = reconstruct("dds2d", A(x0), A, Shrink(), nfe=6, consistency="admm-tvz")
    plain, _ = reconstruct("dds2d", A(x0), A, Shrink(), nfe=6)
    assert torch.equal(dds, same) and not torch.allclose(dds, plain)
    assert record["config"]["consistency"] == "admm-tvz" and "gamma" not in record["config"]


def test_admm_tvz_is_the_solver_of_diffusionblendpp_when_asked():
    """DiffusionBlend++ with admm-tvz runs exactly ADMMTVz after each step (same z/w path)."""
    x0 = _volume(z=9, n=12)
    A = ops.Operator(ops.volume(tuple(x0.shape)), ops.parallel(4, 18))
    y = A(x0)
    cfg = method_config("diffusionblend++", {"consistency": "admm-tvz", "nfe": 4})
    assert cfg.consistency == "admm-tvz" and cfg.lam is None
    prior = _oracle("blend++", x0)
    seen = []
    x, _ = reconstruct(
        "diffusionblend++", y, A, prior, cfg, callback=lambda i, t, u: seen.append(u)
    )
    # replay: ADMMTVz (λ = 0.04: sparse view) applied to the sampler's own Tweedie estimates
    admm = ADMMTVz(rho=10.0, lam=0.04, iterations=5, admm_iterations=3)
    x_t = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    t = SCHEDULE.ddim_timesteps(4)[0]  # the first step; later ones add the sampler's noise
    x0_hat = SCHEDULE.tweedie_x0(x_t, SCHEDULE.eps_from_x0(x_t, 2 * x0 - 1, t), t)
    torch.testing.assert_close(seen[0], admm((x0_hat.clamp(-1, 1) + 1) / 2, A, y))
    assert len(seen) == 4 and torch.isfinite(x).all()


def test_eps_from_x0_rederives_eps_from_the_data_consistent_estimate():
    """η = 0, a prior of constant ε: the second step's x_t follows the DDIM formula with the
    network's ε (``network``) or with ε′ = (x_T − √ᾱ_T x̂0′)/√(1 − ᾱ_T) (``x0``)."""
    x_true = _volume(z=4, n=12)
    A = ops.Operator(ops.volume(tuple(x_true.shape)), ops.parallel(5, 18))

    class Constant:  # ε = 0.3 everywhere; records the x_t it is given
        kind, image_size, schedule = "slice2d", 12, SCHEDULE

        def __init__(self):
            self.inputs = []

        def eps(self, x_t, t, step, generator=None):
            self.inputs.append(x_t.clone())
            return torch.full_like(x_t, 0.3)

    for mode in ("network", "x0"):
        prior, dc = Constant(), []

        def record(i, t, u, dc=dc):
            dc.append(2 * u - 1)

        reconstruct(
            "dds2d",
            A(x_true),
            A,
            prior,
            nfe=2,
            eta=0.0,
            eps_from=mode,
            callback=record,
        )
        t0, t1 = SCHEDULE.ddim_timesteps(2)
        a0, a1 = SCHEDULE.alpha_bar(t0), SCHEDULE.alpha_bar(t1)
        x_T = prior.inputs[0]
        eps = torch.full_like(x_T, 0.3)
        if mode == "x0":
            eps = (x_T - a0**0.5 * dc[0]) / (1 - a0) ** 0.5
        expected = a1**0.5 * dc[0] + (1 - a1) ** 0.5 * eps
        torch.testing.assert_close(prior.inputs[1], expected, rtol=1e-5, atol=1e-5)
