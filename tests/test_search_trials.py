"""Hyperparameter-search trials change the loss: a trial's temperature, alpha, divergence and feature weights are
read from `args` when `Trainer.train(trial=...)` sets the trial up, not frozen at construction.

No search library is installed here, so each test drives `train(trial=...)` the way transformers' Optuna loop
does (`trainer.train(trial=trial)` with `hp_search_backend` and `hp_space` set), with a stand-in trial object.
"""

from __future__ import annotations

import pytest
import torch
import transformers.integrations
from conftest import kd_args, make_text_dataset, make_tiny_llama, make_word_tokenizer, reference_kd_loss
from test_feature_trainer import build as build_feature_trainer
from test_feature_trainer import reference_loss as reference_feature_loss
from transformers.trainer_utils import HPSearchBackend

from hf_distill import KDTrainer


class StandInTrial:
    """What the Trainer reads from an Optuna trial: its number and its parameters."""

    def __init__(self, params: dict) -> None:
        self.number = 0
        self.params = params


@pytest.fixture
def search_backend(monkeypatch):
    """Make `trainer.train(trial=...)` treat a `StandInTrial` as an Optuna trial (optuna is not installed)."""
    monkeypatch.setattr(transformers.integrations, "hp_params", lambda trial: trial.params)

    def attach(trainer):
        trainer.hp_search_backend = HPSearchBackend.OPTUNA
        trainer.hp_space = lambda trial: trial.params
        return trainer

    return attach


def set_up_trial(trainer, params: dict) -> None:
    """The part of `Trainer.train(trial=...)` that applies a trial, without training."""
    trainer._hp_search_setup(StandInTrial(params))


def kd_trainer(tmp_path, **overrides) -> KDTrainer:
    return KDTrainer(
        model=make_tiny_llama(seed=0),
        teacher_model=make_tiny_llama(seed=1, num_layers=3),
        args=kd_args(tmp_path, **overrides),
        train_dataset=make_text_dataset(),
        processing_class=make_word_tokenizer(),
    )


def reference_reverse_kl_loss(student, teacher, batch, temperature, alpha):
    """alpha * T^2 * KL(q_T || p_T) + (1 - alpha) * CE, mean over target tokens, float64."""
    kwargs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    with torch.no_grad():
        s = student(**kwargs).logits.double()[:, :-1]
        t = teacher(**kwargs).logits.double()[:, :-1]
    labels = batch["labels"][:, 1:]
    valid = labels != -100
    log_q = torch.log_softmax(s[valid] / temperature, -1)
    log_p = torch.log_softmax(t[valid] / temperature, -1)
    reverse = (log_q.exp() * (log_q - log_p)).sum(-1)
    ce = -torch.log_softmax(s[valid], -1).gather(1, labels[valid].unsqueeze(1)).squeeze(1)
    return (alpha * temperature**2 * reverse + (1 - alpha) * ce).mean()


def test_trial_temperature_and_alpha_set_the_loss(tmp_path, search_backend):
    trainer = search_backend(kd_trainer(tmp_path, temperature=2.0, alpha=0.5))
    set_up_trial(trainer, {"temperature": 3.5, "alpha": 0.8})
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(trainer.model, batch)
    expected = reference_kd_loss(trainer.model, trainer.teacher_model, batch, temperature=3.5, alpha=0.8)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    at_constructor = reference_kd_loss(trainer.model, trainer.teacher_model, batch, temperature=2.0, alpha=0.5)
    assert abs(loss.item() - at_constructor.item()) > 1e-3


def test_trial_run_logs_the_trial_temperature(tmp_path, search_backend):
    trainer = search_backend(kd_trainer(tmp_path, temperature=2.0, alpha=0.5, max_steps=2))
    trainer.train(trial=StandInTrial({"temperature": 5.0, "alpha": 0.25}))
    logged = [(e["temperature"], e["alpha"]) for e in trainer.state.log_history if "temperature" in e]
    assert logged == [(5.0, 0.25), (5.0, 0.25)]
    assert trainer.state.trial_params == {"temperature": 5.0, "alpha": 0.25}


def test_trial_divergence_sets_the_loss(tmp_path, search_backend):
    trainer = search_backend(kd_trainer(tmp_path, temperature=2.0, alpha=0.5, divergence="forward_kl"))
    set_up_trial(trainer, {"divergence": "reverse_kl", "temperature": 1.5})
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(trainer.model, batch)
    expected = reference_reverse_kl_loss(trainer.model, trainer.teacher_model, batch, temperature=1.5, alpha=0.5)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_trial_feature_weights_set_the_loss(tmp_path, search_backend):
    pairs = [(0, 1), (1, 2)]
    trainer = search_backend(
        build_feature_trainer(
            tmp_path,
            feature_layer_map="explicit",
            feature_layer_pairs=[f"{s}:{t}" for s, t in pairs],
            hidden_loss_weight=0.7,
            attention_loss_weight=30.0,
        )
    )
    set_up_trial(trainer, {"hidden_loss_weight": 2.5, "attention_loss_weight": 5.0, "temperature": 1.25})
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(trainer.model, batch)
    expected = reference_feature_loss(trainer, batch, pairs, hidden_weight=2.5, attention_weight=5.0)
    assert trainer.args.temperature == 1.25  # the reference reads it from args
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_feature_term_off_at_construction_cannot_be_searched(tmp_path, search_backend):
    trainer = search_backend(build_feature_trainer(tmp_path, hidden_loss_weight=1.0, attention_loss_weight=0.0))
    with pytest.raises(ValueError, match="attention_loss_weight.*was 0 when"):
        set_up_trial(trainer, {"attention_loss_weight": 1.0})


@pytest.mark.parametrize(
    "params, message",
    [
        ({"temperature": 0.0}, "temperature"),
        ({"alpha": 1.5}, "alpha"),
        ({"divergence": "hellinger"}, "divergence"),
    ],
)
def test_bad_trial_values_are_refused_when_the_trial_starts(tmp_path, search_backend, params, message):
    trainer = search_backend(kd_trainer(tmp_path))
    with pytest.raises(ValueError, match=message):
        set_up_trial(trainer, params)


def test_model_init_builds_a_fresh_student_per_trial(tmp_path, search_backend):
    built = []

    def model_init(trial):
        built.append(trial)
        return make_tiny_llama(seed=0)

    trainer = KDTrainer(
        model=None,
        model_init=model_init,
        teacher_model=make_tiny_llama(seed=1),
        args=kd_args(tmp_path, max_steps=1),
        train_dataset=make_text_dataset(),
        processing_class=make_word_tokenizer(),
    )
    search_backend(trainer)
    trial = StandInTrial({"temperature": 3.0})
    trainer.train(trial=trial)
    assert built == [None, trial]
    assert [e["temperature"] for e in trainer.state.log_history if "temperature" in e] == [3.0]


def test_model_init_with_peft_config_is_refused(tmp_path):
    from peft import LoraConfig

    with pytest.raises(ValueError, match="model_init and peft_config"):
        KDTrainer(
            model=None,
            model_init=lambda: make_tiny_llama(seed=0),
            teacher_model=make_tiny_llama(seed=1),
            args=kd_args(tmp_path),
            train_dataset=make_text_dataset(),
            processing_class=make_word_tokenizer(),
            peft_config=LoraConfig(r=2, target_modules=["q_proj"]),
        )
