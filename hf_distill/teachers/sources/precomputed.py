"""Teacher signal precomputed into dataset columns (top-k log-probabilities or samples): no teacher in memory.

The columns are found in the raw datasets, checked against the student's tokenizer, vocabulary and loss
settings, validated row by row, and padded by a wrapper around the data collator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor

from ...losses.sparse_kd import SparseTeacherSignal, sampled_signal, sparse_kd_loss, topk_signal
from ...losses.token_kd import KDLossSpec, KDLossTerms, LogitSource
from ...modeling import vocab_rows
from ..columns import (
    SAMPLE_COUNTS,
    SAMPLE_ENTROPY,
    SAMPLE_IDS,
    SIGNAL_COLUMNS,
    TOPK_IDS,
    TOPK_LOGPROBS,
    TOPK_TAIL,
    OfflineSignalCollator,
    TeacherSignalError,
    TeacherSignalMetadata,
    check_compatible,
    read_attached_metadata,
    signal_columns_present,
    validate_columns,
)
from .base import Capabilities, TeacherRequest, TeacherSource
from .registry import register_teacher_source

if TYPE_CHECKING:  # pragma: no cover
    from ...trainers.kd_trainer import KDTrainer


@dataclass
class OfflineTeacher:
    """Turns collated teacher columns into the loss's ``SparseTeacherSignal``."""

    metadata: TeacherSignalMetadata

    def from_batch(self, inputs: Mapping[str, Tensor]) -> SparseTeacherSignal:
        missing = [name for name in self.metadata.batch_columns if name not in inputs]
        if missing:
            raise TeacherSignalError(
                f"The batch lacks the teacher columns {missing}; KDTrainer has no teacher model to fall back on."
            )
        if self.metadata.mode == "topk":
            return topk_signal(inputs[TOPK_IDS], inputs[TOPK_LOGPROBS], inputs[TOPK_TAIL], self.metadata.temperature)
        return sampled_signal(
            inputs[SAMPLE_IDS], inputs[SAMPLE_COUNTS], inputs[SAMPLE_ENTROPY], self.metadata.temperature
        )

    def loss(self, student: LogitSource, signal: SparseTeacherSignal, targets: Tensor, spec: KDLossSpec) -> KDLossTerms:
        return sparse_kd_loss(student, signal, targets, spec, teacher_vocab_size=self.metadata.vocab_size)


def _datasets(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [item for item in value.values() if item is not None]
    return [value]


def dataset_metadata(dataset: Any) -> TeacherSignalMetadata | None:
    """Metadata of a dataset carrying teacher columns; None without columns; an error if it is missing."""
    names = getattr(dataset, "column_names", None) or []
    present = signal_columns_present(names)
    if not present:
        return None
    metadata = read_attached_metadata(dataset)
    if metadata is None:
        raise TeacherSignalError(
            f"The dataset has teacher columns {present} but no teacher-signal metadata, so temperature, tokenizer "
            "and mode cannot be checked. Load it with `load_teacher_signal(out_dir)`, or call "
            "`attach_metadata(dataset, teacher_signal_metadata(out_dir))`."
        )
    return metadata


def attach_offline_signal(trainer: Any) -> OfflineTeacher | None:
    """Set a trainer up to learn from precomputed columns; None if its datasets have none.

    Uses ``trainer.train_dataset``/``eval_dataset`` (after SFT preparation), ``processing_class``,
    ``model``, ``loss_spec`` and ``data_collator`` (which gets wrapped).
    """
    found = [(ds, dataset_metadata(ds)) for ds in _datasets(trainer.train_dataset) + _datasets(trainer.eval_dataset)]
    found = [(ds, meta) for ds, meta in found if meta is not None]
    if not found:
        return None
    metadata = found[0][1]
    for _, other in found[1:]:
        if other != metadata:
            raise TeacherSignalError("Train and eval datasets carry teacher columns from different captures.")
    check_loss_settings(trainer, metadata)
    for dataset, _ in found:
        if hasattr(dataset, "with_format"):
            validate_columns(dataset, metadata)
    trainer.data_collator = OfflineSignalCollator(trainer.data_collator, metadata)
    return OfflineTeacher(metadata)


def check_loss_settings(trainer: Any, metadata: Any) -> None:
    """The trainer's temperature, its schedule and divergence must suit the columns' capture."""
    spec: KDLossSpec = trainer.loss_spec
    schedule = getattr(trainer.args, "temperature_schedule", "constant")
    end = getattr(trainer.args, "temperature_end", None)
    if schedule != "constant" and end is not None and end != spec.temperature:
        raise TeacherSignalError(
            f"temperature_schedule={schedule!r} changes the temperature during training, but precomputed teacher "
            f"columns hold probabilities at one temperature ({metadata.temperature}). Use a constant temperature."
        )
    check_compatible(
        metadata,
        tokenizer=trainer.processing_class,
        student_vocab_size=vocab_rows(trainer.accelerator.unwrap_model(trainer.model)),
        temperature=spec.temperature,
        divergence=spec.divergence,
    )


def keep_signal_columns(signature_columns: list[str] | None) -> list[str]:
    """Signature columns plus the teacher columns, so ``remove_unused_columns`` does not drop them."""
    columns = list(signature_columns or [])
    return columns + [name for name in SIGNAL_COLUMNS if name not in columns]


@register_teacher_source
class PrecomputedTeacher(TeacherSource):
    """Teacher columns written by `hf-distill precompute`; claimed when no teacher model is given."""

    kind = "precomputed"
    priority = 90
    capabilities = Capabilities(
        same_vocabulary=True, layer_features=False, packed_batches=False, computed_per_batch=False
    )

    @classmethod
    def claims(cls, request: TeacherRequest) -> bool:
        if request.teacher_or_name is not None:
            return False
        return any(
            signal_columns_present(getattr(dataset, "column_names", None) or [])
            for raw in request.datasets
            for dataset in _datasets(raw)
        )

    def __init__(self, request: TeacherRequest) -> None:
        super().__init__(request)
        self.offline: OfflineTeacher | None = None

    def setup(self, trainer: KDTrainer) -> None:
        self.offline = attach_offline_signal(trainer)
        if self.offline is None:
            raise TeacherSignalError(
                "The datasets carried precomputed teacher columns, but they were gone after SFT's dataset "
                "preparation; pass the datasets unchanged (do not drop the teacher columns)."
            )

    def settings_changed(self, trainer: KDTrainer) -> None:
        if self.offline is not None:
            check_loss_settings(trainer, self.offline.metadata)

    def describe(self) -> str:
        meta = self.offline.metadata if self.offline is not None else None
        return "precomputed teacher columns" + (f" ({meta.mode}, from {meta.teacher_name})" if meta is not None else "")

    def signal(self, trainer: KDTrainer, inputs: dict[str, Any], model_inputs: dict[str, Tensor]) -> Any:
        return self.offline.from_batch(inputs)

    def loss(self, student: LogitSource, signal: Any, targets: Tensor, spec: KDLossSpec) -> KDLossTerms:
        return self.offline.loss(student, signal, targets, spec)
