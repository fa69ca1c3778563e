"""Run a teacher once over a tokenized dataset and store its next-token signal as compact columns.

The expensive teacher forward happens here, on whatever machine holds the teacher; training later reads
the columns with no teacher in memory. Work goes through ``run_sharded``: each shard is written
atomically, so a killed run resumes where it stopped and the result is identical to an uninterrupted run
(batches are formed deterministically inside a shard, and sampling is seeded per row from its tokens).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch import Tensor, nn

from ..losses.settings import require_positive
from ..padding import right_pad
from .columns import (
    MODES,
    SAMPLE_COUNTS,
    SAMPLE_ENTROPY,
    SAMPLE_IDS,
    SAMPLE_IDS_HIGH,
    SIGNAL_COLUMNS,
    TOPK_IDS,
    TOPK_IDS_HIGH,
    TOPK_LOGPROBS,
    TOPK_TAIL,
    VALUE_DTYPES,
    TeacherSignalMetadata,
    attach_metadata,
    count_dtype,
    split_ids,
    tokenizer_fingerprint,
    value_storage_dtype,
)
from .resumable import load_sharded, read_metadata, run_sharded

METADATA_KEY = "teacher_signal"
# Per-token columns cut together with input_ids when max_length truncates a row.
_TOKEN_COLUMNS = ("input_ids", "attention_mask", "labels")


@dataclass(frozen=True)
class PrecomputeConfig:
    """How to capture the teacher signal.

    ``mode`` "topk" keeps the ``k`` most likely tokens plus the tail mass; "sampled" keeps ``num_samples``
    draws from the teacher as distinct ids with counts (24 draws gave 9-11 distinct tokens per position for
    SmolLM2 on code at T = 1; more with higher entropy or temperature). ``temperature`` is the capture
    temperature and must equal the training temperature.
    ``value_dtype`` stores log-probabilities / tail mass / entropy (float16 default; float32 for exactness).
    ``vocab_size`` cuts teacher logits to the first ids (e.g. a student with a smaller padded embedding).
    """

    mode: str = field(
        default="topk",
        metadata={"help": "topk: the k most likely tokens + tail mass; sampled: draws with counts", "choices": MODES},
    )
    k: int = field(default=32, metadata={"help": "tokens kept per position (topk mode)"})
    num_samples: int = field(default=24, metadata={"help": "teacher draws per position (sampled mode)"})
    temperature: float = field(
        default=1.0, metadata={"help": "capture temperature; must equal the training temperature"}
    )
    max_length: int | None = field(
        default=None, metadata={"help": "truncate rows to this many tokens (use training's max_length)"}
    )
    batch_size: int = field(default=8, metadata={"help": "rows per teacher forward"})
    shard_size: int = field(
        default=256, metadata={"help": "rows per written shard (the unit of resumption after a kill)"}
    )
    positions_per_chunk: int = field(
        default=1024, metadata={"help": "token positions turned into top-k/samples at once (bounds memory)"}
    )
    seed: int = field(default=0, metadata={"help": "sampling seed (sampled mode); each row is seeded from it"})
    value_dtype: str = field(
        default="float16",
        metadata={"help": "storage dtype of log-probabilities, tail mass and entropy", "choices": VALUE_DTYPES},
    )
    vocab_size: int | None = field(
        default=None, metadata={"help": "cut teacher logits to the first this-many ids (e.g. a smaller student)"}
    )

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}.")
        if self.value_dtype not in VALUE_DTYPES:
            raise ValueError(f"value_dtype must be one of {VALUE_DTYPES}, got {self.value_dtype!r}.")
        for name in ("k", "num_samples", "batch_size", "shard_size", "positions_per_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.num_samples > 65535:
            raise ValueError("num_samples must be <= 65535 (counts are stored as uint16 at most).")
        require_positive("temperature", self.temperature)


def build_metadata(
    teacher: nn.Module, tokenizer: Any, config: PrecomputeConfig, teacher_name: str | None, revision: str | None
) -> TeacherSignalMetadata:
    """Metadata for this capture; the teacher's logit width sets the vocabulary unless cut by the config."""
    head = teacher.get_output_embeddings()
    vocab = int(head.weight.shape[0]) if config.vocab_size is None else config.vocab_size
    name_config = getattr(teacher, "config", None)
    return TeacherSignalMetadata(
        mode=config.mode,
        teacher_name=teacher_name or str(getattr(name_config, "_name_or_path", "") or "unknown"),
        teacher_revision=revision if revision is not None else getattr(name_config, "_commit_hash", None),
        tokenizer_hash=tokenizer_fingerprint(tokenizer),
        vocab_size=vocab,
        temperature=float(config.temperature),
        max_length=config.max_length,
        k=min(config.k, vocab) if config.mode == "topk" else None,
        num_samples=config.num_samples if config.mode == "sampled" else None,
        seed=config.seed if config.mode == "sampled" else None,
        value_dtype=config.value_dtype,
    )


