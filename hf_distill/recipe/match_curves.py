"""Held-out learning curves and "steps / seconds to match" a baseline: does distillation pay for itself?

A final-step table says which student is better after N steps; it does not say whether the teacher's extra cost
per step (its forward pass, or a precompute paid once) was worth it. Here each trained student is scored on the
held-out windows every ``eval_every`` optimizer steps (`HeldOutCurveCallback`), the clock counting training time
only (evaluation time excluded, precompute seconds added where a run used them), and `match_point` finds the first
step and the first second at which a curve reaches a target loss (the CE-only student's final held-out loss).

Interpolation rule (documented because the answer depends on it): the curve is a set of points (step, seconds,
loss). The match is the first point whose loss is <= the target; when the point before it is above the target,
step and seconds are interpolated linearly between the two points at the loss equal to the target. A curve that
starts at or below the target matches at its first point; one that never reaches it has no match (``None``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from transformers import TrainerCallback

from ..evaluation.perplexity import token_nll_sum
from ..evaluation.token_windows import Batch, batches, model_device, pad_id_of, text_windows


@dataclass(frozen=True)
class CurvePoint:
    """One held-out evaluation: after ``step`` optimizer steps and ``seconds`` of training (eval excluded)."""

    step: int
    seconds: float
    loss: float
    agreement: float | None = None


@dataclass(frozen=True)
class Match:
    """Where a curve first reaches the target loss (interpolated), or ``None`` fields when it never does."""

    target_loss: float
    step: float | None
    seconds: float | None


def match_point(curve: Sequence[CurvePoint], target_loss: float) -> Match:
    """The first (interpolated) step and seconds at which ``curve`` reaches ``target_loss`` (module docstring)."""
    if not math.isfinite(target_loss):
        raise ValueError(f"target_loss must be finite, got {target_loss}")
    points = sorted(curve, key=lambda point: point.step)
    previous: CurvePoint | None = None
    for point in points:
        if point.loss <= target_loss:
            if previous is None:
                return Match(target_loss, float(point.step), point.seconds)
            share = (previous.loss - target_loss) / (previous.loss - point.loss)
            step = previous.step + share * (point.step - previous.step)
            seconds = previous.seconds + share * (point.seconds - previous.seconds)
            return Match(target_loss, step, seconds)
        previous = point
    return Match(target_loss, None, None)


@dataclass
class MatchSummary:
    """The report's steps-to-match / time-to-match block: the distilled curve against the baseline's final point."""

    target_loss: float
    baseline_steps: int
    baseline_seconds: float
    steps: float | None
    seconds: float | None
    agreement_ratio: float | None = None
    step_ratio: float | None = field(init=False)
    time_ratio: float | None = field(init=False)

    def __post_init__(self) -> None:
        self.step_ratio = self.steps / self.baseline_steps if self.steps is not None else None
        self.time_ratio = self.seconds / self.baseline_seconds if self.seconds is not None else None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sentence(self, name: str = "the KD student", baseline: str = "the CE-only student") -> str:
        head = f"Target: {baseline}'s final held-out loss, {self.target_loss:.4f} nats/token after "
        head += f"{self.baseline_steps} steps ({self.baseline_seconds:.1f} s of training)."
        if self.steps is None:
            return head + f" {_sentence_case(name)} did not reach it."
        text = head + (
            f" {_sentence_case(name)} reaches it after {self.steps:.1f} steps ({self.step_ratio:.2f}x the steps) and "
            f"{self.seconds:.1f} s ({self.time_ratio:.2f}x the time)."
        )
        if self.agreement_ratio is not None:
            text += f" Top-1 agreement with the teacher at step {self.baseline_steps}: {self.agreement_ratio:.2f}x."
        return text


def _sentence_case(name: str) -> str:
    return name[:1].upper() + name[1:]  # str.capitalize would lower-case the rest ("KD" -> "Kd")


def summarize_match(curve: Sequence[CurvePoint], baseline: Sequence[CurvePoint]) -> MatchSummary:
    """Steps and seconds ``curve`` needs to reach the baseline curve's final held-out loss."""
    if not baseline:
        raise ValueError("the baseline curve is empty")
    final = max(baseline, key=lambda point: point.step)
    match = match_point(curve, final.loss)
    same_step = [point for point in curve if point.step == final.step and point.agreement is not None]
    ratio = None
    if same_step and final.agreement:  # agreement at equal steps: the baseline's last evaluated step
        ratio = same_step[0].agreement / final.agreement
    return MatchSummary(final.loss, final.step, final.seconds, match.step, match.seconds, ratio)


