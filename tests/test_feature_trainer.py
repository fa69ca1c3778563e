"""FeatureKDTrainer on tiny random Llamas: loss vs an independent formula, projections, resume, saving."""

from __future__ import annotations

import math
import os

import pytest
import torch
from conftest import kd_args, make_text_dataset, make_tiny_llama, make_word_tokenizer
from transformers import AutoModelForCausalLM

from hf_distill.features import PROJECTIONS_FILE
from hf_distill.trainers.feature_config import FeatureKDConfig
from hf_distill.trainers.feature_trainer import FeatureKDTrainer


def feature_args(output_dir, **overrides) -> FeatureKDConfig:
    return kd_args(output_dir, config_class=FeatureKDConfig, **overrides)


def build(tmp_path, student=None, teacher=None, peft_config=None, **overrides) -> FeatureKDTrainer:
    student = student or make_tiny_llama(seed=0, num_layers=3, hidden_size=32, num_heads=4)
    teacher = teacher or make_tiny_llama(seed=1, num_layers=4, hidden_size=48, num_heads=8, num_kv_heads=4)
    return FeatureKDTrainer(
        model=student,
        teacher_model=teacher,
        args=feature_args(tmp_path, **overrides),
        train_dataset=make_text_dataset(),
        processing_class=make_word_tokenizer(),
        peft_config=peft_config,
    )


