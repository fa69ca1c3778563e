"""MTP self-distillation: the loss against a float64 formula written out by hand, one step against a hand-written
training loop, the exported student (plain transformers, no auxiliary parameters), resume, and bad settings."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import kd_args, make_text_dataset, make_tiny_llama, make_word_tokenizer

from hf_distill import MTPConfig, MTPHeads, MTPTrainer

T_MTP = 2.0


def _trainer(tmp_path, student, teacher=None, rows=8, **overrides):
    values = dict(mtp_num_heads=2, max_steps=2, alpha=0.5, temperature=2.0)
    values.update(overrides)
    return MTPTrainer(
        model=student,
        teacher_model=teacher,
        args=kd_args(tmp_path, config_class=MTPConfig, **values),
        train_dataset=make_text_dataset(num_rows=rows),
        processing_class=make_word_tokenizer(),
    )


def _randomise(heads: torch.nn.Module, seed: int = 1) -> None:
    """Heads start as copies of the main head; random values make every term of the reference matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in heads.parameters():
            param.add_(0.2 * torch.randn(param.shape, generator=generator, dtype=param.dtype))


def _head_states(hidden, heads, eps=1e-6):
    """The chained blocks written out: h_d = h_{d-1} + down(silu(up(rms_norm(h_{d-1}))))."""
    states, h = [], hidden
    for block in heads.blocks:
        w_norm, w_up, w_down = (block.norm.weight.double(), block.up.weight.double(), block.down.weight.double())
        normed = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * w_norm
        h = h + F.silu(normed @ w_up.T) @ w_down.T
        states.append(h)
    return states


def _reference_loss(student, heads, batch, teacher=None, alpha=0.5, temperature=2.0, tied=False):
    """Mean over main target tokens of: main term (CE, or alpha*T^2*KL + (1-alpha)*CE with a teacher) plus, per
    head d, 0.3 * CE(token i+d+1) + 0.1 * T^2 * KL(main[i+d] || head_d[i]) at T=2; float64 throughout."""
    student = copy.deepcopy(student).double()
    with torch.no_grad():
        hidden = student.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        hidden = hidden.last_hidden_state.double()
        w = student.lm_head.weight.double()
        main = hidden @ w.T
        labels = batch["labels"]
        targets = torch.full_like(labels, -100)
        targets[:, :-1] = labels[:, 1:]
        valid = targets != -100
        ce = -torch.log_softmax(main[valid], -1).gather(1, targets[valid].unsqueeze(1)).squeeze(1)
        total = ce.sum()
        if teacher is not None:
            t = teacher.double()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            log_p = torch.log_softmax(t[valid].double() / temperature, -1)
            log_q = torch.log_softmax(main[valid] / temperature, -1)
            kl = (log_p.exp() * (log_p - log_q)).sum(-1)
            total = (alpha * temperature**2 * kl + (1 - alpha) * ce).sum()
        seq = hidden.shape[1]
        for depth, states in enumerate(_head_states(hidden, heads), start=1):
            proj = w if tied else heads.projections[depth - 1].weight.double()
            bias = 0.0 if tied else heads.projections[depth - 1].bias.double()
            aux = (states @ proj.T + bias)[:, : seq - depth]
            lagged_main = main[:, depth:]
            tgt = targets[:, depth:]
            ok = tgt != -100
            aux_ce = -torch.log_softmax(aux[ok], -1).gather(1, tgt[ok].unsqueeze(1)).squeeze(1)
            log_p = torch.log_softmax(lagged_main[ok] / T_MTP, -1)
            log_q = torch.log_softmax(aux[ok] / T_MTP, -1)
            kl = (log_p.exp() * (log_p - log_q)).sum(-1)
            total = total + 0.3 * aux_ce.sum() + 0.1 * T_MTP**2 * kl.sum()
        return total / valid.sum()


@pytest.mark.parametrize("with_teacher,tied", [(False, False), (False, True), (True, False)])
def test_loss_equals_float64_reference(tmp_path, with_teacher, tied):
    teacher = make_tiny_llama(seed=1) if with_teacher else None
    trainer = _trainer(tmp_path, make_tiny_llama(seed=0), teacher, mtp_tie_projection=tied)
    _randomise(trainer.mtp_heads)
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(trainer.model, batch)
    heads64 = copy.deepcopy(trainer.mtp_heads).double()
    expected = _reference_loss(
        trainer.model, heads64, batch, make_tiny_llama(seed=1) if with_teacher else None, tied=tied
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_one_step_equals_a_hand_written_loop(tmp_path):
    # Four rows, batch of four: the trainer's single step sees exactly the rows the loop sees.
    trainer = _trainer(
        tmp_path, make_tiny_llama(seed=0), rows=4, max_steps=1, optim="sgd", learning_rate=0.5, max_grad_norm=0.0
    )
    _randomise(trainer.mtp_heads)
    heads = copy.deepcopy(trainer.mtp_heads)
    model = make_tiny_llama(seed=0)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.train()

    # The seed's algorithm: main CE, then per head CE on token i+d+1 and T^2 KL to the detached main head.
    optimizer = torch.optim.SGD([*model.parameters(), *heads.parameters()], lr=0.5)
    hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    main = model.lm_head(hidden)
    labels = batch["labels"]
    count = (labels[:, 1:] != -100).sum()
    loss = F.cross_entropy(main[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), reduction="sum")
    h = hidden
    for depth in (1, 2):
        h = heads.blocks[depth - 1](h)
        aux = heads.projections[depth - 1](h)[:, : -(depth + 1)]
        tgt = labels[:, depth + 1 :]
        ok = tgt != -100
        aux_ce = F.cross_entropy(aux.flatten(0, 1), tgt.flatten(), reduction="sum")
        teacher = main[:, depth:-1].detach()[ok]
        kl = F.kl_div(
            F.log_softmax(aux[ok] / T_MTP, -1), F.log_softmax(teacher / T_MTP, -1), log_target=True, reduction="sum"
        )
        loss = loss + 0.3 * aux_ce + 0.1 * T_MTP**2 * kl
    (loss / count).backward()
    optimizer.step()

    for (name, expected), actual in zip(model.named_parameters(), trainer.model.parameters()):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6, msg=name)
    for (name, expected), actual in zip(heads.named_parameters(), trainer.mtp_heads.parameters()):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6, msg=name)


