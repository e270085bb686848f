"""Adam as one fused kernel call per step, with torch.optim.Adam's state_dict format.

``torch.optim.Adam(fused=True)`` runs the same kernel, but constructing the first torch
optimiser imports ``torch._dynamo`` (2-3 s on an idle machine, far more on a busy one: most of
vaekit's first-epoch overhead), and each ``step()`` regroups the tensors by device and dtype in
Python. This class holds the grouped lists once and calls ``torch._fused_adam_`` directly: the
same update (Kingma & Ba 2015, with L2 ``weight_decay`` as in torch's Adam), bit for bit, and the
same checkpoint layout, so a state saved by either loads into the other. ``AdamW`` is the same
with torch's ``_fused_adamw_`` kernel (decoupled weight decay, as torch.optim.AdamW).

``step(found_inf=flag)``: with a 0-d float tensor flag equal to 1 the kernel changes nothing
(weights, moments, step counts), decided on the device, as for GradScaler's skipped steps.
"""

from __future__ import annotations

from typing import Any

import torch


def available(params: list[torch.Tensor], kernel: str = "_fused_adam_") -> bool:
    """The fused kernel (``_fused_adam_`` or ``_fused_adamw_``) exists for these tensors (CPU and
    CUDA float tensors, all on one device)."""
    if not hasattr(torch, kernel) or not params:
        return False
    devices = {p.device for p in params}
    return (
        len(devices) == 1 and next(iter(devices)).type in ("cpu", "cuda") and all(p.is_floating_point() for p in params)
    )


class Adam:
    """Fused Adam over one group of parameters (one device)."""

    _kernel = "_fused_adam_"
    _decoupled = False
    _step_supports_amp_scaling = True  # like torch's fused optimisers: step() honours found_inf

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        self.params = list(params)
        if not available(self.params, self._kernel):
            raise ValueError(
                f"the fused {type(self).__name__} kernel needs floating-point CPU or CUDA parameters on one device"
            )
        self.param_groups = [
            {
                "lr": float(lr),
                "betas": (float(betas[0]), float(betas[1])),
                "eps": float(eps),
                "weight_decay": float(weight_decay),
                "amsgrad": False,
                "maximize": False,
                "foreach": None,
                "capturable": False,
                "differentiable": False,
                "fused": True,
                "decoupled_weight_decay": self._decoupled,
                "params": self.params,
            }
        ]
        device = self.params[0].device
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.steps = [torch.zeros((), dtype=torch.float32, device=device) for _ in self.params]
        self.found_inf: torch.Tensor | None = None  # set by a caller that masks the next step

    @property
    def state(self) -> dict[torch.Tensor, dict[str, torch.Tensor]]:
        return {
            p: {"step": s, "exp_avg": m, "exp_avg_sq": v}
            for p, s, m, v in zip(self.params, self.steps, self.exp_avg, self.exp_avg_sq)
        }

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self, found_inf: torch.Tensor | None = None) -> None:
        found_inf = self.found_inf if found_inf is None else found_inf
        group = self.param_groups[0]
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if len(live) == len(self.params):
            params, grads = self.params, [p.grad for p in self.params]
            m, v, steps = self.exp_avg, self.exp_avg_sq, self.steps
        else:
            params, grads = [self.params[i] for i in live], [self.params[i].grad for i in live]
            m, v, steps = ([t[i] for i in live] for t in (self.exp_avg, self.exp_avg_sq, self.steps))
        if not params:
            return
        torch._foreach_add_(steps, 1)
        beta1, beta2 = group["betas"]
        getattr(torch, self._kernel)(
            params,
            grads,
            m,
            v,
            [],
            steps,
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            amsgrad=False,
            maximize=False,
            grad_scale=None,
            found_inf=found_inf,
        )
        if found_inf is not None:
            torch._foreach_sub_(steps, [found_inf] * len(steps))

    def state_dict(self) -> dict[str, Any]:
        """torch.optim.Adam's layout: per-parameter state by index, then the group's settings."""
        state = {}
        for i, (s, m, v) in enumerate(zip(self.steps, self.exp_avg, self.exp_avg_sq)):
            if float(s) > 0:  # as torch: parameters that never took a step have no state
                state[i] = {"step": s, "exp_avg": m, "exp_avg_sq": v}
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        group["params"] = list(range(len(self.params)))
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        groups = state_dict["param_groups"]
        n = sum(len(g["params"]) for g in groups)
        if len(groups) != 1 or n != len(self.params):
            raise ValueError(
                f"the optimiser state holds {len(groups)} group(s) of {n} parameters; this model has "
                f"one group of {len(self.params)}"
            )
        ids = groups[0]["params"]
        # the moments and step counts only: lr and weight decay stay as constructed, so a resumed run
        # takes the settings it was given (torch's load_state_dict would bring back the saved lr)
        with torch.no_grad():
            for pos, pid in enumerate(ids):
                saved = state_dict["state"].get(pid, state_dict["state"].get(str(pid)))
                if saved is None:
                    continue
                for name, target in (("exp_avg", self.exp_avg[pos]), ("exp_avg_sq", self.exp_avg_sq[pos])):
                    if tuple(saved[name].shape) != tuple(target.shape):
                        raise ValueError(
                            f"the optimiser state's {name} for parameter {pos} has shape "
                            f"{tuple(saved[name].shape)}, the parameter {tuple(target.shape)}"
                        )
                    target.copy_(saved[name])
                self.steps[pos].fill_(float(saved["step"]))


class AdamW(Adam):
    """Fused AdamW (Loshchilov & Hutter 2019): Adam with decoupled weight decay, each step
    multiplying the weights by ``1 - lr * weight_decay`` before the Adam update instead of adding
    ``weight_decay * w`` to the gradient; torch.optim.AdamW's update and state_dict layout."""

    _kernel = "_fused_adamw_"
    _decoupled = True
