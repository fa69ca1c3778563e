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

import argparse
import os
from pathlib import Path

from .precompute import PrecomputeConfig, precompute_teacher_signal


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="hf-distill precompute", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teacher", required=True, help="Hub id or local directory of the teacher")
    parser.add_argument("--revision", default=None, help="teacher revision (recorded in the metadata)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer id/path (default: the teacher's)")
    parser.add_argument("--gguf-file", default=None, help="load the teacher from this GGUF file in --teacher")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--text-column", default="text", help="tokenized when the rows have no input_ids")
    parser.add_argument("--out", required=True, help="output directory (rerun with the same one to resume)")
    parser.add_argument("--mode", choices=("topk", "sampled"), default="topk")
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--num-samples", type=int, default=24, help="draws per position (sampled mode)")
    parser.add_argument("--temperature", type=float, default=1.0, help="capture temperature = training temperature")
    parser.add_argument("--max-length", type=int, default=None, help="truncate rows (use training's max_length)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--value-dtype", choices=("float16", "bfloat16", "float32"), default="float16")
    parser.add_argument("--vocab-size", type=int, default=None, help="cut teacher logits to this many ids")
    parser.add_argument("--dtype", default="auto", help="teacher dtype: auto, bfloat16, float16, float32")
    parser.add_argument("--load-in-4bit", action="store_true", help="NF4-quantize the teacher (bitsandbytes)")
    parser.add_argument("--device", default=None, help="e.g. cuda:0 (default: cuda if available, else cpu)")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def load_rows(args: argparse.Namespace, tokenizer):
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


def main(argv: list[str] | None = None) -> int:
    import torch
    from transformers import AutoTokenizer

    from .frozen import freeze, load_teacher, teacher_load_kwargs

    args = parse_args(argv)
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
    config = PrecomputeConfig(
        mode=args.mode,
        k=args.k,
        num_samples=args.num_samples,
        temperature=args.temperature,
        max_length=args.max_length,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        seed=args.seed,
        value_dtype=args.value_dtype,
        vocab_size=args.vocab_size,
    )
    dataset = load_rows(args, tokenizer)
    result = precompute_teacher_signal(
        teacher,
        tokenizer,
        dataset,
        args.out,
        config,
        teacher_name=args.teacher,
        teacher_revision=args.revision,
        progress=not args.no_progress,
    )
    print(f"wrote {len(result)} rows with {args.mode} teacher columns to {os.path.abspath(args.out)}")
    return 0
