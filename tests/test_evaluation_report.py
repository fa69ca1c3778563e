"""Before/after report: Markdown table with retention shares, PNG of training curves, CLI."""

import json

import pytest
from matplotlib.image import imread

from hf_distill.evaluation.report import main, markdown_table, retained_share, write_report

ROWS = {
    "teacher": {"bits_per_byte": 1.0, "exact_match": 0.5},
    "student before": {"bits_per_byte": 2.0, "exact_match": 0.1, "top1_agreement": 0.3},
    "student after (KD)": {"bits_per_byte": 1.25, "exact_match": 0.4, "top1_agreement": 0.6},
    "student after (CE only)": {"bits_per_byte": 1.6, "exact_match": 0.25, "top1_agreement": 0.5},
}
HISTORY = [{"loss": 3.0 - 0.1 * step, "step": step} for step in range(1, 11)] + [
    {"eval_loss": 2.5, "step": 5},
    {"eval_loss": 2.2, "step": 10},
    {"train_runtime": 12.0, "step": 10},
]


def table_row(table, name):
    return next(line for line in table.splitlines() if line.startswith(f"| {name} |"))


def test_retained_share_directions():
    assert retained_share(1.25, 1.0, -1) == pytest.approx(0.8)  # lower is better: teacher / student
    assert retained_share(0.4, 0.5, 1) == pytest.approx(0.8)  # higher is better: student / teacher
    assert retained_share(0.6, 1.0, 0) is None


def test_markdown_table_values_and_retention():
    table = markdown_table(ROWS)
    header = table.splitlines()[0]
    assert "bits_per_byte" in header and "share of teacher's score retained (bits_per_byte)" in header
    assert table_row(table, "student after (KD)").split("|")[1:-1] == [
        " student after (KD) ",
        " 1.25 ",
        " 0.4 ",
        " 0.6 ",
        " 80.0% ",
    ]
    assert table_row(table, "student before").endswith("| 50.0% |")
    assert table_row(table, "teacher").endswith("| 100.0% |")
    # second table: per metric, for metrics with a direction only
    assert "| student after (CE only) | 62.5% | 50.0% |" in table
    with pytest.raises(ValueError, match="teacher"):
        markdown_table({"student": {"bits_per_byte": 1.0}})


def test_write_report_creates_markdown_png_and_json(tmp_path):
    paths = write_report(ROWS, tmp_path, log_histories={"KD": HISTORY, "CE only": HISTORY[:5]}, notes="CPU run")
    text = (tmp_path / "report.md").read_text()
    assert "CPU run" in text and "![training curves](training_curves.png)" in text
    assert table_row(text, "student after (KD)").endswith("| 80.0% |")
    image = imread(paths["chart"])
    assert image.ndim == 3 and image.shape[1] > image.shape[0] > 100  # one wide panel per loss key
    assert (tmp_path / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == ROWS


def test_cli_writes_the_report(tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"rows": ROWS, "log_history": HISTORY}))
    paths = main(["--results", str(results), "--out-dir", str(tmp_path / "out")])
    assert (tmp_path / "out" / "report.md").exists() and paths["chart"].endswith("training_curves.png")
