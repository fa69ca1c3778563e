"""Mutual learning and online distillation: the loss against a float64 formula, one step against the seed's
hand-written loop (separate optimizers and learning rates), gradient accumulation, resume (every model and every
optimizer bit-identical), exports, logs and bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import kd_args, make_text_dataset, make_tiny_llama, make_word_tokenizer

from hf_distill import MutualKDConfig, MutualKDTrainer, OnlineKDConfig, OnlineKDTrainer

ALPHA, T = 0.5, 2.0


def _mutual(tmp_path, peers, rows=8, **overrides):
    values = dict(max_steps=2, alpha=ALPHA, temperature=T)
    values.update(overrides)
    return MutualKDTrainer(
        model=make_tiny_llama(seed=0),
        peers=peers,
        args=kd_args(tmp_path, config_class=MutualKDConfig, **values),
        train_dataset=make_text_dataset(num_rows=rows),
        processing_class=make_word_tokenizer(),
    )


def _online(tmp_path, rows=8, **overrides):
    values = dict(max_steps=2, alpha=ALPHA, temperature=T)
    values.update(overrides)
    return OnlineKDTrainer(
        model=make_tiny_llama(seed=0),
        teacher_model=make_tiny_llama(seed=1, hidden_size=48),
        args=kd_args(tmp_path, config_class=OnlineKDConfig, **values),
        train_dataset=make_text_dataset(num_rows=rows),
        processing_class=make_word_tokenizer(),
    )


def _logits64(model, batch):
    with torch.no_grad():
        return model.double()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _reference(logits, teachers_of, batch):
    """Sum over models of the mean over target tokens of (1-alpha)*CE + alpha*T^2*mean_l KL(p_l || p_m), float64."""
    labels = batch["labels"][:, 1:]
    valid = labels != -100
    total = 0.0
    for name, own in logits.items():
        z = own[:, :-1][valid]
        ce = -torch.log_softmax(z, -1).gather(1, labels[valid].unsqueeze(1)).squeeze(1)
        loss = ce if not teachers_of[name] else (1 - ALPHA) * ce
        for other in teachers_of[name]:
            log_p = torch.log_softmax(logits[other][:, :-1][valid] / T, -1)
            log_q = torch.log_softmax(z / T, -1)
            kl = (log_p.exp() * (log_p - log_q)).sum(-1)
            loss = loss + ALPHA * T**2 * kl / len(teachers_of[name])
        total = total + loss.mean()
    return total


def test_mutual_loss_of_three_models_equals_float64_reference(tmp_path):
    trainer = _mutual(tmp_path, [make_tiny_llama(seed=1), make_tiny_llama(seed=2, num_layers=1)])
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(trainer.model, batch)
    logits = {
        "student": _logits64(make_tiny_llama(seed=0), batch),
        "peer1": _logits64(make_tiny_llama(seed=1), batch),
        "peer2": _logits64(make_tiny_llama(seed=2, num_layers=1), batch),
    }
    teachers_of = {"student": ["peer1", "peer2"], "peer1": ["student", "peer2"], "peer2": ["student", "peer1"]}
    assert loss.item() == pytest.approx(_reference(logits, teachers_of, batch).item(), rel=1e-5)


def test_online_loss_equals_float64_reference(tmp_path):
    trainer = _online(tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(trainer.model, batch)
    logits = {
        "student": _logits64(make_tiny_llama(seed=0), batch),
        "teacher": _logits64(make_tiny_llama(seed=1, hidden_size=48), batch),
    }
    teachers_of = {"student": ["teacher"], "teacher": []}
    assert loss.item() == pytest.approx(_reference(logits, teachers_of, batch).item(), rel=1e-5)


def _hand_step(models, lrs, teachers_of, batch):
    """The seed's train_step: every model's forward first, then each loss (others detached) and its own SGD step."""
    optimizers = {name: torch.optim.SGD(model.parameters(), lr=lrs[name]) for name, model in models.items()}
    logits = {
        name: m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        for name, m in models.items()
    }
    labels = batch["labels"][:, 1:]
    count = (labels != -100).sum()
    for name, own in logits.items():
        z = own[:, :-1].flatten(0, 1)
        ce = F.cross_entropy(z, labels.flatten(), reduction="sum")
        ok = labels.flatten() != -100
        loss = ce if not teachers_of[name] else (1 - ALPHA) * ce
        for other in teachers_of[name]:
            target = logits[other][:, :-1].flatten(0, 1).detach()[ok]
            kl = F.kl_div(F.log_softmax(z[ok] / T, -1), F.log_softmax(target / T, -1), log_target=True, reduction="sum")
            loss = loss + ALPHA * T**2 * kl / len(teachers_of[name])
        optimizers[name].zero_grad()
        (loss / count).backward(retain_graph=True)
    for optimizer in optimizers.values():
        optimizer.step()


def _assert_same_weights(expected, actual, **tolerance):
    for (name, a), b in zip(expected.named_parameters(), actual.parameters()):
        torch.testing.assert_close(b, a, msg=name, **tolerance)


def test_mutual_step_equals_the_seeds_loop_with_separate_learning_rates(tmp_path):
    trainer = _mutual(
        tmp_path, [make_tiny_llama(seed=1)], rows=4, max_steps=1, optim="sgd", learning_rate=0.5,
        peer_learning_rates=[0.2], max_grad_norm=0.0,
    )  # fmt: skip
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.train()
    models = {"student": make_tiny_llama(seed=0), "peer1": make_tiny_llama(seed=1)}
    _hand_step(models, {"student": 0.5, "peer1": 0.2}, {"student": ["peer1"], "peer1": ["student"]}, batch)
    _assert_same_weights(models["student"], trainer.model, rtol=1e-5, atol=1e-6)
    _assert_same_weights(models["peer1"], trainer.peers[0].module, rtol=1e-5, atol=1e-6)


def test_online_step_equals_the_seeds_loop(tmp_path):
    trainer = _online(
        tmp_path, rows=4, max_steps=1, optim="sgd", learning_rate=0.5, teacher_learning_rate=0.1, max_grad_norm=0.0
    )
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.train()
    models = {"student": make_tiny_llama(seed=0), "teacher": make_tiny_llama(seed=1, hidden_size=48)}
    _hand_step(models, {"student": 0.5, "teacher": 0.1}, {"student": ["teacher"], "teacher": []}, batch)
    _assert_same_weights(models["student"], trainer.model, rtol=1e-5, atol=1e-6)
    _assert_same_weights(models["teacher"], trainer.peers[0].module, rtol=1e-5, atol=1e-6)


def test_gradient_accumulation_matches_one_large_batch(tmp_path):
    def run(output_dir, batch, accumulation):
        trainer = _mutual(
            output_dir, [make_tiny_llama(seed=1)], rows=4, max_steps=1, optim="sgd", learning_rate=0.5,
            per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation, max_grad_norm=0.0,
        )  # fmt: skip
        trainer.train()
        return trainer

    big, small = run(tmp_path / "big", 4, 1), run(tmp_path / "small", 2, 2)
    _assert_same_weights(big.model, small.model, rtol=1e-5, atol=1e-6)
    _assert_same_weights(big.peers[0].module, small.peers[0].module, rtol=1e-5, atol=1e-6)


def test_resume_is_bit_identical_for_every_model_and_optimizer(tmp_path):
    def run(output_dir, max_steps, resume=None):
        trainer = _mutual(
            output_dir, [make_tiny_llama(seed=1), make_tiny_llama(seed=2)], max_steps=max_steps, optim="adamw_torch",
            lr_scheduler_type="linear", peer_learning_rates=[5e-3, 2e-2], save_strategy="steps", save_steps=3,
        )  # fmt: skip
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    # A linear schedule depends on max_steps, so the interrupted run is the same 6-step run, resumed from its
    # step-3 checkpoint.
    full = run(tmp_path / "full", 6)
    resumed = run(tmp_path / "resumed", 6, resume=str(tmp_path / "full" / "checkpoint-3"))
    pairs = [(full.model, resumed.model, full.optimizer, resumed.optimizer)]
    pairs += [(a.module, b.module, a.optimizer, b.optimizer) for a, b in zip(full.peers, resumed.peers)]
    for model_a, model_b, opt_a, opt_b in pairs:
        for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
            assert torch.equal(a, b), name
        state_a, state_b = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
        assert state_a.keys() == state_b.keys() and state_a
        for key in state_a:
            for field in ("exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(state_a[key][field], state_b[key][field]), (key, field)
    for a, b in zip(full.peers, resumed.peers):
        assert a.scheduler.state_dict() == b.scheduler.state_dict()
        assert a.current_lr == b.current_lr


def test_exports_and_logs_name_every_model(tmp_path):
    from transformers import AutoModelForCausalLM

    trainer = _online(tmp_path / "run", teacher_learning_rate=3e-3)
    trainer.train()
    logged = trainer.state.log_history[0]
    for name in ("student_loss", "student_hard_loss", "student_soft_loss", "teacher_loss", "teacher_hard_loss"):
        assert name in logged, name
    assert "teacher_soft_loss" not in logged
    assert logged["teacher_learning_rate"] == pytest.approx(3e-3)
    out = tmp_path / "export"
    trainer.save_model(str(out))
    ids = torch.tensor([[1, 5, 9, 12, 7]])
    student = AutoModelForCausalLM.from_pretrained(str(out))
    teacher = AutoModelForCausalLM.from_pretrained(str(out / "teacher"))
    with torch.no_grad():
        torch.testing.assert_close(student(ids).logits, trainer.model(ids).logits, rtol=0, atol=0)
        torch.testing.assert_close(teacher(ids).logits, trainer.peers[0].module(ids).logits, rtol=0, atol=0)
    assert "online distillation" in (out / "teacher" / "README.md").read_text()
    card = (out / "README.md").read_text()
    assert "online distillation" in card and "teacher (teacher/)" in card


def test_lora_peer_trains_its_adapters_only(tmp_path):
    from peft import LoraConfig, get_peft_model

    peer = get_peft_model(
        make_tiny_llama(seed=1),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    before = {n: p.detach().clone() for n, p in peer.named_parameters()}
    trainer = _mutual(tmp_path, [peer])
    trainer.train()
    changed = {n for n, p in peer.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="vocabulary rows"):
        _mutual(tmp_path, [make_tiny_llama(seed=1, vocab_size=32)])
    twice = make_tiny_llama(seed=1)
    with pytest.raises(ValueError, match="given twice"):
        _mutual(tmp_path, [twice, twice])
    with pytest.raises(ValueError, match="2 entries for 1 peers"):
        _mutual(tmp_path, [make_tiny_llama(seed=1)], peer_learning_rates=[1e-3, 1e-3]).train()
    with pytest.raises(ValueError, match="needs `teacher_model`"):
        OnlineKDTrainer(model=make_tiny_llama(), args=kd_args(tmp_path, config_class=OnlineKDConfig))
    with pytest.raises(ValueError, match="teacher_learning_rate"):
        kd_args(tmp_path, config_class=OnlineKDConfig, teacher_learning_rate=0.0)
    with pytest.raises(ValueError, match="frozen teacher"):
        kd_args(tmp_path, config_class=MutualKDConfig, teacher_model_name_or_path="some/teacher")


def test_lora_student_with_a_full_peer_and_evaluation_logs_each_model(tmp_path):
    from peft import LoraConfig

    trainer = MutualKDTrainer(
        model=make_tiny_llama(seed=0),
        peers=[make_tiny_llama(seed=1)],
        args=kd_args(tmp_path, config_class=MutualKDConfig, max_steps=2),
        train_dataset=make_text_dataset(num_rows=8),
        eval_dataset=make_text_dataset(num_rows=4, seed=3),
        processing_class=make_word_tokenizer(),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    peer_before = {n: p.detach().clone() for n, p in trainer.peers[0].module.named_parameters()}
    trainer.train()
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert all(not torch.equal(p, peer_before[n]) for n, p in trainer.peers[0].module.named_parameters() if "proj" in n)
    metrics = trainer.evaluate()
    for name in ("eval_student_loss", "eval_student_soft_loss", "eval_peer1_hard_loss"):
        assert name in metrics, sorted(metrics)


def test_resuming_from_a_checkpoint_without_the_peers_is_refused(tmp_path):
    from hf_distill import KDConfig, KDTrainer

    KDTrainer(
        model=make_tiny_llama(seed=0),
        teacher_model=make_tiny_llama(seed=1),
        args=kd_args(tmp_path / "kd", config_class=KDConfig, save_strategy="steps", save_steps=1, max_steps=1),
        train_dataset=make_text_dataset(num_rows=4),
        processing_class=make_word_tokenizer(),
    ).train()
    trainer = _mutual(tmp_path / "mutual", [make_tiny_llama(seed=1)])
    with pytest.raises(ValueError, match="no state for the co-trained model 'peer1'"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "kd" / "checkpoint-1"))


def test_push_to_hub_uploads_the_teacher_beside_the_student(tmp_path):
    from pathlib import Path
    from unittest import mock

    trainer = _online(tmp_path, hub_model_id="someone/online-student")
    trainer.train()
    uploaded = {}

    def fake_upload(**kwargs):
        folder = Path(kwargs["folder_path"])
        uploaded["files"] = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        return "commit-url"

    api = mock.MagicMock()
    api.create_repo.return_value = mock.MagicMock(repo_id="someone/online-student")
    api.upload_folder.side_effect = fake_upload
    with mock.patch("transformers.trainer.hf_api", return_value=api):
        trainer.push_to_hub()
    for name in ("model.safetensors", "README.md", "teacher/model.safetensors", "teacher/README.md"):
        assert name in uploaded["files"], uploaded["files"]


def test_mutual_trainer_follows_the_alpha_schedule(tmp_path):
    """loss_weight_schedules reaches the co-trained loss: step 0 uses the configured alpha, step 1 the scheduled one."""
    from transformers import TrainerCallback

    trainer = _mutual(tmp_path, [make_tiny_llama(seed=1)], loss_weight_schedules={"alpha": "step:1:0.2"})
    seen = []

    class RecordAlpha(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.append(trainer.loss_spec.alpha)

    trainer.add_callback(RecordAlpha())
    trainer.train()
    assert seen == [pytest.approx(ALPHA), pytest.approx(0.2)]
