"""Evaluation for distilled models: ``evaluate.Metric`` modules that work offline, plus the report.

Each metric module file (``pass_at_k.py``, ``perplexity.py``, ``agreement.py``, ``code_completion.py``) defines
one ``evaluate.Metric`` and can also be loaded with ``evaluate.load(path_to_file)``; ``METRIC_FILES`` lists them.
"""

import os

from hf_distill.evaluation.agreement import TeacherStudentAgreement, agreement_from_logits, compute_agreement
from hf_distill.evaluation.code_completion import (
    NextLineCompletion,
    NextLinePair,
    build_next_line_pairs,
    complete_next_lines,
    edit_similarity,
    evaluate_next_line_completion,
    levenshtein_distance,
    score_next_lines,
)
from hf_distill.evaluation.humaneval import (
    evaluate_humaneval,
    generate_completions,
    humaneval_program,
    humaneval_test_code,
    load_humaneval_problems,
)
from hf_distill.evaluation.pass_at_k import PassAtK, execute_candidates, mean_pass_at_k, pass_at_k
from hf_distill.evaluation.perplexity import HeldOutPerplexity, compute_perplexity, perplexity_from_counts
from hf_distill.evaluation.report import markdown_table, plot_training_curves, write_report

_HERE = os.path.dirname(os.path.abspath(__file__))
METRIC_FILES = {
    "pass_at_k": os.path.join(_HERE, "pass_at_k.py"),
    "perplexity": os.path.join(_HERE, "perplexity.py"),
    "teacher_student_agreement": os.path.join(_HERE, "agreement.py"),
    "next_line_completion": os.path.join(_HERE, "code_completion.py"),
}

__all__ = [
    "METRIC_FILES",
    "HeldOutPerplexity",
    "NextLineCompletion",
    "NextLinePair",
    "PassAtK",
    "TeacherStudentAgreement",
    "agreement_from_logits",
    "build_next_line_pairs",
    "complete_next_lines",
    "compute_agreement",
    "compute_perplexity",
    "edit_similarity",
    "evaluate_humaneval",
    "evaluate_next_line_completion",
    "execute_candidates",
    "generate_completions",
    "humaneval_program",
    "humaneval_test_code",
    "levenshtein_distance",
    "load_humaneval_problems",
    "markdown_table",
    "mean_pass_at_k",
    "pass_at_k",
    "perplexity_from_counts",
    "plot_training_curves",
    "score_next_lines",
    "write_report",
]