def _round_values(values: Tensor, value_dtype: str) -> np.ndarray:
    """Float32 -> storage dtype, clamped to the finite range (a log-prob below -65504 is p = 0 anyway)."""
    if value_dtype == "bfloat16":
        values = values.to(torch.bfloat16).float()
    elif value_dtype == "float16":
        finfo = torch.finfo(torch.float16)
        values = values.clamp(finfo.min, finfo.max)
    return values.numpy().astype(value_storage_dtype(value_dtype), copy=False)


def topk_rows(logits: Tensor, meta: TeacherSignalMetadata) -> dict[str, np.ndarray]:
    """Top-k ids, log-probs and exact tail mass for (positions, vocab) teacher logits."""
    log_p = torch.log_softmax(logits.float() / meta.temperature, -1)
    values, ids = log_p.topk(meta.k, dim=-1)
    # Tail mass from a log-sum-exp over the other ids: exact (no 1 - sum cancellation), 0 when k = vocab.
    tail = log_p.scatter(-1, ids, float("-inf")).logsumexp(-1).exp()
    low, high = split_ids(ids.numpy(), meta.vocab_size)
    out = {
        TOPK_IDS: low,
        TOPK_LOGPROBS: _round_values(values, meta.value_dtype),
        TOPK_TAIL: _round_values(tail, meta.value_dtype),
    }
    if high is not None:
        out[TOPK_IDS_HIGH] = high
    return out


def sampled_rows(logits: Tensor, meta: TeacherSignalMetadata, generator: torch.Generator) -> dict[str, Any]:
    """``num_samples`` draws per position, as distinct ids (ascending) with counts, plus the entropy."""
    log_p = torch.log_softmax(logits.float() / meta.temperature, -1)
    probs = log_p.exp()
    draws = torch.multinomial(probs, meta.num_samples, replacement=True, generator=generator)
    counts = torch.zeros_like(probs).scatter_add_(1, draws, torch.ones_like(draws, dtype=probs.dtype))
    entropy = -(probs * log_p).nan_to_num(0.0).sum(-1)
    present = counts > 0
    widths = present.sum(-1).tolist()
    position_ids, token_ids = present.nonzero(as_tuple=True)
    flat_counts = counts[position_ids, token_ids]
    split_at = np.cumsum(widths)[:-1]
    low, high = split_ids(token_ids.numpy(), meta.vocab_size)
    out = {
        SAMPLE_IDS: np.split(low, split_at),
        SAMPLE_COUNTS: np.split(flat_counts.numpy().astype(count_dtype(meta.num_samples)), split_at),
        SAMPLE_ENTROPY: _round_values(entropy, meta.value_dtype),
    }
    if high is not None:
        out[SAMPLE_IDS_HIGH] = np.split(high, split_at)
    return out


def _row_generator(seed: int, tokens: Sequence[int]) -> torch.Generator:
    """A generator seeded by the run seed and the row's tokens: draws do not depend on batching."""
    digest = zlib.crc32(np.asarray(tokens, dtype=np.int64).tobytes())
    return torch.Generator().manual_seed((seed * 1_000_003 + digest) % (2**63))


