"""Inputs that used to train silently (or fail later, blaming something else) are refused or handled."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from conftest import kd_args, make_tiny_llama, make_word_tokenizer, reference_kd_loss

from hf_distill.losses.cross_vocab import CrossVocabLossSpec
from hf_distill.losses.token_kd import KDLossSpec, LogitSource, token_kd_loss
from hf_distill.teachers.columns import TOPK_IDS, TOPK_LOGPROBS, TOPK_TAIL, TeacherSignalError, validate_columns

INF, NAN = math.inf, math.nan


# ---- 1. non-finite float settings are refused at construction ------------------------------------------------


@pytest.mark.parametrize(
    "overrides, setting",
    [
        ({"temperature": INF}, "temperature"),
        ({"temperature": NAN}, "temperature"),
        ({"temperature": -INF}, "temperature"),
        ({"temperature_schedule": "linear", "temperature_end": INF}, "temperature_end"),
        ({"temperature_schedule": "cosine", "temperature_end": NAN}, "temperature_end"),
        ({"alpha": NAN}, "alpha"),
        ({"alpha": INF}, "alpha"),
        ({"jsd_beta": NAN, "divergence": "jsd"}, "beta"),
        ({"skew_lambda": NAN}, "skew"),
        ({"cross_tokenizer": True, "uld_weight": NAN}, "uld_weight"),
        ({"cross_tokenizer": True, "exact_match_weight": INF}, "exact_match_weight"),
    ],
)
def test_kd_config_refuses_non_finite_settings(tmp_path, overrides, setting):
    with pytest.raises(ValueError, match=setting):
        kd_args(tmp_path, **overrides)


@pytest.mark.parametrize("field", ["hidden_loss_weight", "attention_loss_weight"])
@pytest.mark.parametrize("value", [NAN, INF, -1.0])
def test_feature_config_refuses_bad_weights(tmp_path, field, value):
    from hf_distill import FeatureKDConfig

    with pytest.raises(ValueError, match=field):
        kd_args(tmp_path, config_class=FeatureKDConfig, **{field: value})


def test_seqkd_config_refuses_nan_beta(tmp_path):
    from hf_distill import SeqKDConfig

    with pytest.raises(ValueError, match="beta"):
        kd_args(tmp_path, config_class=SeqKDConfig, beta=NAN, ground_truth_column="reference")


@pytest.mark.parametrize("temperature", [INF, NAN, 0.0])
def test_loss_specs_refuse_non_finite_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        KDLossSpec(temperature=temperature)
    with pytest.raises(ValueError, match="temperature"):
        CrossVocabLossSpec(temperature=temperature)


def test_finite_settings_still_accepted(tmp_path):
    config = kd_args(tmp_path, temperature=1e6, temperature_schedule="linear", temperature_end=0.5, alpha=0.0)
    assert (config.temperature, config.temperature_end, config.alpha) == (1e6, 0.5, 0.0)


# ---- 3. a masked teacher vocabulary (-inf logits) is probability 0, on the fused and the unfused path ---------


def masked_reference_divergence(name, s, t, beta=0.5, skew=0.1):
    """Per-row divergences in float64 where p = softmax(t) is exactly 0 on -inf logits (0 log 0 = 0)."""
    q, p = torch.softmax(s, -1), torch.softmax(t, -1)

    def kl(a, b):
        return (torch.xlogy(a, a) - torch.xlogy(a, b)).sum(-1)

    m_jsd = beta * p + (1 - beta) * q
    return {
        "forward_kl": lambda: kl(p, q),
        "jsd": lambda: beta * kl(p, m_jsd) + (1 - beta) * kl(q, m_jsd),
        "skew_forward_kl": lambda: kl(p, skew * p + (1 - skew) * q),
        "skew_reverse_kl": lambda: kl(q, skew * q + (1 - skew) * p),
        "tvd": lambda: 0.5 * (p - q).abs().sum(-1),
        "mse": lambda: ((p - q) ** 2).sum(-1),
    }[name]()


MASKABLE = ["forward_kl", "jsd", "skew_forward_kl", "skew_reverse_kl", "tvd", "mse"]


def masked_problem(seed=0, tokens=9, hidden=6, vocab=13):
    gen = torch.Generator().manual_seed(seed)
    s_hidden = torch.randn(tokens, hidden, generator=gen)
    s_weight = torch.randn(vocab, hidden, generator=gen)
    t_hidden = torch.randn(tokens, hidden, generator=gen)
    t_weight = torch.randn(vocab, hidden, generator=gen) * 2
    t_bias = torch.zeros(vocab)
    t_bias[[1, 4, 5, 11]] = -math.inf  # e.g. tokens a constrained decoder never allows
    targets = torch.tensor([0, 2, 3, -100, 6, 7, 8, 9, 12])
    return s_hidden, s_weight, t_hidden, t_weight, t_bias, targets


def reference_loss_and_grads(s_hidden, s_weight, teacher_logits, targets, name, temperature, alpha):
    """alpha T^2 sum D + (1 - alpha) sum CE over target rows in float64, and its gradients (autograd)."""
    h = s_hidden.double().requires_grad_(True)
    w = s_weight.double().requires_grad_(True)
    valid = targets != -100
    z = (h @ w.t())[valid]
    t = teacher_logits.double()[valid]
    soft = masked_reference_divergence(name, z / temperature, t / temperature).sum()
    hard = torch.nn.functional.cross_entropy(z, targets[valid], reduction="sum")
    loss = alpha * temperature**2 * soft + (1 - alpha) * hard
    loss.backward()
    return loss.detach(), h.grad, w.grad


@pytest.mark.parametrize("name", MASKABLE)
@pytest.mark.parametrize("temperature, alpha", [(1.0, 1.0), (2.0, 0.5)])
@pytest.mark.parametrize("form", ["unfused", "fused"])
def test_masked_teacher_vocabulary_matches_float64_reference(name, temperature, alpha, form):
    s_hidden, s_weight, t_hidden, t_weight, t_bias, targets = masked_problem()
    teacher_logits = t_hidden @ t_weight.t() + t_bias
    if form == "unfused":
        # Masks may differ from row to row when the teacher comes as logits.
        teacher_logits[0, [0, 3]] = -math.inf
        teacher_logits[5, 2:9] = -math.inf
        teacher = LogitSource(teacher_logits)
    else:
        teacher = LogitSource(t_hidden, t_weight, t_bias)
    student = LogitSource(s_hidden.clone().requires_grad_(True), s_weight.clone().requires_grad_(True))
    spec = KDLossSpec(divergence=name, temperature=temperature, alpha=alpha, chunk_size=4)

    terms = token_kd_loss(student, teacher, targets, spec)
    terms.loss.backward()

    ref_loss, ref_h, ref_w = reference_loss_and_grads(
        s_hidden, s_weight, teacher_logits, targets, name, temperature, alpha
    )
    assert torch.isfinite(ref_loss)
    assert terms.loss.item() == pytest.approx(ref_loss.item(), rel=1e-5)
    torch.testing.assert_close(student.states.grad.double(), ref_h, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(student.head_weight.grad.double(), ref_w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MASKABLE)
def test_fused_and_unfused_teacher_agree_on_masked_vocabulary(name):
    s_hidden, s_weight, t_hidden, t_weight, t_bias, targets = masked_problem(seed=1)
    spec = KDLossSpec(divergence=name, temperature=1.5, alpha=0.8)
    results = []
    for teacher in (LogitSource(t_hidden @ t_weight.t() + t_bias), LogitSource(t_hidden, t_weight, t_bias)):
        student = LogitSource(s_hidden.clone().requires_grad_(True), s_weight)
        terms = token_kd_loss(student, teacher, targets, spec)
        terms.loss.backward()
        results.append((terms.loss.detach(), student.states.grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-6, atol=0)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("reverse_kl", {}, "infinite where the teacher gives a token probability 0"),
        ("jsd", {"beta": 1.0}, "infinite where the teacher gives a token probability 0"),
        ("skew_reverse_kl", {"skew": 0.0}, "infinite where the teacher gives a token probability 0"),
        ("cosine", {}, "compares logits"),
    ],
)
@pytest.mark.parametrize("form", ["unfused", "fused"])
def test_divergences_without_a_finite_value_refuse_a_masked_teacher(name, params, message, form):
    s_hidden, s_weight, t_hidden, t_weight, t_bias, targets = masked_problem()
    teacher = (
        LogitSource(t_hidden @ t_weight.t() + t_bias) if form == "unfused" else LogitSource(t_hidden, t_weight, t_bias)
    )
    with pytest.raises(ValueError, match=message):
        token_kd_loss(LogitSource(s_hidden, s_weight), teacher, targets, KDLossSpec(divergence=name, **params))


@pytest.mark.parametrize(
    "bad_value, message", [(math.nan, "1 NaN, 0 \\+inf"), (math.inf, "0 NaN, 1 \\+inf")], ids=["nan", "posinf"]
)
@pytest.mark.parametrize("name", ["forward_kl", "jsd", "tvd"])
def test_nan_and_positive_inf_teacher_logits_stay_errors(bad_value, message, name):
    s_hidden, s_weight, t_hidden, t_weight, t_bias, targets = masked_problem()
    teacher_logits = t_hidden @ t_weight.t() + t_bias
    teacher_logits[2, 3] = bad_value
    with pytest.raises(ValueError, match=message):
        token_kd_loss(
            LogitSource(s_hidden, s_weight), LogitSource(teacher_logits), targets, KDLossSpec(divergence=name)
        )


def test_fully_masked_teacher_row_and_diverged_student_get_their_own_errors():
    s_hidden, s_weight, t_hidden, t_weight, _, targets = masked_problem()
    teacher_logits = t_hidden @ t_weight.t()
    teacher_logits[4] = -math.inf
    with pytest.raises(ValueError, match="-inf on every token at 1 target positions"):
        token_kd_loss(LogitSource(s_hidden, s_weight), LogitSource(teacher_logits), targets, KDLossSpec())
    s_hidden[1, 0] = math.nan
    with pytest.raises(ValueError, match="student's logits contain NaN/Inf"):
        token_kd_loss(LogitSource(s_hidden, s_weight), LogitSource(t_hidden, t_weight), targets, KDLossSpec())


# ---- 2. precomputed top-k columns: total mass 1 within float16 rounding, distinct ids --------------------------


def topk_columns_dataset(rows, vocab, k, value_dtype="float16", seed=0, scale=4.0):
    """Columns built here in float64 from heavy-tailed random logits (independently of the precompute code),
    then stored in `value_dtype` the way a capture stores them."""
    from datasets import Dataset

    from hf_distill.teachers.columns import TeacherSignalMetadata, attach_metadata

    rng = np.random.default_rng(seed)
    store = {"float16": np.float16, "float32": np.float32}[value_dtype]
    columns = {"input_ids": [], TOPK_IDS: [], TOPK_LOGPROBS: [], TOPK_TAIL: []}
    for length in rows:
        logits = rng.standard_t(3, size=(length, vocab)) * scale
        logits[0, 0] = 60.0  # one nearly certain position: log-probabilities just below 0
        log_p = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
        log_p -= logits.max(-1, keepdims=True)
        ids = np.argsort(-log_p, axis=-1)[:, :k]
        top = np.take_along_axis(log_p, ids, -1)
        columns["input_ids"].append(rng.integers(3, vocab, size=length).tolist())
        columns[TOPK_IDS].append(ids.astype(np.uint16).tolist())
        columns[TOPK_LOGPROBS].append(top.astype(store).tolist())
        columns[TOPK_TAIL].append(np.clip(1.0 - np.exp(top).sum(-1), 0.0, 1.0).astype(store).tolist())
    dataset = Dataset.from_dict(columns)
    metadata = TeacherSignalMetadata(
        mode="topk",
        teacher_name="synthetic",
        teacher_revision=None,
        tokenizer_hash="0" * 64,
        vocab_size=vocab,
        temperature=1.0,
        max_length=None,
        k=k,
        value_dtype=value_dtype,
    )
    return attach_metadata(dataset, metadata), metadata


def edit_position(dataset, row, column, edit):
    def change(example, index):
        if index == row:
            example[column] = edit(example[column])
        return example

    return dataset.map(change, with_indices=True)


@pytest.mark.parametrize("k", [1, 8, 64, 512])
@pytest.mark.parametrize("scale", [0.5, 4.0])
def test_float16_stored_topk_columns_pass_the_mass_check(k, scale):
    dataset, metadata = topk_columns_dataset([5, 9, 3], vocab=2048, k=k, scale=scale)
    validate_columns(dataset, metadata)


@pytest.mark.parametrize(
    "edit, message",
    [
        # Log-probabilities normalised over the wrong set (off by a constant): the mass is half what it should be.
        (lambda lp: [[v - 0.7 for v in pos] for pos in lp], "sum to"),
        # The most likely token's probability lost (overwritten by a near-zero entry) at one position.
        (lambda lp: [[-30.0] + pos[1:] if i == 3 else pos for i, pos in enumerate(lp)], "sum to"),
    ],
    ids=["shifted_logprobs", "dropped_token"],
)
def test_topk_mass_far_from_one_is_refused_naming_column_and_row(edit, message):
    dataset, metadata = topk_columns_dataset([5, 9, 3], vocab=256, k=8)
    broken = edit_position(dataset, 1, TOPK_LOGPROBS, edit)
    with pytest.raises(TeacherSignalError, match=f"{TOPK_LOGPROBS}.*{TOPK_TAIL}.*{message}.*row 1, position"):
        validate_columns(broken, metadata)


def test_tail_mass_that_does_not_complete_the_distribution_is_refused():
    dataset, metadata = topk_columns_dataset([6, 4], vocab=256, k=4, scale=0.5)  # flat: a large tail
    broken = edit_position(dataset, 0, TOPK_TAIL, lambda tail: [0.0] * len(tail))
    with pytest.raises(TeacherSignalError, match="row 0, position 1"):  # position 0 is nearly certain
        validate_columns(broken, metadata)


def test_mass_tolerance_is_tight_enough_to_catch_one_percent():
    from hf_distill.teachers.column_checks import mass_tolerance

    # float16's unit roundoff is 2^-11; the bound grows with log(k + 1) only.
    assert mass_tolerance("float16", 64) < 0.01
    assert mass_tolerance("float32", 64) < 1e-4
    dataset, metadata = topk_columns_dataset([4], vocab=512, k=64, scale=0.5)
    broken = edit_position(dataset, 0, TOPK_TAIL, lambda tail: [min(1.0, t + 0.01) for t in tail])
    with pytest.raises(TeacherSignalError, match="sum to 1.01"):
        validate_columns(broken, metadata)


def test_repeated_token_id_within_a_position_is_refused():
    dataset, metadata = topk_columns_dataset([5, 7], vocab=256, k=4)
    broken = edit_position(
        dataset, 1, TOPK_IDS, lambda ids: [p[:2] + p[:1] + p[3:] if i == 6 else p for i, p in enumerate(ids)]
    )
    with pytest.raises(TeacherSignalError, match=f"{TOPK_IDS}.*twice at row 1, position 6"):
        validate_columns(broken, metadata)


def test_same_id_at_different_positions_is_fine():
    dataset, metadata = topk_columns_dataset([5, 7], vocab=256, k=4)
    same = edit_position(dataset, 0, TOPK_IDS, lambda ids: [ids[0]] * len(ids))
    validate_columns(same, metadata)


# ---- 4-6. training datasets: empty, without target tokens, completion_mask, no processing_class ---------------

INPUT_CHECKS_LOGGER = "hf_distill.trainers.input_checks"


def build_trainer(tmp_path, train_dataset, processing_class="word", **overrides):
    from hf_distill import KDTrainer

    tokenizer = make_word_tokenizer() if processing_class == "word" else processing_class
    return KDTrainer(
        make_tiny_llama(),
        args=kd_args(tmp_path, **overrides),
        train_dataset=train_dataset,
        processing_class=tokenizer,
        teacher_model=make_tiny_llama(seed=1),
    )


def masked_rows(prompt_len=6, completion_len=3, rows=4, completion=1):
    from datasets import Dataset

    ids = [[1] + [5 + (i + j) % 50 for j in range(prompt_len + completion_len - 1)] for i in range(rows)]
    mask = [[0] * prompt_len + [completion] * completion_len for _ in range(rows)]
    return Dataset.from_dict({"input_ids": ids, "completion_mask": mask})


def test_empty_training_dataset_is_a_clear_error(tmp_path):
    from datasets import Dataset

    with pytest.raises(ValueError, match="train_dataset is empty"):
        build_trainer(tmp_path, Dataset.from_dict({"text": []}))


def test_dataset_emptied_by_truncation_names_the_likely_cause(tmp_path):
    # Every completion lies beyond max_length: TRL drops every (now fully masked) example.
    with pytest.raises(ValueError, match="none is left after SFT's preparation.*max_length"):
        build_trainer(tmp_path, masked_rows(prompt_len=8), completion_only_loss=True, max_length=6)


def test_dataset_without_target_tokens_warns(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger=INPUT_CHECKS_LOGGER):
        build_trainer(tmp_path, masked_rows(completion=0), completion_only_loss=True, max_length=None)
    warnings = [r.getMessage() for r in caplog.records if r.name == INPUT_CHECKS_LOGGER]
    assert len(warnings) == 1 and "no target tokens" in warnings[0] and "completion_only_loss" in warnings[0]


def test_dataset_with_target_tokens_does_not_warn(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger=INPUT_CHECKS_LOGGER):
        trainer = build_trainer(tmp_path, masked_rows(), completion_only_loss=True)
    assert not [r for r in caplog.records if r.name == INPUT_CHECKS_LOGGER]
    # TRL's rule with completion_only_loss=True: prompt tokens are -100, completion tokens their ids.
    row = trainer.train_dataset[0]
    assert row["labels"] == [-100] * 6 + row["input_ids"][6:]


def test_completion_mask_ignored_by_default_is_announced(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger=INPUT_CHECKS_LOGGER):
        trainer = build_trainer(tmp_path, masked_rows())
    warnings = [r.getMessage() for r in caplog.records if r.name == INPUT_CHECKS_LOGGER]
    assert len(warnings) == 1 and "completion_mask" in warnings[0] and "completion_only_loss=True" in warnings[0]
    row = trainer.train_dataset[0]
    assert row["labels"] == row["input_ids"]  # as in TRL: every token is a target


def test_student_from_config_without_processing_class_is_a_clear_error(tmp_path):
    from hf_distill import KDTrainer

    student = make_tiny_llama()
    assert not student.config._name_or_path
    with pytest.raises(ValueError, match="processing_class is required.*_name_or_path"):
        KDTrainer(
            student,
            args=kd_args(tmp_path),
            train_dataset=masked_rows(),
            data_collator=lambda rows: rows,
            teacher_model=make_tiny_llama(seed=1),
        )


def test_precomputed_columns_keep_prompt_masking_with_completion_only_loss(tmp_path):
    """docs/offline_kd.md: a carried `completion_mask` masks prompt tokens when completion_only_loss=True."""
    from hf_distill import KDTrainer
    from hf_distill.teachers.precompute import PrecomputeConfig, precompute_teacher_signal

    teacher = make_tiny_llama(seed=1)
    rows = masked_rows(prompt_len=5, completion_len=4)
    config = PrecomputeConfig(mode="topk", k=64, value_dtype="float32", temperature=2.0)
    signal = precompute_teacher_signal(
        teacher, make_word_tokenizer(), rows, tmp_path / "signal", config, progress=False
    )
    assert "completion_mask" in signal.column_names
    student = make_tiny_llama()
    trainer = KDTrainer(
        student,
        args=kd_args(tmp_path / "run", temperature=2.0, completion_only_loss=True),
        train_dataset=signal,
        processing_class=make_word_tokenizer(),
    )
    assert trainer.teacher_source.kind == "precomputed"
    assert trainer.train_dataset[0]["labels"] == [-100] * 5 + rows[0]["input_ids"][5:]
    batch = next(iter(trainer.get_train_dataloader()))
    assert int((batch["labels"] != -100).sum()) == 4 * len(rows)
    expected = reference_kd_loss(student, teacher, batch, 2.0, 0.5)
    assert trainer.compute_loss(trainer.model, batch).item() == pytest.approx(expected.item(), rel=2e-6)


def masked_vocabulary_teacher(masked_ids):
    """A tiny teacher whose lm_head bias is -inf on `masked_ids`: its logits give those tokens probability 0."""
    teacher = make_tiny_llama(seed=1, num_layers=3)
    bias = torch.zeros(teacher.config.vocab_size)
    bias[masked_ids] = -math.inf
    teacher.lm_head.bias = torch.nn.Parameter(bias, requires_grad=False)
    return teacher


@pytest.mark.parametrize("divergence", ["forward_kl", "jsd"])
def test_trainer_fused_and_unfused_agree_on_a_masked_teacher_vocabulary(tmp_path, divergence):
    from conftest import make_text_dataset

    from hf_distill import KDTrainer

    masked = [7, 8, 20, 33, 50]
    teacher = masked_vocabulary_teacher(masked)
    student = make_tiny_llama(seed=0)
    losses, grads = [], []
    for fused in (True, False):
        trainer = KDTrainer(
            model=student,
            teacher_model=teacher,
            args=kd_args(tmp_path / str(fused), temperature=2.0, alpha=0.5, divergence=divergence, fused_lm_head=fused),
            train_dataset=make_text_dataset(),
            processing_class=make_word_tokenizer(),
        )
        assert trainer.use_fused_head is fused
        batch = next(iter(trainer.get_train_dataloader()))
        student.zero_grad()
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        losses.append(loss.detach())
        grads.append(student.lm_head.weight.grad.clone())

    # float64 reference from plain model calls, with the masked tokens at probability exactly 0.
    with torch.no_grad():
        s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()[:, :-1]
        t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()[:, :-1]
    labels = batch["labels"][:, 1:]
    valid = labels != -100
    assert torch.isneginf(t[valid][:, masked]).all()
    soft = masked_reference_divergence(divergence, s[valid] / 2.0, t[valid] / 2.0)
    hard = torch.nn.functional.cross_entropy(s[valid], labels[valid], reduction="none")
    expected = (0.5 * 4.0 * soft + 0.5 * hard).mean()
    assert torch.isfinite(losses[0])
    assert losses[0].item() == pytest.approx(expected.item(), rel=1e-5)
    assert losses[1].item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_repeated_token_id_in_sampled_columns_is_refused(tmp_path):
    """Sampled columns are ragged (a different number of distinct ids per position)."""
    from test_offline_precompute import token_rows

    from hf_distill.teachers.columns import SAMPLE_IDS, read_attached_metadata
    from hf_distill.teachers.precompute import PrecomputeConfig, precompute_teacher_signal

    config = PrecomputeConfig(mode="sampled", num_samples=16, batch_size=4)
    signal = precompute_teacher_signal(
        make_tiny_llama(seed=1), make_word_tokenizer(), token_rows(4), tmp_path, config, progress=False
    )
    metadata = read_attached_metadata(signal)
    validate_columns(signal, metadata)
    row = signal[2][SAMPLE_IDS]
    position = next(i for i, ids in enumerate(row) if len(ids) >= 2)
    repeated_id = row[position][0]

    def repeat_first(ids):
        ids = [list(p) for p in ids]
        ids[position][1] = ids[position][0]
        return ids

    broken = edit_position(signal, 2, SAMPLE_IDS, repeat_first)
    with pytest.raises(TeacherSignalError, match=f"id {repeated_id} twice at row 2, position {position}"):
        validate_columns(broken, metadata)
