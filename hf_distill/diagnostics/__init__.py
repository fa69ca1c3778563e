"""Distillation diagnostics: is the student learning the teacher? (statistics, sampling, a warning callback)."""

from .sampling import sample_rows, sampled_diagnostic_sums, supports_teacher
from .statistics import diagnostic_sums, empty_sums, summarize
from .watch import DiagnosticsWatch, WatchThresholds, check_history

__all__ = [
    "DiagnosticsWatch",
    "WatchThresholds",
    "check_history",
    "diagnostic_sums",
    "empty_sums",
    "sample_rows",
    "sampled_diagnostic_sums",
    "summarize",
    "supports_teacher",
]
