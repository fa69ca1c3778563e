"""One report for a chain: every stage's student against its own teacher and against the first teacher.

The scores are `hf_distill.recipe.joint_eval.evaluate_against_teacher`'s (held-out perplexity, bits per byte,
top-1 agreement, KL(teacher || student) per token), so they are comparable with the recipe's report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .spec import ChainSpec

FIRST_TEACHER = "first teacher"
COLUMNS = (
    ("perplexity", "perplexity"),
    ("bits_per_byte", "bits/byte"),
    ("own_top1_agreement", "agreement (own teacher)"),
    ("own_kl", "KL (own teacher)"),
    ("first_top1_agreement", "agreement (first teacher)"),
    ("first_kl", "KL (first teacher)"),
)


def load_models(spec: ChainSpec, stage_dirs: Mapping[str, str], model_args: Any, args: Any) -> dict[str, Any]:
    """The first teacher and each stage's saved student, in chain order."""
    from ..recipe.model_sources import load_causal_lm, resolve_model_source
    from ..teachers.frozen import teacher_load_kwargs

    models = {
        FIRST_TEACHER: load_causal_lm(
            resolve_model_source(spec.teacher),
            "teacher",
            **teacher_load_kwargs(args.teacher_model_init_kwargs, args.teacher_dtype),
        )
    }
    for name, path in stage_dirs.items():
        models[name] = load_causal_lm(path, "student", dtype=model_args.dtype or "auto")
    return models


def chain_rows(models: Mapping[str, Any], tokenizer: Any, texts: list[str], **eval_kwargs: Any) -> dict[str, dict]:
    """{row: scores}: the first teacher, then each stage against its own teacher (the model before it) and the first."""
    from ..recipe.joint_eval import evaluate_against_teacher

    names = list(models)
    first = evaluate_against_teacher(
        models[FIRST_TEACHER],
        {n: models[n] for n in names[1:]},
        tokenizer,
        texts,
        teacher_name=FIRST_TEACHER,
        **eval_kwargs,
    )
    rows = {FIRST_TEACHER: {k: first[FIRST_TEACHER][k] for k in ("perplexity", "bits_per_byte")}}
    for previous, name in zip(names, names[1:]):
        own = (
            first
            if previous == FIRST_TEACHER
            else evaluate_against_teacher(
                models[previous], {name: models[name]}, tokenizer, texts, teacher_name=previous, **eval_kwargs
            )
        )
        rows[name] = {
            "perplexity": first[name]["perplexity"],
            "bits_per_byte": first[name]["bits_per_byte"],
            "own_top1_agreement": own[name]["top1_agreement"],
            "own_kl": own[name]["kl_teacher_student"],
            "first_top1_agreement": first[name]["top1_agreement"],
            "first_kl": first[name]["kl_teacher_student"],
        }
    return rows


def rows_markdown(rows: Mapping[str, Mapping[str, float]], layers: Mapping[str, int]) -> str:
    """The report table; empty cells where a measure does not apply (the teacher against itself)."""
    header = "| model | layers | " + " | ".join(title for _, title in COLUMNS) + " |"
    lines = [header, "|---|---:|" + "---:|" * len(COLUMNS)]
    for name, row in rows.items():
        cells = [f"{row[key]:.4g}" if key in row else "" for key, _ in COLUMNS]
        lines.append(f"| {name} | {layers.get(name, '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_chain_report(
    spec: ChainSpec,
    stage_dirs: Mapping[str, str],
    stop_reasons: Mapping[str, str],
    arguments: tuple[Any, Any, Any],
    eval_texts: Mapping[str, str],
    tokenizer: Any,
) -> dict[str, str]:
    """`report.md` and `report.json` in the chain's output directory; returns their paths."""
    recipe, args, model_args = arguments
    models = load_models(spec, stage_dirs, model_args, args)
    rows = chain_rows(
        models,
        tokenizer,
        list(eval_texts.values()),
        max_length=recipe.eval_max_length or args.max_length,
        batch_size=recipe.eval_batch_size,
    )
    layers = {name: model.config.get_text_config().num_hidden_layers for name, model in models.items()}
    out = Path(spec.output_dir)
    lines = [
        f"# Progressive distillation report: {spec.teacher}",
        "",
        "Held-out texts never seen in training. Perplexity and bits per byte: lower is better; top-1 agreement: "
        "higher is better; KL(teacher || student) in nats per token at T = 1: lower is better. A stage's own "
        "teacher is the model before it in the chain.",
        "",
        rows_markdown(rows, layers),
        "",
        "| stage | student | stopped because |",
        "|---|---|---|",
        *(f"| {n} | {s.student.describe()} | {stop_reasons[n]} |" for n, s in ((s.name, s) for s in spec.stages)),
        "",
    ]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    payload = {"rows": rows, "layers": layers, "stop_reasons": dict(stop_reasons), "stage_dirs": dict(stage_dirs)}
    (out / "report.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return {"markdown": str(out / "report.md"), "json": str(out / "report.json")}
