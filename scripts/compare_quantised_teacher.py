"""Score students distilled from an unquantised and from an NF4 teacher against the *unquantised* teacher.

The recipe's own report measures each KD student against the teacher it was trained with, so the NF4 run's
agreement and KL are relative to the NF4 teacher. This puts both students (and the NF4 teacher itself) on the
same held-out standard-library texts against the unquantised teacher. See docs/quantised_teacher.md.

    PYTHONPATH=. .venv/bin/python scripts/compare_quantised_teacher.py \
        --student unquantised=outputs/nf4cmp/fp32 --student nf4=outputs/nf4cmp/nf4
"""

from __future__ import annotations

import argparse

import torch
from transformers import AutoModelForCausalLM

from hf_distill.evaluation.report import markdown_table
from hf_distill.recipe.arguments import RecipeArguments
from hf_distill.recipe.joint_eval import evaluate_against_teacher
from hf_distill.recipe.model_sources import load_tokenizer, resolve_model_source
from hf_distill.recipe.runner import _stdlib_eval_texts
from hf_distill.teachers.frozen import teacher_load_kwargs

METRICS = ("perplexity", "bits_per_byte", "top1_agreement", "kl_teacher_student", "top5_overlap", "prob_correlation")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="pypi:smollm2-135m-instruct")
    parser.add_argument("--student", action="append", required=True, metavar="NAME=DIR", help="a trained student")
    # The held-out texts of recipes/configs/cpu_smollm2.yaml.
    parser.add_argument("--num_eval_files", type=int, default=8)
    parser.add_argument("--eval_chars_per_file", type=int, default=1200)
    parser.add_argument("--eval_max_length", type=int, default=256)
    parser.add_argument("--no_nf4_teacher_row", action="store_true", help="skip scoring the NF4 teacher itself")
    args = parser.parse_args()

    recipe = RecipeArguments(num_eval_files=args.num_eval_files, eval_chars_per_file=args.eval_chars_per_file)
    texts = list(_stdlib_eval_texts(recipe).values())
    path = resolve_model_source(args.teacher)
    tokenizer = load_tokenizer(path, "teacher")
    teacher = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    students = {}
    if not args.no_nf4_teacher_row:
        nf4 = teacher_load_kwargs(None, "float32", load_in_4bit=True)
        students["NF4 teacher"] = AutoModelForCausalLM.from_pretrained(path, **nf4)
    for entry in args.student:
        name, _, directory = entry.partition("=")
        students[f"KD student ({name} teacher)"] = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    rows = evaluate_against_teacher(teacher, students, tokenizer, texts, max_length=args.eval_max_length)
    rows = {name: {m: row[m] for m in METRICS if m in row} for name, row in rows.items()}
    print(markdown_table(rows, teacher="teacher", metrics=list(METRICS)))


if __name__ == "__main__":
    main()
