"""Before/after report: a Markdown table of metrics per model and a PNG of the training curves.

Rows are models (teacher, student before, student after, any baseline such as a CE-only student), columns
are metrics, plus the share of the teacher's score each row retains on a headline metric. Retention is
student / teacher for higher-is-better metrics and teacher / student for lower-is-better ones (perplexity,
bits per byte), so 100% means "as good as the teacher" either way. Metrics that measure distance to the
teacher (KL, agreement) have no retention: the teacher scores itself trivially.

Run as ``python -m hf_distill.evaluation.report --results results.json --out-dir report/`` with a JSON file
{"rows": {name: {metric: value}}, "log_history": {run name: trainer.state.log_history}}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

# Direction of each known metric: +1 higher is better, -1 lower is better, 0 no retention share.
METRIC_DIRECTIONS: dict[str, int] = {
    "perplexity": -1,
    "bits_per_byte": -1,
    "nll_per_token": -1,
    "top1_agreement": 0,
    "kl_teacher_student": 0,
    "top5_overlap": 0,
    "prob_correlation": 0,
    "entropy_bits": 0,
    "ece": 0,
    "exact_match": 1,
    "edit_similarity": 1,
}


def metric_direction(metric: str, directions: Mapping[str, int] | None = None) -> int:
    """+1, -1 or 0 (see ``METRIC_DIRECTIONS``); pass@k metrics are higher-is-better; unknown ones get 0."""
    table = {**METRIC_DIRECTIONS, **(directions or {})}
    if metric in table:
        return table[metric]
    return 1 if metric.startswith("pass@") else 0


def retained_share(value: float, teacher_value: float, direction: int) -> float | None:
    """Share of the teacher's score a model keeps, or None when undefined for this metric or these values."""
    if direction == 0 or any(v is None or not math.isfinite(v) for v in (value, teacher_value)):
        return None
    if direction > 0:
        return value / teacher_value if teacher_value != 0 else None
    return teacher_value / value if value != 0 else None


def _format(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def markdown_table(
    rows: Mapping[str, Mapping[str, float]],
    *,
    teacher: str = "teacher",
    metrics: Sequence[str] | None = None,
    headline_metric: str | None = None,
    directions: Mapping[str, int] | None = None,
) -> str:
    """The before/after table plus a per-metric retention table, as Markdown.

    ``headline_metric`` (default: bits_per_byte if present, else the first metric with a direction) gives the
    "share of teacher's score retained" column.
    """
    if teacher not in rows:
        raise ValueError(f"rows must include the teacher row {teacher!r}; got {list(rows)}")
    if metrics is None:
        metrics = list(dict.fromkeys(metric for row in rows.values() for metric in row))
    retainable = [m for m in metrics if metric_direction(m, directions) != 0]
    if headline_metric is None:
        headline_metric = "bits_per_byte" if "bits_per_byte" in retainable else (retainable or [None])[0]
    teacher_row = rows[teacher]

    def share(name: str, metric: str) -> str:
        value = retained_share(rows[name].get(metric), teacher_row.get(metric), metric_direction(metric, directions))
        return "n/a" if value is None else f"{100 * value:.1f}%"

    headline = f"share of teacher's score retained ({headline_metric})" if headline_metric else None
    header = ["model", *metrics, *([headline] if headline else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|"]
    for name, row in rows.items():
        cells = [name, *(_format(row.get(metric)) for metric in metrics)]
        if headline:
            cells.append(share(name, headline_metric))
        lines.append("| " + " | ".join(cells) + " |")
    if retainable:
        lines += [
            "",
            "Share of the teacher's score retained, per metric (100% = as good as the teacher):",
            "",
            "| model | " + " | ".join(retainable) + " |",
            "|" + "|".join([" --- "] + [" ---: "] * len(retainable)) + "|",
        ]
        for name in rows:
            lines.append("| " + " | ".join([name, *(share(name, metric) for metric in retainable)]) + " |")
    return "\n".join(lines) + "\n"


def plot_training_curves(
    log_histories: Mapping[str, Sequence[Mapping[str, Any]]] | Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    keys: Sequence[str] | None = None,
) -> str:
    """Write a PNG with one panel per logged quantity (loss, eval_loss, ...) and one line per run.

    ``log_histories`` is a Trainer ``state.log_history`` or a {run name: log_history} mapping.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {"training": log_histories} if not isinstance(log_histories, Mapping) else dict(log_histories)
    if keys is None:
        found = {
            key
            for history in runs.values()
            for entry in history
            for key, value in entry.items()
            if isinstance(value, (int, float)) and "loss" in key and not key.startswith("train_")
        }
        keys = sorted(found, key=lambda key: (key.startswith("eval_"), key))
    if not keys:
        raise ValueError("the log history has no loss values to plot")
    figure, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6), squeeze=False)
    for axis, key in zip(axes[0], keys):
        for run, history in runs.items():
            points = [(entry["step"], entry[key]) for entry in history if key in entry and "step" in entry]
            if points:
                steps, values = zip(*points)
                axis.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3, label=run)
        axis.set_title(key)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return os.fspath(path)


def write_report(
    rows: Mapping[str, Mapping[str, float]],
    out_dir: str | os.PathLike,
    *,
    log_histories: Mapping[str, Sequence[Mapping[str, Any]]] | Sequence[Mapping[str, Any]] | None = None,
    teacher: str = "teacher",
    title: str = "Distillation report",
    notes: str = "",
    headline_metric: str | None = None,
    directions: Mapping[str, int] | None = None,
) -> dict[str, str]:
    """Write report.md (table, curves), training_curves.png and results.json; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"markdown": os.path.join(out_dir, "report.md"), "results": os.path.join(out_dir, "results.json")}
    table = markdown_table(rows, teacher=teacher, headline_metric=headline_metric, directions=directions)
    text = f"# {title}\n\n{notes.strip()}\n\n{table}" if notes.strip() else f"# {title}\n\n{table}"
    if log_histories:
        paths["chart"] = plot_training_curves(log_histories, os.path.join(out_dir, "training_curves.png"))
        text += "\n## Training curves\n\n![training curves](training_curves.png)\n"
    with open(paths["markdown"], "w", encoding="utf-8") as handle:
        handle.write(text)
    with open(paths["results"], "w", encoding="utf-8") as handle:
        json.dump({"rows": rows, "log_history": log_histories}, handle, indent=2, default=float)
    return paths


def main(argv: Sequence[str] | None = None) -> dict[str, str]:
    """Command line: turn a results JSON into report.md + training_curves.png."""
    parser = argparse.ArgumentParser(description="Write the before/after distillation report.")
    parser.add_argument("--results", required=True, help='JSON with "rows" and optional "log_history"')
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--teacher", default="teacher", help="name of the teacher row")
    parser.add_argument("--headline-metric", default=None)
    parser.add_argument("--title", default="Distillation report")
    args = parser.parse_args(argv)
    with open(args.results, encoding="utf-8") as handle:
        results = json.load(handle)
    paths = write_report(
        results["rows"],
        args.out_dir,
        log_histories=results.get("log_history"),
        teacher=args.teacher,
        title=args.title,
        headline_metric=args.headline_metric,
    )
    print(f"report written to {paths['markdown']}")
    return paths


if __name__ == "__main__":
    main()