class _ShardProcessor:
    """``process_fn`` for ``run_sharded``: teacher forward in length-sorted batches, signal per row."""

    def __init__(self, teacher: nn.Module, meta: TeacherSignalMetadata, config: PrecomputeConfig, pad_id: int):
        self.teacher, self.meta, self.config, self.pad_id = teacher, meta, config, pad_id
        self.device = next(teacher.parameters()).device

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        clashing = [name for name in SIGNAL_COLUMNS if name in batch]
        if clashing:
            raise ValueError(f"The input dataset already has teacher columns {clashing}; drop them first.")
        columns = {name: list(values) for name, values in batch.items()}
        limit = self.config.max_length
        if limit is not None:
            for name in _TOKEN_COLUMNS:
                if name in columns:
                    columns[name] = [list(values)[:limit] for values in columns[name]]
        rows = columns["input_ids"]
        if any(len(row) == 0 for row in rows):
            raise ValueError("The dataset has an empty input_ids row; filter it out before precomputing.")
        signal: list[dict[str, Any] | None] = [None] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: (len(rows[i]), i))
        for start in range(0, len(order), self.config.batch_size):
            picked = order[start : start + self.config.batch_size]
            for index, row_signal in zip(picked, self._run_batch([rows[i] for i in picked])):
                signal[index] = row_signal
        for name in self.meta.columns:
            columns[name] = [row_signal[name] for row_signal in signal]
        return columns

    @torch.no_grad()
    def _run_batch(self, rows: list[list[int]]) -> list[dict[str, Any]]:
        input_ids, attention_mask = right_pad(rows, self.pad_id)
        logits = self.teacher(
            input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device), use_cache=False
        ).logits
        vocab = self.meta.vocab_size
        if logits.shape[-1] < vocab:
            raise ValueError(f"The teacher produces {logits.shape[-1]} logits, fewer than vocab_size={vocab}.")
        out = []
        for i, row in enumerate(rows):
            row_logits = logits[i, : len(row), :vocab]
            if not bool(torch.isfinite(row_logits).all()):
                raise ValueError(
                    "The teacher produced NaN/Inf logits (fp16 overflow?); load it in bfloat16 or float32."
                )
            generator = _row_generator(self.meta.seed or 0, row) if self.meta.mode == "sampled" else None
            pieces = []
            for begin in range(0, len(row), self.config.positions_per_chunk):
                chunk = row_logits[begin : begin + self.config.positions_per_chunk].float().cpu()
                pieces.append(
                    topk_rows(chunk, self.meta) if generator is None else sampled_rows(chunk, self.meta, generator)
                )
            out.append(_join(pieces))
        return out


def _join(pieces: list[dict[str, Any]]) -> dict[str, Any]:
    joined = {}
    for name, first in pieces[0].items():
        if isinstance(first, list):
            joined[name] = [item for piece in pieces for item in piece[name]]
        else:
            joined[name] = np.concatenate([piece[name] for piece in pieces])
    return joined


def precompute_teacher_signal(
    teacher: nn.Module,
    tokenizer: Any,
    dataset: Dataset,
    out_dir: str | os.PathLike,
    config: PrecomputeConfig | None = None,
    *,
    teacher_name: str | None = None,
    teacher_revision: str | None = None,
    progress: bool = True,
) -> Dataset:
    """Write the teacher signal for every row of ``dataset`` (needs ``input_ids``) into ``out_dir``.

    Other columns are carried along unchanged (per-token ones truncated with ``input_ids`` when
    ``max_length`` is set). Rerunning into the same directory resumes; different settings are refused.
    Returns the assembled dataset with the metadata attached (see ``load_teacher_signal``).
    """
    config = config or PrecomputeConfig()
    if "input_ids" not in dataset.column_names:
        raise ValueError(f"The dataset needs an input_ids column; it has {dataset.column_names}.")
    meta = build_metadata(teacher, tokenizer, config, teacher_name, teacher_revision)
    pad_id = getattr(tokenizer, "pad_token_id", None)
    pad_id = pad_id if pad_id is not None else 0
    was_training = teacher.training
    teacher.eval()
    try:
        processor = _ShardProcessor(teacher, meta, config, pad_id)
        settings = {"batch_size": config.batch_size, "positions_per_chunk": config.positions_per_chunk}
        run_sharded(
            dataset,
            shard_size=config.shard_size,
            out_dir=out_dir,
            process_fn=processor,
            metadata={METADATA_KEY: meta.to_dict(), "capture_settings": settings},
            progress=progress,
            desc=f"teacher {meta.mode} signal",
        )
    finally:
        teacher.train(was_training)
    return load_teacher_signal(out_dir)


def load_teacher_signal(out_dir: str | os.PathLike) -> Dataset:
    """A finished precompute directory as a dataset with fixed-width top-k columns and metadata attached."""
    meta = TeacherSignalMetadata.from_dict(read_metadata(out_dir)[METADATA_KEY])
    dataset = load_sharded(out_dir)
    if meta.mode == "topk" and len(dataset):
        features = dataset.features.copy()
        for name in (TOPK_IDS, TOPK_LOGPROBS, TOPK_IDS_HIGH) if meta.split_ids else (TOPK_IDS, TOPK_LOGPROBS):
            inner = features[name].feature.feature
            features[name] = type(features[name])(type(features[name].feature)(inner, length=meta.k))
        dataset = dataset.cast(features)
    return attach_metadata(dataset, meta)


def teacher_signal_metadata(out_dir: str | os.PathLike) -> TeacherSignalMetadata:
    """The metadata of a precompute directory."""
    return TeacherSignalMetadata.from_dict(read_metadata(out_dir)[METADATA_KEY])
