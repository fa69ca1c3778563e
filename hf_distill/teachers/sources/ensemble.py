"""Several frozen teachers with the student's tokenizer, their distributions mixed with weights."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from ...losses.teacher_mixture import TeacherMixture, check_mixture_weights
from ...losses.token_kd import LogitSource
from ..frozen import materialize_teacher
from .base import Capabilities, TeacherRequest, TeacherSource
from .live import check_teacher_vocabulary, place_teacher, teacher_logit_source
from .registry import register_teacher_source

if TYPE_CHECKING:  # pragma: no cover
    from ...trainers.kd_trainer import KDTrainer


def _members(request: TeacherRequest) -> list[Any]:
    if isinstance(request.teacher, (list, tuple)):
        return list(request.teacher)
    names = getattr(request.args, "teacher_ensemble", None)
    return list(names) if request.teacher is None and names else []


@register_teacher_source
class TeacherEnsemble(TeacherSource):
    """`teacher_model=[t1, t2, ...]` (models or names) or `KDConfig(teacher_ensemble=[...])`, mixed per
    `teacher_ensemble_weights` and `teacher_ensemble_combine` (see `hf_distill.losses.teacher_mixture`)."""

    kind = "ensemble"
    priority = 20
    capabilities = Capabilities(same_vocabulary=True, layer_features=False, packed_batches=True)

    @classmethod
    def claims(cls, request: TeacherRequest) -> bool:
        return bool(_members(request))

    def __init__(self, request: TeacherRequest) -> None:
        super().__init__(request)
        args = request.args
        if getattr(args, "cross_tokenizer", False):
            raise ValueError(
                "A teacher ensemble mixes distributions over one vocabulary; cross_tokenizer=True is not supported "
                "with it. Use teachers that share the student's tokenizer."
            )
        members = _members(request)
        weights = getattr(args, "teacher_ensemble_weights", None) or [1.0] * len(members)
        if len(weights) != len(members):
            raise ValueError(f"{len(members)} ensemble teachers but {len(weights)} `teacher_ensemble_weights`.")
        check_mixture_weights(weights)
        self.weights = tuple(float(w) for w in weights)
        self.combine: str = getattr(args, "teacher_ensemble_combine", "probability")
        self.members = members
        self.models: list[nn.Module] = []

    def setup(self, trainer: KDTrainer) -> None:
        tokenizers = self.request.teacher_processing_class
        if not isinstance(tokenizers, (list, tuple)):
            tokenizers = [tokenizers] * len(self.members)
        for member, tokenizer in zip(self.members, tokenizers):
            # Each member may arrive loaded (NF4, bf16, ...) or by name (loaded with the config's settings).
            model, tokenizer = materialize_teacher(member, trainer.args, tokenizer, loaded_as_is=True)
            trainer.shared_vocab_size = check_teacher_vocabulary(trainer, model, tokenizer)
            self.models.append(place_teacher(trainer, model))

    @property
    def modules(self) -> list[nn.Module]:
        return list(self.models)

    def describe(self) -> str:
        names = [
            m if isinstance(m, str) else getattr(getattr(m, "config", None), "_name_or_path", "") or type(m).__name__
            for m in self.members
        ]
        return (
            f"ensemble of {len(self.members)} teachers ({', '.join(names)}; weights {list(self.weights)}, "
            f"{self.combine} mixture)"
        )

    def signal(
        self, trainer: KDTrainer, inputs: dict[str, Any], model_inputs: dict[str, Tensor]
    ) -> LogitSource | TeacherMixture:
        sources = [teacher_logit_source(trainer, model, model_inputs) for model in self.models]
        if len(sources) == 1:  # a one-teacher ensemble is that teacher
            return sources[0]
        return TeacherMixture(sources, self.weights, self.combine)