def reference_loss(trainer, batch, pairs, hidden_weight, attention_weight):
    """Mean over target tokens of the logit KD loss plus pair-averaged weighted feature terms, float64.

    Hidden states come from `output_hidden_states` (index l + 1 is the output of layer l) and attention maps from
    `output_attentions`; teacher heads are grouped by hand (8 teacher heads -> 4 student heads: pairs 2h, 2h + 1).
    """
    args = trainer.args
    student, teacher = trainer.model, trainer.teacher_model
    kwargs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    with torch.no_grad():
        s_out = student(**kwargs, output_hidden_states=True, output_attentions=True)
        t_out = teacher(**kwargs, output_hidden_states=True, output_attentions=True)
    labels = batch["labels"][:, 1:]
    valid = labels != -100
    temperature, alpha = args.temperature, args.alpha
    s_logits, t_logits = s_out.logits.double()[:, :-1], t_out.logits.double()[:, :-1]
    log_q = torch.log_softmax(s_logits[valid] / temperature, -1)
    log_p = torch.log_softmax(t_logits[valid] / temperature, -1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    ce = -torch.log_softmax(s_logits[valid], -1).gather(1, labels[valid].unsqueeze(1)).squeeze(1)
    logit_total = (alpha * temperature**2 * kl + (1 - alpha) * ce).sum()
    feature_total = 0.0  # summed over pairs here, averaged over them at the end

    for s, t in pairs:
        weight = trainer.feature_projections.projections[f"s{s}_t{t}"].weight.detach().double()
        hs = s_out.hidden_states[s + 1].double()[:, :-1][valid] @ weight.T
        ht = t_out.hidden_states[t + 1].double()[:, :-1][valid]
        unit_s = hs / hs.norm(dim=-1, keepdim=True)
        unit_t = ht / ht.norm(dim=-1, keepdim=True)
        feature_total += hidden_weight * ((unit_s - unit_t) ** 2).sum()

        a_s = s_out.attentions[s].double()
        a_t = t_out.attentions[t].double()
        a_t = torch.stack([(a_t[:, 2 * h] + a_t[:, 2 * h + 1]) / 2 for h in range(a_s.shape[1])], dim=1)
        for b in range(a_s.shape[0]):
            for q in range(a_s.shape[2] - 1):
                if not valid[b, q]:
                    continue
                row_kl = 0.0
                for h in range(a_s.shape[1]):
                    for k in range(a_s.shape[3]):
                        p = float(a_t[b, h, q, k])
                        if p > 0:
                            row_kl += p * math.log(p / float(a_s[b, h, q, k]))
                feature_total += attention_weight * row_kl / a_s.shape[1]
    return (logit_total + feature_total / len(pairs)) / valid.sum()


@pytest.mark.parametrize("fused", [True, False])
def test_compute_loss_equals_independent_formula(tmp_path, fused):
    pairs = [(0, 1), (1, 2)]
    trainer = build(
        tmp_path,
        fused_lm_head=fused,
        feature_layer_map="explicit",
        feature_layer_pairs=[f"{s}:{t}" for s, t in pairs],
        hidden_loss_weight=0.7,
        attention_loss_weight=30.0,
    )
    assert trainer.model.config._attn_implementation == "eager"
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(trainer.model, batch)
    expected = reference_loss(trainer, batch, pairs, hidden_weight=0.7, attention_weight=30.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_teacher_micro_batches_give_the_same_loss(tmp_path):
    whole = build(tmp_path / "a", attention_loss_weight=1.0)
    sliced = build(tmp_path / "b", attention_loss_weight=1.0, teacher_micro_batch_size=1)
    batch = next(iter(whole.get_train_dataloader()))
    expected = whole.compute_loss(whole.model, batch)
    # Captured layer outputs are released once the loss is built.
    assert not whole.student_capture._hidden and not whole.teacher_capture._attention
    assert sliced.compute_loss(sliced.model, batch).item() == pytest.approx(expected.item(), rel=1e-5)


def test_lora_student_trains_through_feature_terms(tmp_path):
    from peft import LoraConfig

    trainer = build(
        tmp_path,
        max_steps=1,
        attention_loss_weight=1.0,
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
    )
    before = {n: p.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert any("lora_B" in n and not torch.equal(after[n], v) for n, v in before.items())


def test_training_updates_projections_and_logs_every_term(tmp_path):
    trainer = build(tmp_path, attention_loss_weight=1.0)
    assert trainer.layer_map == ((0, 0), (1, 1), (2, 3))  # uniform 3 -> 4: round(4/3)=1, round(8/3)=3
    before = {k: v.clone() for k, v in trainer.feature_projections.state_dict().items()}
    trainer.train()
    in_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in in_optimizer for p in trainer.feature_projections.parameters())
    for key, value in trainer.feature_projections.state_dict().items():
        assert not torch.equal(value, before[key]), key
    logged = trainer.state.log_history[0]
    for name in ("loss", "soft_loss", "hard_loss", "hidden_loss", "attention_loss"):
        assert name in logged and math.isfinite(logged[name])
    metrics = trainer.evaluate(eval_dataset=make_text_dataset(num_rows=4, seed=5))
    assert metrics["eval_hidden_loss"] > 0 and metrics["eval_attention_loss"] > 0


def _train(tmp_path, resume=None, max_steps=4):
    trainer = build(tmp_path, max_steps=max_steps, save_strategy="steps", save_steps=2, attention_loss_weight=1.0)
    trainer.train(resume_from_checkpoint=resume)
    losses = {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}
    return trainer, losses


def test_resume_restores_projections_and_gives_the_same_losses(tmp_path):
    straight, straight_losses = _train(tmp_path / "straight")
    checkpoint = tmp_path / "straight" / "checkpoint-2"
    assert (checkpoint / PROJECTIONS_FILE).is_file()
    resumed, resumed_losses = _train(tmp_path / "resumed", resume=str(checkpoint))
    assert {3, 4} <= set(resumed_losses)
    for step in (3, 4):
        assert resumed_losses[step] == pytest.approx(straight_losses[step], rel=1e-6)
    for key, value in straight.feature_projections.state_dict().items():
        torch.testing.assert_close(resumed.feature_projections.state_dict()[key], value, rtol=1e-6, atol=1e-7)


def test_resume_without_projection_file_is_a_clear_error(tmp_path):
    _train(tmp_path / "run", max_steps=2)
    checkpoint = tmp_path / "run" / "checkpoint-2"
    os.remove(checkpoint / PROJECTIONS_FILE)
    with pytest.raises(FileNotFoundError, match="no feature projections"):
        _train(tmp_path / "again", resume=str(checkpoint))


def test_saved_student_loads_as_plain_model_with_projections_beside_it(tmp_path):
    trainer = build(tmp_path, max_steps=1, feature_export_projections=True)
    trainer.train()
    out = tmp_path / "final"
    trainer.save_model(str(out))
    assert (out / PROJECTIONS_FILE).is_file()
    loaded, info = AutoModelForCausalLM.from_pretrained(str(out), output_loading_info=True)
    assert info["unexpected_keys"] == set() or not info["unexpected_keys"]
    assert not info["missing_keys"]
    trained = trainer.model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, trained[key]), key


def test_activation_checkpointing_gives_the_same_update(tmp_path):
    def one_step(path, checkpointing):
        trainer = build(path, max_steps=1, attention_loss_weight=5.0, activation_checkpointing=checkpointing)
        before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        trainer.train()
        assert trainer.model.is_gradient_checkpointing is checkpointing
        return {k: v - before[k] for k, v in trainer.model.state_dict().items()}

    plain = one_step(tmp_path / "a", False)
    checkpointed = one_step(tmp_path / "b", True)
    for name, delta in plain.items():
        torch.testing.assert_close(checkpointed[name], delta, rtol=1e-4, atol=1e-7, msg=name)


def test_reentrant_checkpointing_cannot_silently_drop_attention_gradients(tmp_path):
    trainer = build(
        tmp_path,
        max_steps=1,
        attention_loss_weight=1.0,
        activation_checkpointing=True,
        activation_checkpointing_kwargs={"use_reentrant": True},
    )
    with pytest.raises(RuntimeError, match="attention maps carry no gradient"):
        trainer.train()


def test_configuration_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match=r"Layer pair \(0, 9\): teacher layer 9 is outside"):
        build(tmp_path, feature_layer_map="explicit", feature_layer_pairs=["0:9"])
    with pytest.raises(ValueError, match="returns no attention weights"):
        build(tmp_path, attention_loss_weight=1.0, feature_switch_to_eager=False)
    with pytest.raises(ValueError, match="hidden_loss_type"):
        feature_args(tmp_path, hidden_loss_type="l2")
    with pytest.raises(ValueError, match="FeatureKDTrainer has no teacher"):
        FeatureKDTrainer(
            model=make_tiny_llama(),
            args=feature_args(tmp_path),
            train_dataset=make_text_dataset(),
            processing_class=make_word_tokenizer(),
        )


@pytest.mark.parametrize("kind", ["kd", "sft"])
def test_plain_configs_are_upgraded_with_feature_defaults(tmp_path, kind):
    from conftest import kd_args
    from trl import SFTConfig

    if kind == "kd":
        args = kd_args(tmp_path, temperature=3.0)
    else:
        args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], eos_token="</s>", max_length=77)
    trainer = FeatureKDTrainer(
        model=make_tiny_llama(seed=0, num_layers=2),
        teacher_model=make_tiny_llama(seed=1, num_layers=4),
        args=args,
        train_dataset=make_text_dataset(),
        processing_class=make_word_tokenizer(),
    )
    assert isinstance(trainer.args, FeatureKDConfig)
    assert trainer.args.hidden_loss_weight == 1.0
    if kind == "kd":
        assert trainer.args.temperature == 3.0
    else:
        assert trainer.args.eos_token == "</s>" and trainer.args.max_length == 77
    assert trainer.layer_map == ((0, 0), (1, 2))
