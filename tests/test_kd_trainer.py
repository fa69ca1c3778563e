"""KDTrainer on tiny random Llamas: the loss it optimises, normalisation, teacher safety, LoRA, errors."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import kd_args, make_text_dataset, make_tiny_llama, make_word_tokenizer, reference_kd_loss

from hf_distill import KDConfig, KDTrainer


def first_batch(trainer):
    return next(iter(trainer.get_train_dataloader()))


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("temperature, alpha", [(2.0, 0.5), (1.0, 1.0), (4.0, 0.2)])
def test_compute_loss_equals_independent_formula(tmp_path, fused, temperature, alpha):
    student, teacher = make_tiny_llama(seed=0), make_tiny_llama(seed=1, num_layers=3)
    trainer = KDTrainer(
        model=student,
        teacher_model=teacher,
        args=kd_args(tmp_path, temperature=temperature, alpha=alpha, fused_lm_head=fused),
        train_dataset=make_text_dataset(),
        processing_class=make_word_tokenizer(),
    )
    assert trainer.use_fused_head is fused
    batch = first_batch(trainer)
    loss = trainer.compute_loss(trainer.model, batch)
    expected = reference_kd_loss(student, teacher, batch, temperature, alpha)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def _one_sgd_step(tmp_path, batch_size, accumulation):
    student, teacher = make_tiny_llama(seed=0), make_tiny_llama(seed=1)
    args = kd_args(
        tmp_path,
        max_steps=1,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        optim="sgd",
        learning_rate=1.0,
        max_grad_norm=0.0,
    )
    dataset = make_text_dataset(num_rows=4, min_len=2, max_len=14, seed=3)
    trainer = KDTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=dataset, processing_class=make_word_tokenizer()
    )
    before = {k: v.clone() for k, v in student.state_dict().items()}
    trainer.train()
    return {k: v - before[k] for k, v in student.state_dict().items()}


def test_gradient_accumulation_matches_one_large_batch(tmp_path):
    big = _one_sgd_step(tmp_path / "a", batch_size=4, accumulation=1)
    accumulated = _one_sgd_step(tmp_path / "b", batch_size=1, accumulation=4)
    assert any(delta.abs().max() > 1e-4 for delta in big.values())
    for name in big:
        torch.testing.assert_close(accumulated[name], big[name], rtol=1e-4, atol=1e-6, msg=name)


def test_teacher_is_bit_identical_after_training_and_holds_no_grad(tmp_path):
    student, teacher = make_tiny_llama(seed=0), make_tiny_llama(seed=1)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    trainer = KDTrainer(
        model=student,
        teacher_model=teacher,
        args=kd_args(tmp_path, max_steps=3),
        train_dataset=make_text_dataset(),
        processing_class=make_word_tokenizer(),
    )
    trainer.train()
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not teacher.training
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in teacher.parameters()}


def test_training_logs_named_terms_and_reduces_kl(tmp_path):
    student, teacher = make_tiny_llama(seed=0), make_tiny_llama(seed=1)
    dataset = make_text_dataset(num_rows=4)
    trainer = KDTrainer(
        model=student,
        teacher_model=teacher,
        args=kd_args(tmp_path, max_steps=25, learning_rate=5e-3, alpha=1.0, optim="adamw_torch"),
        train_dataset=dataset,
        processing_class=make_word_tokenizer(),
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "soft_loss" in entry]
    for key in ("soft_loss", "hard_loss", "teacher_agreement", "teacher_kl"):
        assert key in logs[0]
    assert logs[-1]["teacher_kl"] < 0.5 * logs[0]["teacher_kl"]


def test_lora_student_changes_only_adapters_and_saves_an_adapter(tmp_path):
    from peft import LoraConfig

    student, teacher = make_tiny_llama(seed=0), make_tiny_llama(seed=1)
    base_before = {k: v.clone() for k, v in student.state_dict().items()}
    trainer = KDTrainer(
        model=student,
        teacher_model=teacher,
        args=kd_args(tmp_path, max_steps=2),
        train_dataset=make_text_dataset(),
        processing_class=make_word_tokenizer(),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
    )
    trainer.train()
    lora_params = {n: p for n, p in trainer.model.named_parameters() if "lora_" in n}
    assert lora_params and all(p.requires_grad for p in lora_params.values())
    assert any(p.abs().sum() > 0 for n, p in lora_params.items() if "lora_B" in n)
    for name, param in trainer.model.named_parameters():
        if "lora_" not in name:
            base_name = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(param, base_before[base_name]), name
    trainer.save_model(str(tmp_path / "adapter"))
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()


def test_prompt_completion_dataset_trains_on_completion_only(tmp_path):
    from datasets import Dataset

    dataset = Dataset.from_dict({"prompt": ["w5 w6 w7", "w8 w9"], "completion": [" w10 w11", " w12 w13 w14"]})
    trainer = KDTrainer(
        model=make_tiny_llama(seed=0),
        teacher_model=make_tiny_llama(seed=1),
        args=kd_args(tmp_path, per_device_train_batch_size=2),
        train_dataset=dataset,
        processing_class=make_word_tokenizer(),
    )
    batch = first_batch(trainer)
    prompt_tokens = 3  # "w5 w6 w7" is the longest prompt: its positions are never targets
    assert (batch["labels"][0, :prompt_tokens] == -100).all()
    loss = trainer.compute_loss(trainer.model, batch)
    expected = reference_kd_loss(trainer.model, trainer.teacher_model, batch, 2.0, 0.5)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_all_masked_batch_gives_zero_loss_not_nan(tmp_path):
    trainer = KDTrainer(
        model=make_tiny_llama(seed=0),
        teacher_model=make_tiny_llama(seed=1),
        args=kd_args(tmp_path),
        train_dataset=make_text_dataset(),
        processing_class=make_word_tokenizer(),
    )
    batch = first_batch(trainer)
    batch["labels"] = torch.full_like(batch["labels"], -100)
    loss = trainer.compute_loss(trainer.model, batch)
    assert loss.item() == 0.0
    loss.backward()


def test_different_tokenizers_are_refused_with_what_differs(tmp_path):
    with pytest.raises(ValueError, match="tokenizers differ.*only in teacher"):
        KDTrainer(
            model=make_tiny_llama(seed=0),
            teacher_model=make_tiny_llama(seed=1),
            teacher_processing_class=make_word_tokenizer(prefix="t"),
            args=kd_args(tmp_path),
            train_dataset=make_text_dataset(),
            processing_class=make_word_tokenizer(),
        )


def test_different_vocabulary_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="vocab_size 40 differs"):
        KDTrainer(
            model=make_tiny_llama(seed=0),
            teacher_model=make_tiny_llama(seed=1, vocab_size=40),
            args=kd_args(tmp_path),
            train_dataset=make_text_dataset(),
            processing_class=make_word_tokenizer(),
        )


def test_padded_teacher_embeddings_are_sliced_to_the_shared_vocabulary(tmp_path):
    student, teacher = make_tiny_llama(seed=0), make_tiny_llama(seed=1, vocab_size=80)
    trainer = KDTrainer(
        model=student,
        teacher_model=teacher,
        args=kd_args(tmp_path, alpha=1.0),
        train_dataset=make_text_dataset(),
        processing_class=make_word_tokenizer(),
    )
    batch = first_batch(trainer)
    loss = trainer.compute_loss(trainer.model, batch)

    class Sliced(torch.nn.Module):
        def forward(self, **kw):
            out = teacher(**kw)
            out.logits = out.logits[..., :64]
            return out

    expected = reference_kd_loss(student, Sliced(), batch, 2.0, 1.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_sequence_longer_than_teacher_context_is_an_error(tmp_path):
    teacher = make_tiny_llama(seed=1, max_position_embeddings=8)
    trainer = KDTrainer(
        model=make_tiny_llama(seed=0),
        teacher_model=teacher,
        args=kd_args(tmp_path),
        train_dataset=make_text_dataset(min_len=10, max_len=12),
        processing_class=make_word_tokenizer(),
    )
    with pytest.raises(ValueError, match="exceeds the teacher's context of 8"):
        trainer.compute_loss(trainer.model, first_batch(trainer))


def test_no_teacher_is_refused_at_construction(tmp_path):
    with pytest.raises(ValueError, match="no teacher"):
        KDTrainer(
            model=make_tiny_llama(seed=0),
            args=kd_args(tmp_path),
            train_dataset=make_text_dataset(),
            processing_class=make_word_tokenizer(),
        )


def test_teacher_micro_batching_gives_the_same_loss(tmp_path):
    student, teacher = make_tiny_llama(seed=0), make_tiny_llama(seed=1)
    losses = []
    for micro in (None, 1):
        trainer = KDTrainer(
            model=student,
            teacher_model=teacher,
            args=kd_args(tmp_path, teacher_micro_batch_size=micro),
            train_dataset=make_text_dataset(),
            processing_class=make_word_tokenizer(),
        )
        losses.append(trainer.compute_loss(trainer.model, first_batch(trainer)).item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"temperature": 0.0}, "temperature"),
        ({"alpha": 1.2}, "alpha"),
        ({"divergence": "wasserstein"}, "Unknown divergence"),
        ({"teacher_micro_batch_size": 0}, "teacher_micro_batch_size"),
    ],
)
def test_config_validation(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        kd_args(tmp_path, **overrides)


def test_config_parses_from_cli_and_yaml(tmp_path):
    from transformers import HfArgumentParser

    parser = HfArgumentParser(KDConfig)
    (config,) = parser.parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--temperature", "3", "--alpha", "0.9", "--divergence", "jsd", "--use_cpu"]
    )
    assert (config.temperature, config.alpha, config.divergence) == (3.0, 0.9, "jsd")
    yaml_file = tmp_path / "kd.yaml"
    yaml_file.write_text(f"output_dir: {tmp_path}\ntemperature: 2.5\nteacher_load_in_4bit: true\nuse_cpu: true\n")
    (config,) = parser.parse_yaml_file(str(yaml_file))
    assert config.temperature == 2.5 and config.teacher_load_in_4bit


def test_resume_from_checkpoint_reproduces_the_uninterrupted_run(tmp_path):
    def run(output_dir, max_steps, resume=None):
        student, teacher = make_tiny_llama(seed=0), make_tiny_llama(seed=1)
        args = kd_args(output_dir, max_steps=max_steps, save_strategy="steps", save_steps=2, optim="adamw_torch")
        trainer = KDTrainer(
            model=student,
            teacher_model=teacher,
            args=args,
            train_dataset=make_text_dataset(num_rows=16),
            processing_class=make_word_tokenizer(),
        )
        trainer.train(resume_from_checkpoint=resume)
        return student, [e["loss"] for e in trainer.state.log_history if "loss" in e]

    full_model, full_losses = run(tmp_path / "full", 4)
    run(tmp_path / "part", 2)
    resumed_model, resumed_losses = run(tmp_path / "part", 4, resume=str(tmp_path / "part" / "checkpoint-2"))
    assert resumed_losses[-2:] == pytest.approx(full_losses[-2:], rel=1e-5)
    for (name, a), b in zip(full_model.state_dict().items(), resumed_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_conversational_messages_dataset_uses_the_chat_template(tmp_path):
    from datasets import Dataset

    tokenizer = make_word_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }} </s>"
        "{% endgeneration %}{% else %}{{ m['content'] }} {% endif %}{% endfor %}"
    )
    dataset = Dataset.from_dict(
        {
            "messages": [
                [{"role": "user", "content": "w5 w6"}, {"role": "assistant", "content": "w7 w8 w9"}],
                [{"role": "user", "content": "w10"}, {"role": "assistant", "content": "w11 w12"}],
            ]
        }
    )
    trainer = KDTrainer(
        model=make_tiny_llama(seed=0),
        teacher_model=make_tiny_llama(seed=1),
        args=kd_args(tmp_path, per_device_train_batch_size=2, assistant_only_loss=True),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    batch = first_batch(trainer)
    words = [tokenizer.convert_ids_to_tokens(int(i)) for i in batch["input_ids"][0]]
    targets = [w for w, label in zip(words, batch["labels"][0].tolist()) if label != -100]
    assert "w5" in words and "w5" not in targets and "w7" in targets  # only the assistant turn is a target
    loss = trainer.compute_loss(trainer.model, batch)
    expected = reference_kd_loss(trainer.model, trainer.teacher_model, batch, 2.0, 0.5)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_renamed_special_tokens_at_the_same_ids_are_accepted(tmp_path):
    student_tok, teacher_tok = make_word_tokenizer(vocab_size=63), make_word_tokenizer(vocab_size=63)
    student_tok.add_special_tokens({"additional_special_tokens": ["<|begin_of_text|>"]})
    teacher_tok.add_special_tokens({"additional_special_tokens": ["<｜begin▁of▁sentence｜>"]})
    assert student_tok.convert_tokens_to_ids("<|begin_of_text|>") == 63
    assert teacher_tok.convert_tokens_to_ids("<｜begin▁of▁sentence｜>") == 63
    trainer = KDTrainer(
        model=make_tiny_llama(seed=0),
        teacher_model=make_tiny_llama(seed=1),
        teacher_processing_class=teacher_tok,
        args=kd_args(tmp_path),
        train_dataset=make_text_dataset(vocab_size=63),
        processing_class=student_tok,
    )
    assert trainer.shared_vocab_size == 64


@pytest.mark.parametrize("config_class", ["TrainingArguments", "SFTConfig"])
def test_plain_training_arguments_are_converted_keeping_every_setting(tmp_path, config_class):
    """Code written for Trainer/SFTTrainer passes its own arguments object: the swap must keep every setting."""
    import transformers
    import trl

    cls = getattr(transformers, config_class, None) or getattr(trl, config_class)
    # eos_token: `to_dict()` masks every `*_token` field, so a conversion through it would lose this one.
    extra = {"max_length": 24, "eos_token": "</s>"} if config_class == "SFTConfig" else {}
    args = cls(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, learning_rate=3e-3, use_cpu=True,
        bf16=False, report_to=[], save_strategy="no", logging_steps=1, seed=7, disable_tqdm=True, **extra,
    )  # fmt: skip
    trainer = KDTrainer(
        model=make_tiny_llama(seed=0),
        teacher_model=make_tiny_llama(seed=1),
        args=args,
        train_dataset=make_text_dataset(),
        processing_class=make_word_tokenizer(),
    )
    assert isinstance(trainer.args, KDConfig)
    for name in ("output_dir", "max_steps", "per_device_train_batch_size", "learning_rate", "seed", *extra):
        assert getattr(trainer.args, name) == getattr(args, name), name
    fields = KDConfig.__dataclass_fields__
    assert (trainer.args.temperature, trainer.args.alpha) == (fields["temperature"].default, fields["alpha"].default)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "soft_loss" in entry]
    assert len(logged) == 2 and all(math.isfinite(entry["loss"]) for entry in logged)
