"""A frozen teacher with another tokenizer: the student batch is re-tokenized for it and aligned by text."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from ...crosstok.distiller import CrossTokenizerDistiller, TeacherView
from ...forward_redirect import call_inside_forward
from ...losses.token_kd import KDLossTerms
from ...modeling import check_context_length, vocab_rows
from ..frozen import materialize_teacher
from .base import Capabilities, TeacherRequest, TeacherSource
from .live import place_teacher
from .registry import register_teacher_source

if TYPE_CHECKING:  # pragma: no cover
    from ...trainers.kd_trainer import KDTrainer


@register_teacher_source
class CrossTokenizerTeacher(TeacherSource):
    """`KDConfig(cross_tokenizer=True)`: ULD plus exact-match KL on text-aligned tokens (docs/cross_tokenizer.md)."""

    kind = "cross_tokenizer"
    priority = 40
    capabilities = Capabilities(same_vocabulary=False, layer_features=False, packed_batches=False)

    @classmethod
    def claims(cls, request: TeacherRequest) -> bool:
        teacher = request.teacher_or_name
        return getattr(request.args, "cross_tokenizer", False) and isinstance(teacher, (str, nn.Module))

    def __init__(self, request: TeacherRequest) -> None:
        super().__init__(request)
        self.model: nn.Module | None = None
        self.distiller: CrossTokenizerDistiller | None = None

    def setup(self, trainer: KDTrainer) -> None:
        args = trainer.args
        model, tokenizer = materialize_teacher(
            self.request.teacher_or_name, args, self.request.teacher_processing_class
        )
        self.distiller = CrossTokenizerDistiller(
            trainer.processing_class,
            tokenizer,
            student_vocab_size=vocab_rows(trainer.accelerator.unwrap_model(trainer.model)),
            teacher_vocab_size=vocab_rows(model),
            spec=args.cross_vocab_spec(),
            alpha=args.alpha,
            teacher_prompt_fn=self.request.teacher_prompt_fn,
        )
        self.model = place_teacher(trainer, model)

    def settings_changed(self, trainer: KDTrainer) -> None:
        # A trial may set the ULD / exact-match weights too; the temperature and alpha follow each step.
        self.distiller.spec = trainer.args.cross_vocab_spec(temperature=trainer.loss_spec.temperature)
        self.distiller.alpha = trainer.loss_spec.alpha

    @property
    def modules(self) -> list[nn.Module]:
        return [self.model] if self.model is not None else []

    def describe(self) -> str:
        name = getattr(getattr(self.model, "config", None), "_name_or_path", "") or type(self.model).__name__
        return f"cross-tokenizer teacher {name}"

    def signal(
        self, trainer: KDTrainer, inputs: dict[str, Any], model_inputs: dict[str, Tensor]
    ) -> tuple[TeacherView, Tensor]:
        """The teacher's own tokenization of the batch, aligned to the student's, and its logits at the rows the
        loss reads."""
        distiller = self.distiller
        spec = trainer.loss_spec  # follows KDConfig.temperature_schedule and the alpha schedule
        if spec.temperature != distiller.spec.temperature:
            distiller.spec = dataclasses.replace(distiller.spec, temperature=spec.temperature)
        distiller.alpha = spec.alpha
        view = distiller.prepare(inputs)
        teacher = trainer.accelerator.unwrap_model(self.model)
        if trainer.args.check_teacher_context:
            check_context_length(teacher, view.teacher_inputs["input_ids"].shape[1])
        return view, distiller.teacher_logits(teacher, view, inputs["input_ids"].device)

    def terms(
        self,
        trainer: KDTrainer,
        model: nn.Module,
        inputs: dict[str, Any],
        model_inputs: dict[str, Tensor],
        signal: tuple[TeacherView, Tensor],
    ) -> KDLossTerms:
        view, teacher_logits = signal
        student_inputs = {k: inputs[k] for k in ("input_ids", "attention_mask") if k in inputs}
        unwrapped = trainer.accelerator.unwrap_model(model)

        def inside() -> tuple[Tensor, ...]:
            student = trainer.student_logit_source(unwrapped, student_inputs)
            return self.distiller.terms(student, teacher_logits, view, inputs["labels"]).as_tuple()

        return KDLossTerms(*call_inside_forward(model, unwrapped, inside))
