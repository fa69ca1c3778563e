"""Precompute a teacher's top-k or sampled next-token signal into dataset columns (resumable).

The `hf-distill precompute` command (also `python scripts/precompute_logits.py`). Example (kill it any time and
run the same command again to resume):

    hf-distill precompute --teacher HuggingFaceTB/SmolLM2-1.7B-Instruct \
        --dataset data/tokenized --out out/teacher_topk --mode topk --k 32 --max-length 1024 --dtype bfloat16

``--dataset`` is a ``save_to_disk`` directory, a .parquet/.jsonl/.json file, or a Hub dataset id (with
``--split``). Rows need ``input_ids``, or a text column (``--text-column``) that is tokenized here.
Train from the result with ``KDTrainer`` (no teacher) on ``load_teacher_signal(out)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..cli_parsing import parse_dataclasses
from .precompute import PrecomputeConfig, precompute_teacher_signal
from .run_arguments import TeacherRunArguments


@dataclass
class PrecomputeRunArguments(TeacherRunArguments):
    """Which teacher and rows to run and where the columns go; ``PrecomputeConfig`` says how they are captured."""

    revision: str | None = field(default=None, metadata={"help": "teacher revision (recorded in the metadata)"})
    tokenizer: str | None = field(default=None, metadata={"help": "tokenizer id/path (default: the teacher's)"})
    gguf_file: str | None = field(default=None, metadata={"help": "load the teacher from this GGUF file in --teacher"})
    text_column: str = field(default="text", metadata={"help": "tokenized when the rows have no input_ids"})
    load_in_4bit: bool = field(default=False, metadata={"help": "NF4-quantize the teacher (bitsandbytes)"})
    device: str | None = field(default=None, metadata={"help": "e.g. cuda:0 (default: cuda if available, else cpu)"})


def parse_args(argv: Sequence[str] | None = None) -> tuple[PrecomputeRunArguments, PrecomputeConfig]:
    """The run arguments and the capture config, from the command line and/or ``--config file.yaml``."""
    return parse_dataclasses((PrecomputeRunArguments, PrecomputeConfig), argv, "hf-distill precompute", __doc__)


def load_rows(args: PrecomputeRunArguments, tokenizer):
    from datasets import Dataset, load_dataset, load_from_disk

    path = Path(args.dataset)
    if path.is_dir():
        dataset = load_from_disk(str(path))
    elif path.suffix == ".parquet":
        dataset = Dataset.from_parquet(str(path))
    elif path.suffix in (".json", ".jsonl"):
        dataset = Dataset.from_json(str(path))
    else:
        dataset = load_dataset(args.dataset, split=args.split)
    if hasattr(dataset, "keys") and args.split in dataset:
        dataset = dataset[args.split]
    if "input_ids" not in dataset.column_names:
        if args.text_column not in dataset.column_names:
            raise SystemExit(f"--dataset has neither input_ids nor {args.text_column!r}: {dataset.column_names}")
        dataset = dataset.map(
            lambda batch: {"input_ids": tokenizer(batch[args.text_column])["input_ids"]},
            batched=True,
            remove_columns=[args.text_column],
            desc="tokenizing",
        )
    return dataset


def main(argv: Sequence[str] | None = None) -> int:
    import torch
    from transformers import AutoTokenizer

    from .frozen import freeze, load_teacher, teacher_load_kwargs

    args, config = parse_args(argv)
    tokenizer_kwargs = {"gguf_file": args.gguf_file} if args.gguf_file and not args.tokenizer else {}
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.teacher, **tokenizer_kwargs)
    load_kwargs = teacher_load_kwargs({}, args.dtype, args.load_in_4bit)
    if args.revision:
        load_kwargs["revision"] = args.revision
    if args.gguf_file:
        load_kwargs["gguf_file"] = args.gguf_file
    teacher = freeze(load_teacher(args.teacher, **load_kwargs))
    if not args.load_in_4bit:
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        teacher.to(device)
    dataset = load_rows(args, tokenizer)
    result = precompute_teacher_signal(
        teacher,
        tokenizer,
        dataset,
        args.out,
        config,
        teacher_name=args.teacher,
        teacher_revision=args.revision,
        progress=args.progress,
    )
    print(f"wrote {len(result)} rows with {config.mode} teacher columns to {os.path.abspath(args.out)}")
    return 0
