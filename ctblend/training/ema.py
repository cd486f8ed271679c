"""Exponential moving average of model weights."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class EMA:
    """Shadow copy of a model's floating-point state, updated after every optimiser step.

    The effective decay warms up as min(decay, (1 + n) / (10 + n)) for the n-th update, so
    early averages are not dominated by the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.num_updates = 0
        self.shadow: dict[str, Tensor] = {
            k: v.detach().clone().float() for k, v in model.state_dict().items()
        }

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.shadow[k].lerp_(v.detach().float(), 1.0 - d)
            else:
                self.shadow[k].copy_(v)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Tensor]:
        return self.shadow

    def load_state_dict(self, shadow: dict[str, Tensor], num_updates: int) -> None:
        missing = set(self.shadow) ^ set(shadow)
        if missing:
            raise ValueError(f"EMA state keys do not match the model: {sorted(missing)[:3]}")
        for k, v in shadow.items():
            self.shadow[k].copy_(v)
        self.num_updates = num_updates
