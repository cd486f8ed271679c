"""VP schedule against independent numpy values, DDIM timesteps, Tweedie and DDIM steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctblend.diffusion import VPSchedule


def test_alphas_cumprod_matches_numpy_and_ddpm_values():
    s = VPSchedule()
    ref = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))
    np.testing.assert_allclose(s.alphas_cumprod.numpy(), ref, rtol=1e-12)
    # Known DDPM values: ᾱ_0 = 1 − 1e-4, ᾱ_999 ≈ 4.04e-5.
    assert float(s.alpha_bar(0)) == pytest.approx(0.9999)
    assert float(s.alpha_bar(999)) == pytest.approx(4.0358e-05, rel=1e-3)


def test_ddim_timesteps():
    s = VPSchedule()
    assert s.ddim_timesteps(200) == list(range(995, -1, -5))
    assert s.ddim_timesteps(1000) == list(range(999, -1, -1))
    assert s.ddim_timesteps(3) == [666, 333, 0]
    assert s.ddim_timesteps(1) == [0]
    with pytest.raises(ValueError, match="nfe"):
        s.ddim_timesteps(0)


def test_q_sample_and_tweedie_invert_each_other():
    s = VPSchedule()
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64).float()
    t = torch.tensor([0, 10, 500, 999])
    x_t = s.q_sample(x0, t, eps)
    a = torch.from_numpy(np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))[[0, 10, 500, 999]])
    a = a.float().view(4, 1, 1, 1)
    torch.testing.assert_close(x_t, a.sqrt() * x0 + (1 - a).sqrt() * eps)
    torch.testing.assert_close(s.tweedie_x0(x_t, eps, t), x0, atol=2e-4, rtol=0)
    torch.testing.assert_close(s.eps_from_x0(x_t, x0, t), eps, atol=1e-4, rtol=0)


def test_ddim_step_deterministic_lands_on_the_forward_marginal():
    # With the exact x0 and ε, a deterministic step to t' is q_sample(x0, t', ε).
    s = VPSchedule()
    x0, eps = torch.rand(2, 8, 8), torch.randn(2, 8, 8)
    torch.testing.assert_close(s.ddim_step(x0, eps, 300, eta=0.0), s.q_sample(x0, 300, eps))
    assert s.ddim_step(x0, eps, None, eta=0.0) is x0


def test_ddim_step_eta_mixes_noise_reference_formula():
    s = VPSchedule()
    x0, eps, z = torch.rand(8, 8), torch.randn(8, 8), torch.randn(8, 8)
    a = float(np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))[200])
    expected = a**0.5 * x0 + (1 - a) ** 0.5 * (0.85 * z + (1 - 0.85**2) ** 0.5 * eps)
    torch.testing.assert_close(s.ddim_step(x0, eps, 200, eta=0.85, noise=z), expected)
    with pytest.raises(ValueError, match="noise"):
        s.ddim_step(x0, eps, 200, eta=0.5)
    with pytest.raises(ValueError, match="eta"):
        s.ddim_step(x0, eps, 200, eta=1.5, noise=z)


def test_invalid_schedule_and_timesteps():
    with pytest.raises(ValueError, match="beta"):
        VPSchedule(beta_start=0.02, beta_end=1e-4)
    with pytest.raises(ValueError, match="timesteps"):
        VPSchedule().alpha_bar(1000)
