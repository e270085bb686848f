"""Encoder and decoder networks: tensors in, tensors out."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .config import ModelSpec, field_default

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
        hidden: Sequence[int] = field_default(ModelSpec, "hidden"),
        activation: str = field_default(ModelSpec, "activation"),
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


def conv_sizes(size: tuple[int, int], n_layers: int) -> list[tuple[int, int]]:
    """Spatial sizes after each stride-2 convolution (kernel 3, padding 1): ceil(s / 2) per step,
    so any size works and none reaches 0."""
    sizes = [tuple(int(s) for s in size)]
    for _ in range(n_layers):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


class ConvEncoder(nn.Module):
    """Images (..., C, H, W) (or flat (..., C*H*W)) -> (..., out_features): a stride-2 3x3
    convolution per entry of ``channels`` (each halves the size, rounding up), then a fully
    connected network with ``hidden`` layers."""

    def __init__(
        self,
        image_shape: Sequence[int],
        out_features: int,
        channels: Sequence[int] = (32, 64),
        hidden: Sequence[int] = (256,),
        activation: str = "relu",
        event_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.image_shape = _image_shape(image_shape)
        # one example as the data hold it: (C, H, W), (H, W) or flat; the dims before it are batch dims
        self.event_shape = tuple(int(s) for s in (event_shape if event_shape is not None else self.image_shape))
        c, h, w = self.image_shape
        layers: list[nn.Module] = []
        for out_c in channels:
            layers += [nn.Conv2d(c, int(out_c), 3, stride=2, padding=1), globals()["activation"](activation)]
            c = int(out_c)
        self.conv = nn.Sequential(*layers)
        fh, fw = conv_sizes((h, w), len(channels))[-1]
        self.head = MLP((c, fh, fw), out_features, hidden, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_event = len(self.event_shape) if tuple(x.shape[x.dim() - len(self.event_shape) :]) == self.event_shape else 1
        batch = x.shape[: x.dim() - n_event]
        h = self.conv(x.reshape(-1, *self.image_shape))
        return self.head(h).reshape(*batch, -1)


class ConvDecoder(nn.Module):
    """z (..., latent_dim) -> (..., *out_shape) with out_shape = (K * C, H, W) (or its flat size):
    the mirror of ``ConvEncoder``. Transposed convolutions double the size and their output
    padding (0 or 1) lands exactly on each size the encoder passed through, so the output is
    H x W for any H, W."""

    def __init__(
        self,
        latent_dim: int,
        image_shape: Sequence[int],
        out_shape: Sequence[int],
        channels: Sequence[int] = (32, 64),
        hidden: Sequence[int] = (256,),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        c, h, w = _image_shape(image_shape)
        self.out_shape = _shape(out_shape)
        out_channels = math.prod(self.out_shape) // (h * w)
        if out_channels * h * w != math.prod(self.out_shape):
            raise ValueError(f"decoder output {self.out_shape} does not fit images of {h}x{w}")
        channels = [int(ch) for ch in channels]
        sizes = conv_sizes((h, w), len(channels))
        self.start = (channels[-1], *sizes[-1]) if channels else (out_channels, h, w)
        self.head = MLP(latent_dim, self.start, hidden, activation)
        layers: list[nn.Module] = []
        for i in range(len(channels) - 1, -1, -1):
            target = sizes[i]
            in_c, out_c = channels[i], channels[i - 1] if i > 0 else channels[0]
            pad = tuple(int(t == 2 * s) for t, s in zip(target, sizes[i + 1]))  # even target: one more row/col
            layers += [
                globals()["activation"](activation),
                nn.ConvTranspose2d(in_c, out_c, 3, stride=2, padding=1, output_padding=pad),
            ]
        if channels:
            layers += [globals()["activation"](activation), nn.Conv2d(channels[0], out_channels, 3, padding=1)]
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[:-1]
        h = self.head(z.reshape(-1, z.shape[-1]))
        out = self.deconv(h)
        return out.reshape(*batch, *self.out_shape)


class MissingAware(nn.Module):
    """Wraps an encoder for data with missing values (NaN): the network sees the values with
    NaN replaced by 0 (a standardised column's training mean) and, beside them, the 0/1 mask
    of which values are missing. ``inner`` takes 2 * D features."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        missing = torch.isnan(x)
        filled = torch.where(missing, torch.zeros((), dtype=x.dtype, device=x.device), x)
        return self.inner(torch.cat([filled, missing.to(x.dtype)], dim=-1))


def _image_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"a convolutional network needs images of shape (C, H, W) or (H, W), got {shape}")
    return shape


class MaskedLinear(nn.Linear):
    """A linear map whose weight is multiplied by a fixed 0/1 mask (rebuilt, not saved)."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """An autoregressive network (Germain et al. 2015) with a context: z (..., D) and h (..., C) ->
    (shift, log_scale), each (..., D), where output unit i depends on z's units before i (in the
    order 1..D, or D..1 with ``reverse``) and on all of h. The output layer starts at zero and
    log_scale is bounded to (-3, 3) by a tanh, so a fresh step is the identity map."""

    def __init__(self, dim: int, context_dim: int, hidden: int = 32, reverse: bool = False) -> None:
        super().__init__()
        degrees = torch.arange(1, dim + 1)
        if reverse:
            degrees = degrees.flip(0)
        hidden_degrees = torch.arange(hidden) % max(1, dim - 1) + 1  # 1 .. D-1
        self.inner = MaskedLinear(hidden_degrees.unsqueeze(1) >= degrees.unsqueeze(0))
        self.context = nn.Linear(context_dim, hidden, bias=False)
        out_degrees = degrees.repeat(2)
        self.out = MaskedLinear(out_degrees.unsqueeze(1) > hidden_degrees.unsqueeze(0))
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.act = nn.ELU()

    def forward(self, z: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift, raw = self.out(self.act(self.inner(z) + self.context(h))).chunk(2, dim=-1)
        return shift, 3 * torch.tanh(raw / 3)


class FirstUnits(nn.Module):
    """Applies ``inner`` to the first ``n`` units of its input: the decoder of the two-layer model,
    which reads z1 of z = (z1, z2)."""

    def __init__(self, inner: nn.Module, n: int) -> None:
        super().__init__()
        self.inner, self.n = inner, int(n)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.inner(z[..., : self.n])