class HeldOutScorer:
    """Token-mean held-out cross-entropy (and top-1 agreement with fixed teacher predictions) of a model.

    The windows are the report's (`text_windows`, every held-out token scored once), so the last point of a curve
    equals the report's ``nll_per_token`` for the same model.
    """

    def __init__(self, tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int = 4) -> None:
        self.windows = text_windows(tokenizer, list(texts), max_length)
        if not self.windows:
            raise ValueError("no held-out token to score: texts are empty")
        self.pad_id = pad_id_of(tokenizer)
        self.batch_size = batch_size
        self.teacher_top1: list[torch.Tensor] | None = None

    def _batches(self, model: Any) -> list[Batch]:
        return list(batches(self.windows, self.batch_size, self.pad_id, model_device(model)))

    @torch.no_grad()
    def set_teacher(self, teacher: Any) -> None:
        """Store the teacher's top-1 prediction at every target position (one teacher pass, ids only)."""
        self.teacher_top1 = [rows.argmax(-1).cpu() for rows, _ in self._target_rows(teacher)]

    def _target_rows(self, model: Any):
        was_training = model.training
        model.eval()
        try:
            for batch in self._batches(model):
                logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
                targets = batch.input_ids.roll(-1, dims=1)[batch.target_mask]
                yield logits[batch.target_mask].float(), targets
        finally:
            model.train(was_training)

    @torch.no_grad()
    def score(self, model: Any) -> tuple[float, float | None]:
        """(nll per token, top-1 agreement with the teacher or None when no teacher was set)."""
        nll, tokens, agree = 0.0, 0, 0
        for index, (rows, targets) in enumerate(self._target_rows(model)):
            nll += float(token_nll_sum(rows, targets))
            tokens += int(targets.numel())
            if self.teacher_top1 is not None:
                agree += int((rows.argmax(-1).cpu() == self.teacher_top1[index]).sum())
        return nll / tokens, (agree / tokens if self.teacher_top1 is not None else None)


class HeldOutCurveCallback(TrainerCallback):
    """Score the model every ``eval_every`` optimizer steps (and at steps 0 and the last) on the held-out windows.

    ``seconds`` counts training time since ``on_train_begin`` minus the time spent in these evaluations, plus
    ``offset_seconds`` (a teacher precompute the run depends on).
    """

    def __init__(self, scorer: HeldOutScorer, eval_every: int, offset_seconds: float = 0.0, name: str = "") -> None:
        if eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {eval_every}")
        self.name = name or "curve"
        self.scorer = scorer
        self.eval_every = eval_every
        self.offset_seconds = offset_seconds
        self.points: list[CurvePoint] = []
        self._start = 0.0
        self._eval_seconds = 0.0

    def _record(self, step: int, model: Any) -> None:
        elapsed = time.perf_counter() - self._start - self._eval_seconds + self.offset_seconds
        began = time.perf_counter()
        loss, agreement = self.scorer.score(model)
        self.points.append(CurvePoint(step, elapsed, loss, agreement))
        self._eval_seconds += time.perf_counter() - began
        shown = "" if agreement is None else f", top-1 agreement {agreement:.3f}"
        print(f"[{self.name}] step {step}: held-out CE {loss:.4f}{shown} ({elapsed:.0f} s of training)", flush=True)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self._start = time.perf_counter()
        self._eval_seconds = 0.0
        if not self.points:
            self._record(state.global_step, model)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if state.global_step % self.eval_every == 0 or state.global_step >= state.max_steps:
            self._record(state.global_step, model)


def curve_rows(curve: Sequence[CurvePoint]) -> list[dict[str, Any]]:
    return [asdict(point) for point in curve]


def plot_match_curves(curves: Mapping[str, Sequence[CurvePoint]], path: str, target_loss: float | None = None) -> str:
    """A PNG with held-out loss against steps (left) and against training seconds (right), one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for axis, x_key, label in ((axes[0], "step", "optimizer steps"), (axes[1], "seconds", "training seconds")):
        for name, curve in curves.items():
            axis.plot([getattr(p, x_key) for p in curve], [p.loss for p in curve], marker="o", markersize=3, label=name)
        if target_loss is not None:
            axis.axhline(target_loss, color="grey", linestyle="--", linewidth=1, label="baseline final")
        axis.set_xlabel(label)
        axis.set_ylabel("held-out CE (nats/token)")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_match_section(
    report_dir: str, curves: Mapping[str, Sequence[CurvePoint]], distilled: str, baseline: str
) -> dict[str, str]:
    """Append the steps/time-to-match paragraph and curve plot to report.md; write match.json; return paths."""
    import json
    import os

    summary = summarize_match(curves[distilled], curves[baseline])
    chart = plot_match_curves(curves, os.path.join(report_dir, "match_curves.png"), summary.target_loss)
    data = {"summary": summary.as_dict(), "curves": {name: curve_rows(curve) for name, curve in curves.items()}}
    match_path = os.path.join(report_dir, "match.json")
    with open(match_path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
    lines = [
        "",
        "## Steps and time to match the CE-only student",
        "",
        summary.sentence(distilled, baseline),
        "Seconds count training only (held-out scoring excluded), plus any teacher precompute the run used; "
        "crossings are interpolated linearly between evaluations.",
        "",
        "| step | " + " | ".join(f"{name} CE | {name} s | {name} agreement" for name in curves) + " |",
        "|---:|" + "---:|---:|---:|" * len(curves),
    ]
    by_step = [{point.step: point for point in curve} for curve in curves.values()]
    for step in sorted(set().union(*by_step)):
        cells = []
        for table in by_step:
            point = table.get(step)
            if point is None:
                cells += ["", "", ""]
            else:
                agreement = "" if point.agreement is None else f"{point.agreement:.3f}"
                cells += [f"{point.loss:.4f}", f"{point.seconds:.1f}", agreement]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    lines += ["", "![held-out loss against steps and seconds](match_curves.png)", ""]
    with open(os.path.join(report_dir, "report.md"), "a", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    print(summary.sentence(distilled, baseline), flush=True)
    return {"match": match_path, "match_chart": chart}
