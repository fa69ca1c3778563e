"""Next-line completion scores and pair construction on hand-made cases."""

import evaluate
import pytest

from hf_distill.evaluation import (
    METRIC_FILES,
    NextLineCompletion,
    build_next_line_pairs,
    edit_similarity,
    levenshtein_distance,
    score_next_lines,
)


@pytest.mark.parametrize(
    "a, b, distance",
    [("kitten", "sitting", 3), ("", "", 0), ("abc", "", 3), ("", "ab", 2), ("flaw", "lawn", 2), ("same", "same", 0)],
)
def test_levenshtein_hand_cases(a, b, distance):
    assert levenshtein_distance(a, b) == distance
    assert levenshtein_distance(b, a) == distance


def test_edit_similarity_hand_cases():
    assert edit_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert edit_similarity("", "") == 1.0
    assert edit_similarity("abc", "") == 0.0
    assert edit_similarity("return x", "return y") == pytest.approx(1 - 1 / 8)


def test_scores_compare_stripped_lines():
    predictions = ["    return x", "x = 1", "print(a)", ""]
    references = ["return x  ", "x = 2", "print(a)", "pass"]
    scores = score_next_lines(predictions, references)
    assert scores["exact_match"] == pytest.approx(2 / 4)
    assert scores["edit_similarity"] == pytest.approx((1 + (1 - 1 / 5) + 1 + 0) / 4)
    for metric in (NextLineCompletion(), evaluate.load(METRIC_FILES["next_line_completion"])):
        assert metric.compute(predictions=predictions, references=references)["exact_match"] == 0.5
    with pytest.raises(ValueError):
        score_next_lines(["a"], [])


SOURCE = """import os
import sys

# a comment line
def main():
    path = os.getcwd()
    x = 1

    return path
"""


def test_pairs_are_file_prefixes_and_skip_trivial_lines():
    pairs = build_next_line_pairs({"mod.py": SOURCE}, pairs_per_file=100, min_context_lines=2, min_line_chars=4)
    lines = SOURCE.splitlines()
    # eligible: line index >= 2, not blank, not a comment, >= 4 stripped characters ("x = 1" has 5)
    assert [pair.target for pair in pairs] == [lines[4], lines[5], lines[6], lines[8]]
    for pair in pairs:
        assert SOURCE.startswith(pair.context + "\n" + pair.target + "\n")
        assert pair.source == "mod.py"
        # the context stops before the newline that ends the previous line (so here only after a blank line)
        assert pair.context.endswith("\n") == (lines[pair.line_number - 2] == "")
        assert lines[pair.line_number - 1] == pair.target
    short = build_next_line_pairs({"mod.py": SOURCE}, pairs_per_file=100, min_context_lines=2, max_context_chars=10)
    assert all(len(pair.context) <= 10 for pair in short)
    assert short[0].context == "mment line"  # the 10 characters before the newline ending line 4
    with pytest.raises(ValueError, match="min_context_lines"):
        build_next_line_pairs([SOURCE], min_context_lines=0)


def test_pair_sampling_is_deterministic_and_bounded():
    sources = [SOURCE, SOURCE.replace("x = 1", "y = 2")]
    first = build_next_line_pairs(sources, pairs_per_file=2, min_context_lines=2, seed=3)
    again = build_next_line_pairs(sources, pairs_per_file=2, min_context_lines=2, seed=3)
    assert first == again and len(first) == 4
    assert len(build_next_line_pairs(sources, pairs_per_file=2, min_context_lines=2, max_pairs=3)) == 3
