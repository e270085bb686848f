"""Encoder and decoder networks: tensors in, tensors out."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
}


def activation(name: str) -> nn.Module:
    key = name.lower().replace("-", "_")
    if key not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[key]()


class MLP(nn.Module):
    """Fully connected network mapping a tensor of shape (..., *in_shape) to (..., *out_shape).

    ``hidden=()`` gives a single linear map (the linear VAE that recovers PPCA).
    """

    def __init__(
        self,
        in_shape: int | Sequence[int],
        out_shape: int | Sequence[int],
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        self.in_shape = _shape(in_shape)
        self.out_shape = _shape(out_shape)
        sizes = [math.prod(self.in_shape), *[int(h) for h in hidden], math.prod(self.out_shape)]
        if any(s < 1 for s in sizes):
            raise ValueError(f"layer sizes must be positive, got {sizes}")
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(n_in, n_out))
            if i < len(sizes) - 2:
                layers.append(globals()["activation"](activation))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[: x.dim() - len(self.in_shape)]
        out = self.net(x.reshape(*batch, -1))
        return out.reshape(*batch, *self.out_shape)


def _shape(s: int | Sequence[int]) -> tuple[int, ...]:
    return (int(s),) if isinstance(s, (int,)) else tuple(int(v) for v in s)
