"""The seam every kind of teacher plugs into: what it provides, its signal for a batch, and the loss terms.

A trainer's step has one path whatever the teacher is: ``signal = source.signal(...)``, then
``terms = source.terms(...)``. A trainer states what it needs (`TeacherNeeds`); a source states what it provides
(`Capabilities`); `check_compatible` refuses a mismatch at construction, before any data is processed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor, nn

from ...losses.token_kd import KDLossSpec, KDLossTerms, LogitSource, causal_targets, token_kd_loss

if TYPE_CHECKING:  # pragma: no cover
    from ...trainers.kd_trainer import KDTrainer


class TeacherCompatibilityError(ValueError):
    """A trainer, a teacher kind and the settings cannot work together; the message says what to do instead."""


@dataclass(frozen=True)
class Capabilities:
    """What a teacher source can give a trainer."""

    same_vocabulary: bool = True  # logits at the student's token positions over the student's vocabulary
    layer_features: bool = False  # per-layer hidden states and attention maps of one teacher network
    packed_batches: bool = True  # works on packed / padding-free batches
    computed_per_batch: bool = True  # computed for whatever rows arrive (False: stored with the dataset's rows)


@dataclass(frozen=True)
class TeacherNeeds:
    """What a trainer requires of its teacher source."""

    trainer: str
    same_vocabulary: bool = False
    layer_features: bool = False
    teacher_required: bool = True
    builds_own_rows: bool = False  # the trainer makes new rows from the dataset (SeqKD's prompt + completion)


@dataclass
class TeacherRequest:
    """Everything a trainer knows about the teacher before the datasets are prepared."""

    teacher: Any  # a model, a name/path, a list of those (ensemble), "ema", a TeacherSource, or None
    args: Any  # the trainer's KDConfig (or subclass)
    datasets: list[Any] = field(default_factory=list)  # raw train/eval datasets, as the user passed them
    teacher_processing_class: Any = None
    teacher_prompt_fn: Any = None

    @property
    def teacher_or_name(self) -> Any:
        return self.teacher if self.teacher is not None else getattr(self.args, "teacher_model_name_or_path", None)


class TeacherSource:
    """Base of all teacher kinds. Subclasses set `kind`, `capabilities`, and implement `claims` and `signal`.

    Lifecycle: `claims(request)` picks the kind, the constructor takes the request, `setup(trainer)` runs once
    the trainer (accelerator, datasets, collator) exists; then `signal` and `terms` every step, and the hooks
    below around optimizer steps and checkpoints.
    """

    kind: ClassVar[str] = "abstract"
    # Sources are asked in ascending priority; the first that claims a request builds the teacher.
    priority: ClassVar[int] = 100
    capabilities: Capabilities = Capabilities()

    def __init__(self, request: TeacherRequest) -> None:
        self.request = request

    @classmethod
    def claims(cls, request: TeacherRequest) -> bool:
        raise NotImplementedError

    # ---- construction ------------------------------------------------------------------------------

    def setup(self, trainer: KDTrainer) -> None:
        """Load, check and place whatever the source needs, now that the trainer exists."""

    @property
    def modules(self) -> list[nn.Module]:
        """The teacher networks this source runs (empty for precomputed signals and self-teachers)."""
        return []

    def describe(self) -> str:
        """One line for logs and model cards."""
        return self.kind

    # ---- the step ----------------------------------------------------------------------------------

    def signal(self, trainer: KDTrainer, inputs: dict[str, Any], model_inputs: dict[str, Tensor]) -> Any:
        """The teacher's signal for a batch, without gradients."""
        raise NotImplementedError

    def terms(
        self, trainer: KDTrainer, model: nn.Module, inputs: dict[str, Any], model_inputs: dict[str, Tensor], signal: Any
    ) -> KDLossTerms:
        """Student outputs plus the signal as named loss terms (same positions and vocabulary by default)."""
        return trainer.student_terms(model, model_inputs, causal_targets(inputs["labels"]), signal)

    def loss(self, student: LogitSource, signal: Any, targets: Tensor, spec: KDLossSpec) -> KDLossTerms:
        """The token-level loss between the student's logits and this source's signal."""
        return token_kd_loss(student, signal, targets, spec)

    # ---- hooks ---------------------------------------------------------------------------------------

    def on_train_begin(self, trainer: KDTrainer) -> None:
        """Called when training starts (after a checkpoint's state was restored)."""

    def after_optimizer_step(self, trainer: KDTrainer) -> None:
        """Called after every optimizer step (EMA update, a co-trained teacher's step, ...)."""

    def settings_changed(self, trainer: KDTrainer) -> None:
        """Called when the trainer re-read its loss settings from `args` (a search trial set new values):
        follow them, or refuse ones this source cannot serve."""

    def save(self, folder: str) -> None:
        """Write the source's own state (if any) into a checkpoint folder."""

    def load(self, folder: str) -> None:
        """Restore the state `save` wrote; a folder without it leaves the source as it is."""


