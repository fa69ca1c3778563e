"""The student's own exponential moving average as its teacher (temporal self-distillation).

Only the trainable parameters get a shadow copy (with a LoRA student: the adapters); frozen weights are shared.
The teacher's forward runs the student's own modules with the shadow values swapped in, in eval mode and without
gradients, then swaps the student's values back. Every process updates its shadow from the same synchronised
parameters, so all processes hold the same EMA; the shadow is saved in checkpoints and restored on resume.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ...losses.token_kd import LogitSource
from .base import Capabilities, TeacherRequest, TeacherSource
from .live import teacher_logit_source
from .registry import register_teacher_source

if TYPE_CHECKING:  # pragma: no cover
    from ...trainers.kd_trainer import KDTrainer

EMA_TEACHER_NAME = "ema"
EMA_STATE_FILE = "ema_teacher.safetensors"


class ExponentialMovingAverage:
    """float32 shadows of a model's trainable parameters, updated as ``shadow += (1 - decay) * (param - shadow)``."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = model
        self.decay = decay
        self.shadow: dict[str, Tensor] = {}

    def trainable(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((name, p) for name, p in self.model.named_parameters() if p.requires_grad)

    @torch.no_grad()
    def copy_from_model(self) -> None:
        self.shadow = {name: p.detach().float().clone() for name, p in self.trainable()}

    @torch.no_grad()
    def update(self) -> None:
        for name, param in self.trainable():
            self.shadow[name].lerp_(param.detach().float(), 1.0 - self.decay)

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The model computes with the shadow values (in eval mode) inside the block."""
        saved: dict[str, Tensor] = {}
        modes = {module: module.training for module in self.model.modules()}
        params = dict(self.trainable())
        try:
            for name, param in params.items():
                saved[name] = param.data
                param.data = self.shadow[name].to(param.dtype)
            self.model.eval()
            yield
        finally:
            for name, data in saved.items():
                params[name].data = data
            for module, training in modes.items():
                module.training = training


@register_teacher_source
class EMATeacher(TeacherSource):
    """`teacher_model="ema"`: the student's EMA (see `KDConfig.ema_decay`, `ema_update_every`, `ema_start_step`)."""

    kind = "ema"
    priority = 10
    capabilities = Capabilities(same_vocabulary=True, layer_features=False, packed_batches=True)

    @classmethod
    def claims(cls, request: TeacherRequest) -> bool:
        return isinstance(request.teacher_or_name, str) and request.teacher_or_name == EMA_TEACHER_NAME

    def __init__(self, request: TeacherRequest) -> None:
        super().__init__(request)
        self.ema: ExponentialMovingAverage | None = None
        self._restored = False

    def setup(self, trainer: KDTrainer) -> None:
        if trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
            raise ValueError(
                "An EMA self-teacher keeps a full copy of the trainable parameters in each process, which FSDP and "
                "DeepSpeed shard. Use DDP (or one process), or a LoRA student under DDP."
            )
        if getattr(trainer.args, "cross_tokenizer", False):
            raise ValueError("cross_tokenizer=True has no meaning with an EMA self-teacher (one tokenizer).")
        self.ema = ExponentialMovingAverage(trainer.accelerator.unwrap_model(trainer.model), trainer.args.ema_decay)

    def describe(self) -> str:
        return f"EMA self-teacher (decay {self.ema.decay if self.ema else '?'})"

    # ---- the step ----------------------------------------------------------------------------------

    def signal(self, trainer: KDTrainer, inputs: dict[str, Any], model_inputs: dict[str, Tensor]) -> LogitSource:
        if not self.ema.shadow:
            self.ema.copy_from_model()
        with self.ema.swapped_in():
            # The head weight in the returned source is the shadow's storage (detached while swapped in).
            return teacher_logit_source(trainer, self.ema.model, model_inputs)

    # ---- hooks ---------------------------------------------------------------------------------------

    def on_train_begin(self, trainer: KDTrainer) -> None:
        # After DDP's broadcast of the initial weights, so every process starts from the same EMA.
        if not self._restored:
            self.ema.copy_from_model()

    def after_optimizer_step(self, trainer: KDTrainer) -> None:
        step, args = trainer.state.global_step, trainer.args
        if step <= args.ema_start_step:
            self.ema.copy_from_model()
        elif (step - args.ema_start_step) % args.ema_update_every == 0:
            self.ema.update()

    def save(self, folder: str) -> None:
        from safetensors.torch import save_file

        os.makedirs(folder, exist_ok=True)
        shadow = {name: tensor.contiguous().cpu() for name, tensor in self.ema.shadow.items()}
        save_file(shadow, os.path.join(folder, EMA_STATE_FILE), metadata={"decay": repr(self.ema.decay)})

    def load(self, folder: str) -> None:
        path = os.path.join(folder, EMA_STATE_FILE)
        if not os.path.isfile(path):
            return
        from safetensors.torch import load_file

        expected = {name for name, _ in self.ema.trainable()}
        shadow = load_file(path)
        if set(shadow) != expected:
            missing, extra = sorted(expected - set(shadow))[:3], sorted(set(shadow) - expected)[:3]
            raise ValueError(
                f"{path} does not match the student's trainable parameters (missing {missing}, unexpected {extra})."
            )
        device = next(p.device for _, p in self.ema.trainable())
        self.ema.shadow = {name: tensor.to(device) for name, tensor in shadow.items()}
        self._restored = True
