"""`find_temperature`: held-out KD loss per temperature against the float64 textbook formula; no training."""

from __future__ import annotations

import pytest
import torch
from conftest import kd_args, make_text_dataset, make_tiny_llama, make_word_tokenizer, reference_kd_loss

from hf_distill import KDTrainer, find_temperature


def build(tmp_path, **overrides) -> KDTrainer:
    return KDTrainer(
        model=make_tiny_llama(seed=0),
        teacher_model=make_tiny_llama(seed=1, num_layers=3),
        args=kd_args(tmp_path, per_device_eval_batch_size=8, **overrides),
        train_dataset=make_text_dataset(),
        eval_dataset=make_text_dataset(num_rows=8, seed=5),
        processing_class=make_word_tokenizer(),
    )


def reference_ce(student, batch):
    with torch.no_grad():
        s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()[:, :-1]
    labels = batch["labels"][:, 1:]
    valid = labels != -100
    return (-torch.log_softmax(s[valid], -1).gather(1, labels[valid].unsqueeze(1))).mean()


@pytest.mark.parametrize("alpha", [None, 1.0, 0.2])
def test_scores_equal_the_formula_at_each_temperature(tmp_path, alpha):
    trainer = build(tmp_path, temperature=2.0, alpha=0.5)
    batch = next(iter(trainer.get_eval_dataloader()))  # the whole held-out set in one batch
    result = find_temperature(trainer, [0.5, 1.0, 3.0], alpha=alpha)
    weight = 0.5 if alpha is None else alpha
    assert [s.temperature for s in result.scores] == [0.5, 1.0, 3.0]
    for score in result.scores:
        expected = reference_kd_loss(trainer.model, trainer.teacher_model, batch, score.temperature, weight)
        assert score.kd_loss == pytest.approx(expected.item(), rel=1e-5)
        kl_only = reference_kd_loss(trainer.model, trainer.teacher_model, batch, score.temperature, 1.0)
        assert score.divergence == pytest.approx(kl_only.item() / score.temperature**2, rel=1e-5)
        assert score.cross_entropy == pytest.approx(reference_ce(trainer.model, batch).item(), rel=1e-5)
        assert score.num_tokens == int((batch["labels"][:, 1:] != -100).sum())
    assert result.best.kd_loss == min(s.kd_loss for s in result.scores)
    assert "best" in result.table()


def test_student_and_trainer_are_left_as_they_were(tmp_path):
    trainer = build(tmp_path, temperature=2.0)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.model.train()
    find_temperature(trainer, [1.0, 4.0], max_batches=1)
    assert trainer.model.training
    assert trainer.loss_spec.temperature == 2.0
    assert all(torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())


@pytest.mark.parametrize(
    "temperatures, message", [([], "at least one"), ([1.0, 0.0], "temperature"), ([2.0, 2.0], "distinct")]
)
def test_bad_temperature_lists_are_refused(tmp_path, temperatures, message):
    with pytest.raises(ValueError, match=message):
        find_temperature(build(tmp_path), temperatures)


def test_without_held_out_data_is_refused(tmp_path):
    trainer = KDTrainer(
        model=make_tiny_llama(seed=0),
        teacher_model=make_tiny_llama(seed=1),
        args=kd_args(tmp_path),
        train_dataset=make_text_dataset(),
        processing_class=make_word_tokenizer(),
    )
    with pytest.raises(ValueError, match="held-out data"):
        find_temperature(trainer, [1.0])


def test_cli_scores_saved_models_and_writes_json(tmp_path, capsys):
    import json

    from datasets import Dataset

    from hf_distill.cli import main

    tokenizer = make_word_tokenizer()
    for name, seed in (("student", 0), ("teacher", 1)):
        make_tiny_llama(seed=seed).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    Dataset.from_dict({"text": make_text_dataset(num_rows=4)["text"]}).to_json(tmp_path / "held_out.jsonl")
    argv = [
        "find-temperature",
        *("--student", str(tmp_path / "student"), "--teacher_model_name_or_path", str(tmp_path / "teacher")),
        *("--dataset", str(tmp_path / "held_out.jsonl"), "--temperatures", "1", "3", "--num_rows", "4"),
        *("--output_dir", str(tmp_path / "out"), "--use_cpu", "true", "--out", str(tmp_path / "scores.json")),
    ]
    assert main(argv) == 0
    assert "lowest held-out KD loss at T=" in capsys.readouterr().out
    scores = json.loads((tmp_path / "scores.json").read_text())["scores"]
    assert [s["temperature"] for s in scores] == [1.0, 3.0]
    assert all(s["kd_loss"] > 0 for s in scores)
