"""AdamW with fp32 master weights, for bf16 (or fp16) trainable parameters.

The model computes in bf16, and bf16 keeps 8 bits of mantissa: a step changes a weight only when the
update exceeds half a unit in its last place. At LoRA-A's init scale, one AdamW step at lr 2e-5 (Adam's
first update is ~lr per entry) left half the entries of a bf16 LoRA-A unchanged, and a cosine schedule
spends its last third below that. So the optimizer keeps an fp32 copy (the master) of every trainable
parameter: the bf16 gradients are copied into fp32 gradients of the masters, AdamW steps the masters,
and the masters are copied back, rounded, into the model's bf16 weights. The AdamW state is fp32 too.
Memory: 12 bytes a trainable parameter more than bf16 AdamW (~2 GB for LoRA r64 on the 7B model).

Why not a library: DeepSpeed keeps fp32 masters itself (its ZeRO optimizer; train_lora.py leaves the
optimizer plain there) but only inside its engine; apex's FusedAdam(master_weights=True) is not on PyPI
as a wheel; torch-optimi (Kahan summation) and torchao (stochastic rounding) do something else.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class MasterWeightAdamW(torch.optim.AdamW):
    """torch.optim.AdamW over fp32 masters of the given (low-precision) parameters.

    Its `param_groups` hold the masters, so an LR scheduler built on it sets the rates the step uses.
    `sync_grads()` writes the model's gradients into the masters' fp32 gradients; `step()` does it
    first unless it was done already (clip those gradients in between: `rrg.train.step.clip_gradients`).
    `state_dict()` carries the masters (key "master_weights") beside AdamW's state; loading one copies
    them back into the model's weights, so a resumed run continues from the exact fp32 values.
    """

    def __init__(self, param_groups: Iterable[dict], **kwargs) -> None:
        self.model_params: list[torch.Tensor] = []
        groups = []
        for group in param_groups:
            params = list(group["params"])
            self.model_params += params
            groups.append({**group, "params": [p.detach().to(torch.float32, copy=True) for p in params]})
        super().__init__(groups, **kwargs)
        self.masters: list[torch.Tensor] = [m for g in self.param_groups for m in g["params"]]
        self._grads_synced = False

    @torch.no_grad()
    def sync_grads(self) -> None:
        """The model's gradients, as fp32 gradients of the masters (buffers kept from step to step)."""
        sources, targets = [], []
        for master, param in zip(self.masters, self.model_params):
            if param.grad is None:
                master.grad = None  # AdamW skips it, as it would skip the model's parameter
                continue
            if master.grad is None:
                master.grad = torch.empty_like(master)
            sources.append(param.grad)
            targets.append(master.grad)
        if targets:
            torch._foreach_copy_(targets, sources)
        self._grads_synced = True

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("MasterWeightAdamW.step takes no closure")
        if not self._grads_synced:
            self.sync_grads()
        super().step()
        torch._foreach_copy_(self.model_params, self.masters)  # round to the model's dtype
        self._grads_synced = False

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clears the model's gradients; the masters' fp32 gradient buffers are overwritten by the next sync."""
        for param in self.model_params:
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                param.grad.zero_()
        self._grads_synced = False

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["master_weights"] = list(self.masters)
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        masters = state_dict.pop("master_weights", None)
        if masters is None:
            raise ValueError("optimizer state without master_weights: not a MasterWeightAdamW state")
        shapes = [tuple(m.shape) for m in self.masters]
        if [tuple(m.shape) for m in masters] != shapes:
            raise ValueError("optimizer state: master_weights do not match this model's trainable parameters")
        super().load_state_dict(state_dict)
        with torch.no_grad():
            torch._foreach_copy_(self.masters, [m.to(self.masters[0].device) for m in masters])
            torch._foreach_copy_(self.model_params, self.masters)