def check_compatible(source: TeacherSource | None, needs: TeacherNeeds, args: Any) -> None:
    """Refuse, with a message naming both settings and a way out, a trainer/teacher pair that cannot work."""
    if source is None:
        if needs.teacher_required:
            raise TeacherCompatibilityError(
                f"{needs.trainer} has no teacher: pass `teacher_model` (a model, a name/path, a list of them for an "
                "ensemble, or 'ema' for an EMA self-teacher), set `teacher_model_name_or_path`, or train on a "
                "dataset with precomputed teacher columns (`hf-distill precompute`)."
            )
        return
    kind = source.kind
    provided = source.capabilities
    if needs.same_vocabulary and not provided.same_vocabulary:
        raise TeacherCompatibilityError(
            f"{needs.trainer} compares the teacher with the student token by token, which a '{kind}' teacher cannot "
            "do (its tokens and vocabulary differ from the student's). " + _different_tokenizer_hint(needs.trainer)
        )
    if needs.layer_features and not provided.layer_features:
        raise TeacherCompatibilityError(
            f"{needs.trainer} matches per-layer hidden states and attention maps of one teacher network; a '{kind}' "
            "teacher has none to offer. Use a single live teacher model with the same tokenizer, or KDTrainer for "
            "logit distillation from this teacher."
        )
    if needs.builds_own_rows and not provided.computed_per_batch:
        raise TeacherCompatibilityError(
            f"{needs.trainer} builds its own training rows from prompt and completion columns, so a '{kind}' teacher "
            "signal stored per row of the original tokenization cannot follow them. Use KDTrainer on the "
            "precomputed dataset, or give SeqKDTrainer a live teacher model."
        )
    packed = bool(getattr(args, "packing", False)) or bool(getattr(args, "padding_free", False))
    if packed and not provided.packed_batches:
        setting = "packing=True" if getattr(args, "packing", False) else "padding_free=True"
        raise TeacherCompatibilityError(
            f"{setting} cannot be used with a '{kind}' teacher: {_packing_reason(kind)} Set `packing=False` and "
            "`padding_free=False`."
        )


def _different_tokenizer_hint(trainer: str) -> str:
    if trainer == "SeqKDTrainer":
        return (
            "For a teacher with another tokenizer, generate its completions (`hf-distill generate`) and train "
            "SeqKDTrainer on them without `teacher_model` (sequence-level KD needs no shared vocabulary), or use "
            "KDTrainer with `cross_tokenizer=True`."
        )
    return "Use KDTrainer with `cross_tokenizer=True` for logit distillation across tokenizers."


def _packing_reason(kind: str) -> str:
    if kind == "precomputed":
        return "packing re-cuts the rows, so the precomputed per-token teacher columns would no longer line up."
    return "its alignment between the two tokenizations works on whole, padded rows."
