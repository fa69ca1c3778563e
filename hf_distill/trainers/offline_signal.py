"""`KDTrainer` without a teacher model: the teacher signal comes from precomputed dataset columns.

Kept out of `kd_trainer.py` so the trainer only needs four small hooks:

* ``__init__`` (no teacher): ``self.offline_signal = attach_offline_signal(self)`` - finds the columns and
  their metadata, checks them against the student tokenizer, vocabulary and loss settings, validates every
  row, and wraps the data collator so the columns are padded with ``input_ids``;
* ``teacher_signal``: returns ``self.offline_signal.from_batch(inputs)`` when there is no teacher model;
* ``kd_loss``: routes a ``SparseTeacherSignal`` to ``sparse_kd_loss``;
* ``_set_signature_columns_if_needed``: ``keep_signal_columns`` so ``remove_unused_columns`` keeps them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ..losses.sparse_kd import SparseTeacherSignal, sampled_signal, sparse_kd_loss, topk_signal
from ..losses.token_kd import KDLossSpec, KDLossTerms, LogitSource
from ..teachers.columns import (
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


def _student_vocab_size(model: nn.Module) -> int | None:
    core = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    head = core.get_output_embeddings() if hasattr(core, "get_output_embeddings") else None
    return None if head is None else int(head.weight.shape[0])


def attach_offline_signal(trainer: Any) -> OfflineTeacher | None:
    """Set a teacher-less trainer up to learn from precomputed columns; None if its datasets have none.

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
        student_vocab_size=_student_vocab_size(trainer.accelerator.unwrap_model(trainer.model)),
        temperature=spec.temperature,
        divergence=spec.divergence,
    )
    for dataset, _ in found:
        if hasattr(dataset, "with_format"):
            validate_columns(dataset, metadata)
    trainer.data_collator = OfflineSignalCollator(trainer.data_collator, metadata)
    return OfflineTeacher(metadata)


def keep_signal_columns(signature_columns: list[str] | None) -> list[str]:
    """Signature columns plus the teacher columns, so ``remove_unused_columns`` does not drop them."""
    columns = list(signature_columns or [])
    return columns + [name for name in SIGNAL_COLUMNS if name not in columns]
