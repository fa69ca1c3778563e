"""Precomputed teacher columns: schema, metadata, validation and collation.

A teacher signal lives next to ``input_ids`` in the same dataset row, one entry per token position
(position i holds the teacher's distribution for token i + 1, exactly where the student's logits are):

* top-k mode: ``teacher_topk_ids`` (seq, k), ``teacher_topk_logprobs`` (seq, k), ``teacher_tail_mass`` (seq,)
* sampled mode: ``teacher_sample_ids`` (seq, distinct), ``teacher_sample_counts`` (seq, distinct),
  ``teacher_entropy`` (seq,)

Ids are uint16. Vocabularies above 65,536 tokens add ``teacher_topk_ids_high`` / ``teacher_sample_ids_high``
(uint8, the bits above 16): 3 bytes per id instead of int32's 4. Collated batches carry whole int32 ids.

The metadata (teacher, tokenizer fingerprint, mode, k / samples, temperature, ...) travels in the dataset's
``info.description`` (kept by ``map``/``filter``/``shuffle``/``save_to_disk``) and in the precompute
directory's ``metadata.json``. Everything here exists so that a capture/training mismatch fails loudly
before training instead of giving a silently wrong loss.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import Tensor

from .column_checks import repeated_id_problem, total_mass_problem

SIGNAL_FORMAT = "hf_distill.teacher_signal.v1"
MODES: tuple[str, ...] = ("topk", "sampled")
TOPK_IDS, TOPK_LOGPROBS, TOPK_TAIL = "teacher_topk_ids", "teacher_topk_logprobs", "teacher_tail_mass"
SAMPLE_IDS, SAMPLE_COUNTS, SAMPLE_ENTROPY = "teacher_sample_ids", "teacher_sample_counts", "teacher_entropy"
TOPK_IDS_HIGH, SAMPLE_IDS_HIGH = "teacher_topk_ids_high", "teacher_sample_ids_high"
# The columns a collated batch carries (whole ids), and the extra stored column for ids above 16 bits.
MODE_COLUMNS: dict[str, tuple[str, str, str]] = {
    "topk": (TOPK_IDS, TOPK_LOGPROBS, TOPK_TAIL),
    "sampled": (SAMPLE_IDS, SAMPLE_COUNTS, SAMPLE_ENTROPY),
}
HIGH_ID_COLUMN = {"topk": TOPK_IDS_HIGH, "sampled": SAMPLE_IDS_HIGH}
SIGNAL_COLUMNS: tuple[str, ...] = MODE_COLUMNS["topk"] + MODE_COLUMNS["sampled"] + (TOPK_IDS_HIGH, SAMPLE_IDS_HIGH)
MAX_VOCAB = 1 << 24  # 3-byte ids
VALUE_DTYPES = ("float16", "bfloat16", "float32")
# Arrow/Parquet have no bfloat16: bf16-rounded values are stored in float32 containers.
_STORAGE_DTYPE = {"float16": np.float16, "bfloat16": np.float32, "float32": np.float32}


_REQUIRED_METADATA = (
    "mode",
    "teacher_name",
    "teacher_revision",
    "tokenizer_hash",
    "vocab_size",
    "temperature",
    "max_length",
)


class TeacherSignalError(ValueError):
    """Precomputed teacher columns do not fit the student, tokenizer, loss settings or themselves."""


@dataclass(frozen=True)
class TeacherSignalMetadata:
    """Everything needed to interpret (and refuse) a precomputed teacher signal."""

    mode: str
    teacher_name: str
    teacher_revision: str | None
    tokenizer_hash: str
    vocab_size: int
    temperature: float
    max_length: int | None
    k: int | None = None
    num_samples: int | None = None
    seed: int | None = None
    value_dtype: str = "float16"
    format: str = SIGNAL_FORMAT

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise TeacherSignalError(f"Unknown teacher-signal mode {self.mode!r}; expected one of {MODES}.")
        if self.mode == "topk" and not (self.k and 1 <= self.k <= self.vocab_size):
            raise TeacherSignalError(f"top-k mode needs 1 <= k <= vocab_size ({self.vocab_size}), got k={self.k}.")
        if self.mode == "sampled" and not (self.num_samples and self.num_samples >= 1):
            raise TeacherSignalError(f"sampled mode needs num_samples >= 1, got {self.num_samples}.")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise TeacherSignalError(f"temperature must be > 0, got {self.temperature}.")
        if not 1 <= self.vocab_size <= MAX_VOCAB:
            raise TeacherSignalError(f"vocab_size must be in [1, {MAX_VOCAB}], got {self.vocab_size}.")
        if self.value_dtype not in VALUE_DTYPES:
            raise TeacherSignalError(f"value_dtype must be one of {VALUE_DTYPES}, got {self.value_dtype!r}.")

    @property
    def split_ids(self) -> bool:
        """Whether ids need a high-byte column (vocabulary above 65,536)."""
        return self.vocab_size > 1 << 16

    @property
    def columns(self) -> tuple[str, ...]:
        """The stored columns (ids, values, per-position, and the high-byte ids when needed)."""
        base = MODE_COLUMNS[self.mode]
        return (*base, HIGH_ID_COLUMN[self.mode]) if self.split_ids else base

    @property
    def batch_columns(self) -> tuple[str, str, str]:
        """The columns of a collated batch (whole ids)."""
        return MODE_COLUMNS[self.mode]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TeacherSignalMetadata:
        if values.get("format") != SIGNAL_FORMAT:
            raise TeacherSignalError(
                f"Not a teacher-signal metadata block (format {values.get('format')!r}, expected {SIGNAL_FORMAT!r})."
            )
        known = {f.name for f in fields(cls)}
        missing = [name for name in _REQUIRED_METADATA if name not in values]
        if missing:
            raise TeacherSignalError(f"Teacher-signal metadata lacks {missing}.")
        return cls(**{key: value for key, value in values.items() if key in known})


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of the token-string -> id mapping: what decides whether stored ids mean the same tokens."""
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()