def test_exported_student_is_a_plain_model_and_heads_are_saved_beside_it(tmp_path):
    from transformers import AutoModelForCausalLM

    trainer = _trainer(tmp_path / "run", make_tiny_llama(seed=0))
    trainer.train()
    out = tmp_path / "export"
    trainer.save_model(str(out))
    loaded = AutoModelForCausalLM.from_pretrained(str(out))
    assert set(loaded.state_dict()) == set(make_tiny_llama(seed=0).state_dict())
    ids = torch.tensor([[1, 5, 9, 12, 7]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, trainer.model(ids).logits, rtol=0, atol=0)
    heads = MTPHeads.from_folder(str(out))
    for (name, saved), trained in zip(heads.state_dict().items(), trainer.mtp_heads.state_dict().values()):
        assert torch.equal(saved, trained.cpu()), name
    card = (out / "README.md").read_text()
    assert "multi-token-prediction self-distillation" in card and "own main head" in card
    # The heads did learn (the block's output layer started at zero).
    assert trainer.mtp_heads.blocks[0].down.weight.abs().max() > 0


def test_resume_is_bit_identical_for_student_heads_and_optimizer(tmp_path):
    def run(output_dir, max_steps, resume=None):
        trainer = _trainer(
            output_dir, make_tiny_llama(seed=0), max_steps=max_steps, optim="adamw_torch", save_strategy="steps",
            save_steps=3,
        )  # fmt: skip
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = run(tmp_path / "full", 6)
    run(tmp_path / "part", 3)
    resumed = run(tmp_path / "part", 6, resume=str(tmp_path / "part" / "checkpoint-3"))
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    for (name, a), b in zip(full.mtp_heads.state_dict().items(), resumed.mtp_heads.state_dict().values()):
        assert torch.equal(a, b), name
    full_state, resumed_state = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert full_state.keys() == resumed_state.keys()
    for key in full_state:
        for field in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(full_state[key][field], resumed_state[key][field]), (key, field)


def test_logs_name_each_heads_terms(tmp_path):
    trainer = _trainer(tmp_path, make_tiny_llama(seed=0))
    trainer.train()
    logged = trainer.state.log_history[0]
    for name in ("hard_loss", "mtp1_ce", "mtp1_kl", "mtp2_ce", "mtp2_main_agreement"):
        assert name in logged, name
    assert "teacher_kl" not in logged


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(packing=True), "packing"),
        (dict(mtp_ce_weight=0.0, mtp_kd_weight=0.0), "both 0"),
        (dict(mtp_num_heads=0), "mtp_num_heads"),
        (dict(mtp_temperature=0.0), "mtp_temperature"),
    ],
)
def test_bad_settings_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        kd_args(tmp_path, config_class=MTPConfig, **overrides)


def test_gradient_accumulation_matches_one_large_batch(tmp_path):
    def run(output_dir, batch, accumulation):
        trainer = _trainer(
            output_dir, make_tiny_llama(seed=0), rows=4, max_steps=1, optim="sgd", learning_rate=0.5,
            per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation, max_grad_norm=0.0,
        )  # fmt: skip
        _randomise(trainer.mtp_heads)
        trainer.train()
        return trainer

    big, small = run(tmp_path / "big", 4, 1), run(tmp_path / "small", 2, 2)
    for (name, a), b in zip(big.model.named_parameters(), small.model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
    for (name, a), b in zip(big.mtp_heads.named_parameters(), small.mtp_heads.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


def test_lora_student_trains_adapters_and_heads_and_exports_the_adapter(tmp_path):
    from peft import LoraConfig

    trainer = MTPTrainer(
        model=make_tiny_llama(seed=0),
        args=kd_args(tmp_path, config_class=MTPConfig, max_steps=2),
        train_dataset=make_text_dataset(num_rows=8),
        processing_class=make_word_tokenizer(),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    frozen = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if not p.requires_grad}
    trainer.train()
    for name, value in frozen.items():
        assert torch.equal(dict(trainer.model.named_parameters())[name], value), name
    assert trainer.mtp_heads.blocks[0].down.weight.abs().max() > 0
    trainer.save_model(str(tmp_path / "export"))
    assert (tmp_path / "export" / "adapter_config.json").is_file()
    assert (tmp_path / "export" / "mtp_heads" / "heads.safetensors").is_file()
