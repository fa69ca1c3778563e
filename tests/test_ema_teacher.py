"""EMA self-teacher: the loss against an EMA kept by hand in float64, the update schedule, LoRA adapters only,
and a resumed run that is bit-identical to an uninterrupted one (EMA included)."""

from __future__ import annotations

import pytest
import torch
from conftest import kd_args, make_text_dataset, make_tiny_llama, make_word_tokenizer, reference_kd_loss
from transformers import TrainerCallback

from hf_distill import KDTrainer
from hf_distill.teachers.sources.ema import EMA_STATE_FILE


class RecordWeights(TrainerCallback):
    """The student's weights at the start and after every optimizer step (float64 copies)."""

    def __init__(self, model):
        self.model = model
        self.snapshots = []

    def _snap(self):
        self.snapshots.append({k: v.detach().double().clone() for k, v in self.model.named_parameters()})

    def on_train_begin(self, args, state, control, **kwargs):
        self._snap()

    def on_step_end(self, args, state, control, **kwargs):
        self._snap()


def _ema_trainer(tmp_path, student, **overrides):
    values = dict(max_steps=3, optim="sgd", learning_rate=0.5, ema_decay=0.5, temperature=2.0, alpha=0.5)
    values.update(overrides)
    recorder = RecordWeights(student)
    trainer = KDTrainer(
        model=student,
        teacher_model="ema",
        args=kd_args(tmp_path, **values),
        train_dataset=make_text_dataset(num_rows=16),
        processing_class=make_word_tokenizer(),
        callbacks=[recorder],
    )
    return trainer, recorder


def _hand_ema(snapshots, decay, start, every):
    """The EMA by its definition, in float64: a copy of the student up to `start`, then averaged every `every`."""
    ema = snapshots[0]
    for step, params in enumerate(snapshots[1:], start=1):
        if step <= start:
            ema = params
        elif (step - start) % every == 0:
            ema = {k: decay * ema[k] + (1 - decay) * params[k] for k in ema}
    return ema


def _float64_llama(weights):
    model = make_tiny_llama(seed=0).double()
    model.load_state_dict(weights, strict=False)
    return model


@pytest.mark.parametrize("fused", [True, False])
def test_loss_equals_float64_reference_with_a_hand_kept_ema(tmp_path, fused):
    student = make_tiny_llama(seed=0)
    trainer, recorder = _ema_trainer(tmp_path, student, fused_lm_head=fused)
    trainer.train()
    ema = _hand_ema(recorder.snapshots, decay=0.5, start=0, every=1)
    # The student has moved away from its average, so the teacher really is another model now.
    assert max((ema[k] - recorder.snapshots[-1][k]).abs().max() for k in ema) > 1e-3
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(trainer.model, batch)
    # Fresh float64 models (a deepcopy of the trained student would keep accelerate's patched forward, which still
    # calls the original module).
    expected = reference_kd_loss(_float64_llama(recorder.snapshots[-1]), _float64_llama(ema), batch, 2.0, 0.5)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # After the teacher's forward the student computes with its own weights again.
    for name, param in student.named_parameters():
        torch.testing.assert_close(param.detach().double(), recorder.snapshots[-1][name], rtol=0, atol=0)


def test_start_step_and_update_interval_follow_their_definition(tmp_path):
    student = make_tiny_llama(seed=0)
    trainer, recorder = _ema_trainer(tmp_path, student, max_steps=5, ema_start_step=1, ema_update_every=2)
    trainer.train()
    expected = _hand_ema(recorder.snapshots, decay=0.5, start=1, every=2)
    shadow = trainer.teacher_source.ema.shadow
    assert set(shadow) == set(expected)
    for name, value in shadow.items():
        torch.testing.assert_close(value.double(), expected[name], rtol=1e-6, atol=1e-7, msg=name)


def test_lora_student_keeps_an_ema_of_the_adapters_only(tmp_path):
    from peft import LoraConfig

    trainer = KDTrainer(
        model=make_tiny_llama(seed=0),
        teacher_model="ema",
        args=kd_args(tmp_path, max_steps=2, ema_decay=0.9),
        train_dataset=make_text_dataset(num_rows=8),
        processing_class=make_word_tokenizer(),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    trainer.train()
    shadow = trainer.teacher_source.ema.shadow
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert set(shadow) == trainable and all("lora_" in name for name in shadow)
    frozen_bytes = sum(p.numel() for p in trainer.model.parameters() if not p.requires_grad)
    assert sum(t.numel() for t in shadow.values()) < frozen_bytes / 10
    from hf_distill.model_card import trainer_card_info

    assert "EMA self-teacher" in trainer_card_info(trainer).teacher


def test_resuming_from_a_checkpoint_is_bit_identical_to_the_uninterrupted_run(tmp_path):
    def run(output_dir, max_steps, resume=None):
        student = make_tiny_llama(seed=0)
        trainer, _ = _ema_trainer(
            output_dir, student, max_steps=max_steps, optim="adamw_torch", learning_rate=1e-2, ema_decay=0.7,
            save_strategy="steps", save_steps=3,
        )  # fmt: skip
        trainer.train(resume_from_checkpoint=resume)
        return student, trainer.teacher_source.ema.shadow

    full_model, full_ema = run(tmp_path / "full", 6)
    run(tmp_path / "part", 3)
    checkpoint = tmp_path / "part" / "checkpoint-3"
    assert (checkpoint / EMA_STATE_FILE).is_file()
    resumed_model, resumed_ema = run(tmp_path / "part", 6, resume=str(checkpoint))
    for (name, a), b in zip(full_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name
    assert set(full_ema) == set(resumed_ema)
    for name in full_ema:
        assert torch.equal(full_ema[name], resumed_ema[name]), name


def test_ema_settings_are_validated():
    from hf_distill import KDConfig

    for bad in ({"ema_decay": 1.0}, {"ema_decay": -0.1}, {"ema_update_every": 0}, {"ema_start_step": -1}):
        with pytest.raises(ValueError, match="ema_"):
            KDConfig(output_dir="unused", report_to=[], use_cpu=True, **bad)
