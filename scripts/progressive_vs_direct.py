"""Progressive chain against direct distillation with the same total steps, scored on the same held-out texts.

    python scripts/progressive_vs_direct.py \
        [--chain recipes/configs/progressive_smollm2.yaml] [--direct recipes/configs/progressive_direct_smollm2.yaml]

Runs (or resumes) both chains, then scores both final students against the original teacher in one pass
(held-out perplexity, bits per byte, top-1 agreement and KL with the first teacher) and prints the table with
each run's wall time. Which one wins is measured here, not assumed; the table is written to
``<chain output_dir>/comparison.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

COLUMNS = (
    ("perplexity", "perplexity"),
    ("bits_per_byte", "bits/byte"),
    ("top1_agreement", "top-1 agreement"),
    ("kl_teacher_student", "KL(teacher‖student)"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chain", default="recipes/configs/progressive_smollm2.yaml")
    parser.add_argument("--direct", default="recipes/configs/progressive_direct_smollm2.yaml")
    options = parser.parse_args()

    from hf_distill.progressive.report import load_models
    from hf_distill.progressive.runner import run_chain
    from hf_distill.progressive.spec import load_chain_spec, stage_arguments
    from hf_distill.recipe.joint_eval import evaluate_against_teacher
    from hf_distill.recipe.model_sources import load_tokenizer, resolve_model_source
    from hf_distill.recipe.stdlib_corpus import stdlib_code_split

    specs = {"chain": load_chain_spec(options.chain), "direct": load_chain_spec(options.direct)}
    if specs["chain"].teacher != specs["direct"].teacher:
        raise SystemExit("the two configs must start from the same teacher")
    results, seconds = {}, {}
    for kind, spec in specs.items():
        start = time.perf_counter()
        results[kind] = run_chain(spec)
        seconds[kind] = time.perf_counter() - start

    spec = specs["chain"]
    recipe, args, model_args = stage_arguments(spec, spec.stages[0], teacher=spec.teacher, student_source=spec.teacher)
    finals = {
        f"progressive ({' -> '.join(results['chain'].stage_dirs)})": list(results["chain"].stage_dirs.values())[-1],
        f"direct ({' -> '.join(results['direct'].stage_dirs)})": list(results["direct"].stage_dirs.values())[-1],
    }
    models = load_models(spec, finals, model_args, args)
    tokenizer = load_tokenizer(resolve_model_source(spec.teacher), "teacher")
    texts = stdlib_code_split(recipe.num_eval_files, seed=recipe.split_seed).eval_texts(recipe.eval_chars_per_file)
    teacher = models.pop("first teacher")
    rows = evaluate_against_teacher(
        teacher,
        models,
        tokenizer,
        list(texts.values()),
        max_length=recipe.eval_max_length or args.max_length,
        batch_size=recipe.eval_batch_size,
        teacher_name="teacher (30 layers)",
    )
    lines = ["| model | " + " | ".join(t for _, t in COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[k]:.4g}" if k in row else "" for k, _ in COLUMNS) + " |")
    table = "\n".join(lines)
    timing = (
        f"Wall time in this process: progressive {seconds['chain']:.0f} s, direct {seconds['direct']:.0f} s "
        "(training + reports; a run already finished or resumed counts only what was left of it)."
    )
    text = f"{table}\n\n{timing}\n"
    out = Path(spec.output_dir) / "comparison.md"
    out.write_text(text, encoding="utf-8")
    print("\n" + text + f"\nwritten to {out}")


if __name__ == "__main__":
    main()
