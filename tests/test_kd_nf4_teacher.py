"""A teacher loaded by path in NF4 (bitsandbytes, CPU) drives a training step."""

from __future__ import annotations

import pytest
import torch
from conftest import kd_args, make_text_dataset, make_tiny_llama, make_word_tokenizer

from hf_distill import KDTrainer

pytest.importorskip("bitsandbytes")


def test_nf4_teacher_loads_quantized_and_trains_a_step(tmp_path):
    teacher_dir = tmp_path / "teacher"
    teacher = make_tiny_llama(seed=1, hidden_size=64, num_heads=4)
    teacher.save_pretrained(teacher_dir)
    make_word_tokenizer().save_pretrained(teacher_dir)

    student = make_tiny_llama(seed=0)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    trainer = KDTrainer(
        model=student,
        teacher_model=str(teacher_dir),
        args=kd_args(tmp_path / "run", max_steps=1, teacher_load_in_4bit=True, teacher_dtype="float32"),
        train_dataset=make_text_dataset(),
        processing_class=make_word_tokenizer(),
    )
    quantized = [m for m in trainer.teacher_model.modules() if type(m).__name__ == "Linear4bit"]
    assert quantized and all(m.weight.quant_state.quant_type == "nf4" for m in quantized)

    batch = next(iter(trainer.get_train_dataloader()))
    nf4_loss = trainer.compute_loss(trainer.model, batch).item()
    full_precision = KDTrainer(
        model=student,
        teacher_model=teacher,
        args=kd_args(tmp_path / "ref"),
        train_dataset=make_text_dataset(),
        processing_class=make_word_tokenizer(),
    )
    reference_loss = full_precision.compute_loss(full_precision.model, batch).item()
    assert nf4_loss == pytest.approx(reference_loss, rel=0.1)  # NF4 perturbs the teacher only slightly

    trainer.train()
    assert any(not torch.equal(v, before[k]) for k, v in student.state_dict().items())
