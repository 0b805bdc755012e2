"""Exponential moving average of a network's parameters (fp32 shadow; works on sharded parameters)."""
from __future__ import annotations

import torch

from streamgen.training.distributed import full_tensor


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float, start: int) -> None:
        self.model, self.decay, self.start = model, decay, start
        self.shadow = {n: p.detach().float().clone() for n, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Before ``start`` the shadow tracks the weights (SF starts its EMA at step 200)."""
        for n, p in self.model.named_parameters():
            if step < self.start:
                self.shadow[n].copy_(p.detach().float())
            else:
                self.shadow[n].lerp_(p.detach().float(), 1.0 - self.decay)

    def state(self) -> dict[str, torch.Tensor]:
        """The model's full state dict with the averaged parameters (collective for sharded models)."""
        from streamgen.training.state import model_state

        out = model_state(self.model)
        for n, t in self.shadow.items():
            out[n] = full_tensor(t).to("cpu")  # fp32, so a resumed EMA continues exactly
        return out

    @torch.no_grad()
    def load(self, state: dict[str, torch.Tensor]) -> None:
        for n, t in self.shadow.items():
            src = state[n].float()
            if type(t).__name__ == "DTensor":
                from torch.distributed.tensor import distribute_tensor

                src = distribute_tensor(src.to(t.device), t.device_mesh, t.placements)
            t.copy_(src)
