"""Learning-rate schedules over epochs, as small pure functions (no torch.optim.lr_scheduler, whose
import pulls in torch._dynamo).

``lr_at(config, epoch, plateau)`` is the rate for epoch ``epoch`` (0-based) of a run with
``config.epochs`` epochs:

- ``constant``: ``lr``;
- ``cosine``: ``lr_min + (lr - lr_min) * (1 + cos(pi * epoch / epochs)) / 2`` (``lr`` in the first
  epoch, falling towards ``lr_min``; Loshchilov & Hutter 2017 without restarts);
- ``step``: ``lr * lr_factor ** (epoch // lr_step)``;
- ``plateau``: ``max(lr * scale, lr_min)``, where ``scale`` is multiplied by ``lr_factor`` each time
  ``lr_patience`` epochs pass without a validation ELBO above the best so far (``Plateau``).

The plateau tracker's state (best, bad epochs, scale) is a few numbers kept in the trainer state
and its checkpoint, so a resumed run takes the same rates.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Plateau", "lr_at"]


@dataclass
class Plateau:
    """Reduce-on-plateau on the validation ELBO (higher is better)."""

    best: float = -math.inf
    bad: int = 0
    scale: float = 1.0

    def update(self, val_elbo: float, patience: int, factor: float) -> None:
        """Count the epoch just finished; drop the scale after ``patience`` epochs without a better ELBO."""
        if val_elbo > self.best:
            self.best, self.bad = float(val_elbo), 0
            return
        self.bad += 1
        if self.bad >= patience:
            self.scale *= factor
            self.bad = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Plateau:
        if not d:
            return cls()
        if set(d) != {"best", "bad", "scale"}:
            raise ValueError(f"a plateau schedule state holds best, bad and scale, not {sorted(d)}")
        return cls(best=float(d["best"]), bad=int(d["bad"]), scale=float(d["scale"]))


def lr_at(config, epoch: int, plateau: Plateau | None = None) -> float:
    """The learning rate of epoch ``epoch`` (0-based) under ``config.lr_schedule``."""
    lr, kind = float(config.lr), config.lr_schedule
    if kind == "constant":
        return lr
    if kind == "cosine":
        lo = min(float(config.lr_min), lr)
        return lo + (lr - lo) * (1.0 + math.cos(math.pi * epoch / config.epochs)) / 2.0
    if kind == "step":
        return lr * float(config.lr_factor) ** (epoch // int(config.lr_step))
    if kind == "plateau":
        scale = plateau.scale if plateau is not None else 1.0
        return max(lr * scale, min(float(config.lr_min), lr))
    raise ValueError(f"unknown lr_schedule {kind!r}; use constant, cosine, step or plateau")