def split_ids(ids: np.ndarray, vocab_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Low 16 bits as uint16, plus the bits above as uint8 when the vocabulary needs them."""
    ids = np.asarray(ids, dtype=np.int64)
    high = (ids >> 16).astype(np.uint8) if vocab_size > 1 << 16 else None
    return (ids & 0xFFFF).astype(np.uint16), high


def join_ids(low: np.ndarray, high: np.ndarray | None) -> np.ndarray:
    """Whole int32 ids from ``split_ids``'s parts."""
    ids = np.asarray(low).astype(np.int32)
    return ids if high is None else ids | (np.asarray(high).astype(np.int32) << 16)


def count_dtype(num_samples: int) -> np.dtype:
    return np.dtype(np.uint8) if num_samples <= 255 else np.dtype(np.uint16)


def value_storage_dtype(value_dtype: str) -> np.dtype:
    return np.dtype(_STORAGE_DTYPE[value_dtype])


# ---- metadata attached to a dataset ----------------------------------------------------------------------


def attach_metadata(dataset: Any, metadata: TeacherSignalMetadata) -> Any:
    """Record the metadata in ``dataset.info.description`` (survives map/filter/shuffle/save_to_disk)."""
    dataset.info.description = json.dumps({"hf_distill_teacher_signal": metadata.to_dict()}, sort_keys=True)
    return dataset


def read_attached_metadata(dataset: Any) -> TeacherSignalMetadata | None:
    """The metadata ``attach_metadata`` stored, or None when the dataset carries none."""
    info = getattr(dataset, "info", None)
    text = getattr(info, "description", None) or ""
    try:
        block = json.loads(text).get("hf_distill_teacher_signal")
    except (ValueError, AttributeError):
        return None
    return None if block is None else TeacherSignalMetadata.from_dict(block)


def signal_columns_present(column_names: Iterable[str]) -> list[str]:
    return [name for name in column_names if name in SIGNAL_COLUMNS]


# ---- validation --------------------------------------------------------------------------------------------


def check_compatible(
    metadata: TeacherSignalMetadata,
    *,
    tokenizer: Any | None = None,
    student_vocab_size: int | None = None,
    temperature: float | None = None,
    divergence: str | None = None,
) -> None:
    """Refuse a signal captured with another tokenizer, a larger vocabulary or another temperature."""
    if tokenizer is not None:
        found = tokenizer_fingerprint(tokenizer)
        if found != metadata.tokenizer_hash:
            raise TeacherSignalError(
                f"The teacher columns were captured with a different tokenizer (teacher {metadata.teacher_name!r}, "
                f"tokenizer hash {metadata.tokenizer_hash[:12]}...) than the student's (hash {found[:12]}...). "
                "Stored token ids would mean other tokens; precompute again with the student's tokenizer."
            )
    if student_vocab_size is not None and student_vocab_size < metadata.vocab_size:
        raise TeacherSignalError(
            f"The teacher columns cover a vocabulary of {metadata.vocab_size} ids but the student has only "
            f"{student_vocab_size} logits; precompute with vocab_size={student_vocab_size}."
        )
    if temperature is not None and not math.isclose(temperature, metadata.temperature, rel_tol=1e-6):
        raise TeacherSignalError(
            f"The teacher columns were captured at temperature {metadata.temperature} but training uses "
            f"temperature {temperature}; stored probabilities cannot be re-tempered. Set temperature="
            f"{metadata.temperature} or precompute again at {temperature}."
        )
    if divergence is not None and divergence != "forward_kl":
        raise TeacherSignalError(
            f"Precomputed teacher columns support divergence='forward_kl' only (top-k and sampled signals "
            f"estimate a forward KL), got {divergence!r}."
        )


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _lengths(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return pc.list_value_length(column).to_numpy(zero_copy_only=False)


def _values(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return array.flatten()


def _check_finite(name: str, values: np.ndarray, offset: int) -> None:
    bad = ~np.isfinite(values.astype(np.float32, copy=False))
    if bad.any():
        raise TeacherSignalError(f"Column {name!r} holds {int(bad.sum())} NaN/Inf values (rows from {offset}).")


def _check_positions(
    ids: np.ndarray,
    widths: np.ndarray,
    values: np.ndarray,
    per_position: np.ndarray,
    metadata: TeacherSignalMetadata,
    seq_lengths: np.ndarray,
    offset: int,
) -> None:
    """Distinct ids at every position, and (top-k) stored probabilities plus tail mass adding up to 1."""
    ids_name, values_name, per_position_name = metadata.batch_columns
    problem = repeated_id_problem(ids, widths, seq_lengths, offset, ids_name)
    if problem is None and metadata.mode == "topk":
        names = (values_name, per_position_name)
        problem = total_mass_problem(values, per_position, metadata.k, metadata.value_dtype, seq_lengths, offset, names)
    if problem is not None:
        raise TeacherSignalError(problem)


def validate_columns(dataset: Any, metadata: TeacherSignalMetadata, batch_size: int = 1024) -> None:
    """Check every row: columns present, aligned with ``input_ids``, right shapes, ranges, finite values."""
    names = list(dataset.column_names)
    missing = [name for name in ("input_ids", *metadata.columns) if name not in names]
    if missing:
        raise TeacherSignalError(
            f"The dataset lacks the columns {missing} needed for {metadata.mode} teacher signals (it has {names}). "
            "Were they dropped by packing, `remove_unused_columns` or a `select_columns`?"
        )
    ids_name, values_name, per_position_name = metadata.batch_columns
    high_name = HIGH_ID_COLUMN[metadata.mode] if metadata.split_ids else None
    offset = 0
    for table in dataset.with_format("arrow").iter(batch_size=batch_size):
        seq = _lengths(table["input_ids"])
        for name in metadata.columns:
            length = _lengths(table[name])
            if not np.array_equal(length, seq):
                row = _first_bad(length != seq)
                raise TeacherSignalError(
                    f"Column {name!r} is misaligned with input_ids in row {offset + row}: {int(length[row])} "
                    f"positions vs {int(seq[row])} tokens. Sequences were changed (truncated, packed, re-tokenized) "
                    "after the teacher ran; precompute with the same max_length as training."
                )
        id_lists, value_lists = _values(table[ids_name]), _values(table[values_name])
        id_width, value_width = _lengths(id_lists), _lengths(value_lists)
        if not np.array_equal(id_width, value_width):
            raise TeacherSignalError(f"{ids_name!r} and {values_name!r} differ in width at some positions.")
        if metadata.mode == "topk" and not (id_width == metadata.k).all():
            raise TeacherSignalError(
                f"{ids_name!r} has {int(id_width[_first_bad(id_width != metadata.k)])} entries at a position; "
                f"the metadata says k={metadata.k}."
            )
        high = None
        if high_name is not None:
            high_lists = _values(table[high_name])
            if not np.array_equal(_lengths(high_lists), id_width):
                raise TeacherSignalError(f"{high_name!r} and {ids_name!r} differ in width at some positions.")
            high = high_lists.flatten().to_numpy(zero_copy_only=False)
        ids = join_ids(id_lists.flatten().to_numpy(zero_copy_only=False), high)
        if ids.size and (ids.min() < 0 or ids.max() >= metadata.vocab_size):
            raise TeacherSignalError(f"{ids_name!r} holds ids outside [0, {metadata.vocab_size}) (rows from {offset}).")
        values = value_lists.flatten().to_numpy(zero_copy_only=False)
        per_position = _values(table[per_position_name]).to_numpy(zero_copy_only=False)
        _check_finite(values_name, values, offset)
        _check_finite(per_position_name, per_position, offset)
        if metadata.mode == "topk":
            if values.size and values.max() > 1e-3:
                raise TeacherSignalError(f"{values_name!r} holds log-probabilities > 0 (rows from {offset}).")
            if per_position.size and (per_position.min() < 0 or per_position.max() > 1):
                raise TeacherSignalError(f"{per_position_name!r} must lie in [0, 1] (rows from {offset}).")
        else:
            if (id_width == 0).any():
                raise TeacherSignalError(f"{ids_name!r} is empty at some position (rows from {offset}).")
            starts = np.concatenate([[0], np.cumsum(id_width)[:-1]]).astype(np.int64)
            totals = np.add.reduceat(values.astype(np.int64), starts) if values.size else np.zeros(0)
            if not (totals == metadata.num_samples).all():
                raise TeacherSignalError(
                    f"{values_name!r} must sum to num_samples={metadata.num_samples} at every position "
                    f"(rows from {offset})."
                )
        _check_positions(ids, id_width, values, per_position, metadata, seq, offset)
        offset += table.num_rows


# ---- collation ---------------------------------------------------------------------------------------------


def _as_array(value: Any, dtype: np.dtype) -> np.ndarray:
    return (
        value.astype(dtype, copy=False)
        if isinstance(value, np.ndarray) and value.dtype != object
        else np.asarray(value, dtype=dtype)
    )


def _ragged_2d(rows: Any, dtype: np.dtype) -> list[np.ndarray]:
    return [_as_array(row, dtype) for row in rows]


def _place(length: int, width: int, padding_side: str) -> slice:
    return slice(0, length) if padding_side == "right" else slice(width - length, width)


class OfflineSignalCollator:
    """Wraps any causal-LM collator and pads the teacher columns to the collated ``input_ids``.

    The wrapped collator never sees the teacher columns. Its output is checked row by row: each
    sequence must appear unchanged (only padded, on either side); truncation, packing or padding-free
    batching would misalign the teacher signal, so they raise instead.
    """

    def __init__(self, collator: Callable[[list[dict[str, Any]]], dict[str, Any]], metadata: TeacherSignalMetadata):
        self.collator = collator
        self.metadata = metadata

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        absent = [name for name in self.metadata.columns if name not in features[0]]
        if absent:
            raise TeacherSignalError(
                f"Batch examples lack the teacher columns {absent}; were they removed by `remove_unused_columns`?"
            )
        stripped = [{k: v for k, v in feature.items() if k not in SIGNAL_COLUMNS} for feature in features]
        batch = self.collator(stripped)
        input_ids = batch["input_ids"]
        width = input_ids.shape[1]
        sides = [self._padding_side(input_ids[row], feature["input_ids"]) for row, feature in enumerate(features)]
        if self.metadata.mode == "topk":
            batch.update(self._topk(features, sides, width))
        else:
            batch.update(self._sampled(features, sides, width))
        return batch

    @staticmethod
    def _padding_side(collated: Tensor, original: Any) -> str:
        original = torch.as_tensor(np.asarray(original, dtype=np.int64))
        n, width = original.numel(), collated.numel()
        if n <= width and torch.equal(collated[:n].long(), original):
            return "right"
        if n <= width and torch.equal(collated[width - n :].long(), original):
            return "left"
        raise TeacherSignalError(
            "The data collator changed a sequence beyond padding (truncation, packing or padding-free batching); "
            "the precomputed teacher columns would no longer line up with the tokens. Disable those, or "
            "precompute with the same max_length as training."
        )

    def _topk(self, features: list[dict[str, Any]], sides: list[str], width: int) -> dict[str, Tensor]:
        k = self.metadata.k
        ids = np.zeros((len(features), width, k), dtype=np.int32)
        logprobs = np.zeros((len(features), width, k), dtype=np.float32)
        tail = np.zeros((len(features), width), dtype=np.float32)
        for row, feature in enumerate(features):
            row_ids = _stack(feature[TOPK_IDS], np.int32, k)
            if self.metadata.split_ids:
                row_ids = join_ids(row_ids, _stack(feature[TOPK_IDS_HIGH], np.int32, k))
            where = _place(row_ids.shape[0], width, sides[row])
            ids[row, where] = row_ids
            logprobs[row, where] = _stack(feature[TOPK_LOGPROBS], np.float32, k)
            tail[row, where] = _as_array(feature[TOPK_TAIL], np.float32)
        return {
            TOPK_IDS: torch.from_numpy(ids),
            TOPK_LOGPROBS: torch.from_numpy(logprobs),
            TOPK_TAIL: torch.from_numpy(tail),
        }

    def _sampled(self, features: list[dict[str, Any]], sides: list[str], width: int) -> dict[str, Tensor]:
        ids_rows = [_ragged_2d(feature[SAMPLE_IDS], np.int32) for feature in features]
        if self.metadata.split_ids:
            high_rows = [_ragged_2d(feature[SAMPLE_IDS_HIGH], np.int32) for feature in features]
            ids_rows = [[join_ids(lo, hi) for lo, hi in zip(*pair)] for pair in zip(ids_rows, high_rows)]
        count_rows = [_ragged_2d(feature[SAMPLE_COUNTS], np.int32) for feature in features]
        distinct = max((len(position) for row in ids_rows for position in row), default=1)
        ids = np.zeros((len(features), width, distinct), dtype=np.int32)
        counts = np.zeros((len(features), width, distinct), dtype=np.int32)
        entropy = np.zeros((len(features), width), dtype=np.float32)
        for row, feature in enumerate(features):
            where = _place(len(ids_rows[row]), width, sides[row])
            for position, (pos_ids, pos_counts) in enumerate(zip(ids_rows[row], count_rows[row])):
                ids[row, where.start + position, : len(pos_ids)] = pos_ids
                counts[row, where.start + position, : len(pos_counts)] = pos_counts
            entropy[row, where] = _as_array(feature[SAMPLE_ENTROPY], np.float32)
        return {
            SAMPLE_IDS: torch.from_numpy(ids),
            SAMPLE_COUNTS: torch.from_numpy(counts),
            SAMPLE_ENTROPY: torch.from_numpy(entropy),
        }


def _stack(rows: Any, dtype: type, k: int) -> np.ndarray:
    if isinstance(rows, np.ndarray) and rows.dtype != object:
        array = rows.astype(dtype, copy=False)
    else:
        array = np.asarray([np.asarray(r) for r in rows] if len(rows) else np.zeros((0, k)), dtype=dtype)
    if array.ndim != 2 or array.shape[1] != k:
        raise TeacherSignalError(f"A top-k column has shape {array.shape}; expected (positions, {k}).")
    return array
