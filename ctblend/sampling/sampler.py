"""The generic posterior sampler (Algorithm 1 of the paper in its DDS form).

Per step ``i`` with timestep ``t``: ε = prior.eps(x_t, t, i); x̂0 = Tweedie(x_t, ε), clipped to
the data range [−1, 1] (``clip_x0``, DDPM's ``clip_denoised``); x̂0 ← DC(x̂0) in measurement
units; optionally ε ← (x_t − √ᾱ_t x̂0)/√(1−ᾱ_t) (``eps_from="x0"``);
x_{t'} = √ᾱ_{t'} x̂0 + √(1−ᾱ_{t'}) (η z + √(1−η²) ε).
The last step returns the data-consistent x̂0.

Why the clip matters: data consistency cannot remove what the operator does not see. On a
circular cone beam a constant offset of one off-central slice is almost in A's null space (the
missing cone), so an unclipped early x̂0 (seen at ±9 on a cone beam at t = 999) leaves slice offsets
that CG never removes. The prior works in [−1, 1], the operator in
[0, 1] (x_unit = (x + 1) / 2); both conversions are explicit here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

import operators as ops

from ..diffusion import VPSchedule
from ..priors.base import VolumePrior
from .consistency import DataConsistency

StepCallback = Callable[[int, int, Tensor], None]
"""``callback(step, t, x0_unit)`` after data consistency, x0 in [0, 1] units."""


def to_unit(x: Tensor) -> Tensor:
    """Prior space [−1, 1] → measurement space [0, 1]."""
    return (x + 1) / 2


def to_prior(x: Tensor) -> Tensor:
    """Measurement space [0, 1] → prior space [−1, 1]."""
    return 2 * x - 1


def _batched_eps(
    prior: VolumePrior, x: Tensor, t: int, step: int, generators: Sequence[torch.Generator]
) -> Tensor:
    """ε of K volumes ``x`` (K, Z, H, W), sample k drawing its partition from ``generators[k]``:
    one network pass over all of them where the prior can (``eps_batch``), else one by one."""
    if len(generators) == 1:
        return prior.eps(x[0], t, step, generators[0])[None]
    batch = getattr(prior, "eps_batch", None)
    if batch is not None:
        return batch(x, t, step, generators)
    return torch.stack([prior.eps(x[k], t, step, g) for k, g in enumerate(generators)])


def _noise(shape: Sequence[int], generators: Sequence[torch.Generator], like: Tensor) -> Tensor:
    """(K, *shape) standard normal noise, row k from ``generators[k]``, ``like``'s dtype/device."""
    draws = [
        torch.randn(tuple(shape), generator=g, dtype=torch.float32, device=like.device)
        for g in generators
    ]
    return torch.stack(draws).to(like.dtype)


def posterior_samples(
    prior: VolumePrior,
    A: ops.Operator,
    y: Tensor,
    consistency: DataConsistency,
    *,
    seeds: Sequence[int] = (0,),
    nfe: int = 200,
    eta: float = 0.85,
    schedule: VPSchedule | None = None,
    clip_x0: bool = True,
    eps_from: str = "network",
    callback: StepCallback | None = None,
) -> tuple[Tensor, dict]:
    """K = ``len(seeds)`` independent posterior samples of ``A.domain_shape`` in [0, 1]-units
    from ``y`` (shape ``A.range_shape``), run as one batch: → (K, Z, H, W), not clipped.

    Sample k draws its start, partitions and DDIM noise from ``seeds[k]`` alone, so it equals
    ``posterior_sample(…, seed=seeds[k])`` (up to floating-point batching); data consistency
    treats the samples as independent problems (per-item CG inner products, ADMM state per
    sample). ``nfe`` DDIM steps with stochasticity ``eta`` ∈ [0, 1]; ``clip_x0`` clips each
    Tweedie x̂0 to the prior's data range before data consistency; ``eps_from`` is the ε of
    the DDIM step: ``network`` (the network's, as DDS) or ``x0`` (re-derived from the
    data-consistent x̂0′: ε = (x_t − √ᾱ_t x̂0′)/√(1 − ᾱ_t), as guided-diffusion's
    ``_predict_eps_from_xstart`` and DiffPIR). ``callback(step, t, x0 (K, Z, H, W))``. Bad
    options fail before the first network call.

    Returns the samples and a record with timings and the NFE used.
    """
    schedule = schedule or VPSchedule()
    shape = A.domain_shape
    if len(shape) != 3:
        raise ValueError(f"posterior_sample needs a (Z, H, W) operator domain, got {shape}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"posterior_sample: eta={eta!r}; expected a number in [0, 1]")
    if eps_from not in ("network", "x0"):
        raise ValueError(f"posterior_sample: eps_from={eps_from!r}; expected network or x0")
    if not seeds:
        raise ValueError("posterior_samples: seeds is empty; expected at least one seed")
    timesteps = schedule.ddim_timesteps(nfe)
    generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
    device, dtype = y.device, y.dtype
    # noise drawn where it is used: on a GPU from generators of its own (no host copy per
    # step); on the CPU the partition generators, as before
    noise = generators
    if device.type != "cpu":
        noise = [torch.Generator(device).manual_seed(int(s)) for s in seeds]
    x = _noise(shape, noise, y)
    consistency.reset()
    prior_seconds = dc_seconds = 0.0
    x0 = x
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            start = time.perf_counter()
            eps = _batched_eps(prior, x, t, i, generators).to(dtype)
            prior_seconds += time.perf_counter() - start
            x0_hat = schedule.tweedie_x0(x, eps, t)
            if clip_x0:
                x0_hat = x0_hat.clamp(-1.0, 1.0)
            start = time.perf_counter()
            x0_unit = consistency(to_unit(x0_hat), A, y)
            dc_seconds += time.perf_counter() - start
            if callback is not None:
                callback(i, t, x0_unit)
            if i + 1 == len(timesteps):
                x0 = x0_unit
                break
            if eps_from == "x0":
                eps = schedule.eps_from_x0(x, to_prior(x0_unit), t)
            z = _noise(shape, noise, x) if eta > 0 else None
            x = schedule.ddim_step(to_prior(x0_unit), eps, timesteps[i + 1], eta, z)
    record = {"nfe": len(timesteps), "prior_seconds": prior_seconds, "dc_seconds": dc_seconds}
    return x0, record


def posterior_sample(
    prior: VolumePrior,
    A: ops.Operator,
    y: Tensor,
    consistency: DataConsistency,
    *,
    seed: int = 0,
    callback: StepCallback | None = None,
    **options: Any,
) -> tuple[Tensor, dict]:
    """One posterior sample (Z, H, W) drawn from ``seed``: :func:`posterior_samples` with one
    seed (``options``: its ``nfe``, ``eta``, ``schedule``, ``clip_x0``, ``eps_from``);
    ``callback(step, t, x0 (Z, H, W))``."""
    single = None if callback is None else (lambda i, t, x0: callback(i, t, x0[0]))
    x, record = posterior_samples(
        prior, A, y, consistency, seeds=(seed,), callback=single, **options
    )
    return x[0], record
