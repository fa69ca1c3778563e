"""Every trainer x teacher kind x fused/unfused x LoRA cell either trains with its loss terms in the logs, or is
refused at construction with a message that names the conflict."""

from __future__ import annotations

import math

import pytest
from conftest import kd_args, make_text_dataset, make_tiny_llama, make_word_tokenizer
from crosstok_tokenizers import byte_level_tokenizer, sentencepiece_tokenizer
from datasets import Dataset
from test_offline_precompute import token_rows

from hf_distill import FeatureKDConfig, FeatureKDTrainer, KDConfig, KDTrainer, SeqKDConfig, SeqKDTrainer
from hf_distill.teachers.precompute import PrecomputeConfig, precompute_teacher_signal
from hf_distill.teachers.sources import TeacherCompatibilityError

TRAINERS = {
    "kd": (KDTrainer, KDConfig),
    "seqkd": (SeqKDTrainer, SeqKDConfig),
    "feature": (FeatureKDTrainer, FeatureKDConfig),
}
KINDS = ("live", "precomputed", "cross_tokenizer", "ema", "ensemble")

# Cells refused at construction, with a phrase the message must contain.
REFUSED = {
    ("seqkd", "precomputed"): "builds its own training rows",
    ("seqkd", "cross_tokenizer"): "token by token",
    ("feature", "precomputed"): "per-layer hidden states",
    ("feature", "cross_tokenizer"): "token by token",
    ("feature", "ema"): "per-layer hidden states",
    ("feature", "ensemble"): "per-layer hidden states",
}
# Terms each trainer logs when it trains with a teacher.
LOGGED = {
    "kd": ("soft_loss", "hard_loss", "teacher_agreement", "teacher_kl"),
    "seqkd": ("seqkd_ce", "soft_loss", "teacher_agreement"),
    "feature": ("soft_loss", "hard_loss", "hidden_loss"),
}
PAIRS = [("def add(a, b):\n", "    return a + b\n"), ("The quick ", "brown fox jumps."), ("x = ", "[1, 2, 3]")]


def _teacher_and_data(kind, trainer_name, tmp_path):
    """(teacher_model, teacher tokenizer, student tokenizer, train dataset, extra config) for one cell."""
    extra = {}
    if kind == "cross_tokenizer":
        student_tok, teacher_tok = byte_level_tokenizer(), sentencepiece_tokenizer()
        student_tok.pad_token = student_tok.eos_token
        data = Dataset.from_dict({"prompt": [p for p, _ in PAIRS], "completion": [c for _, c in PAIRS]})
        teacher = make_tiny_llama(vocab_size=len(teacher_tok), seed=1, num_layers=3)
        return teacher, teacher_tok, student_tok, data, {"cross_tokenizer": True}
    tok = make_word_tokenizer()
    if trainer_name == "seqkd" and kind != "precomputed":
        data = Dataset.from_dict({"prompt": ["w5 w6", "w7", "w9 w10 w11"], "completion": ["w8 w9", "w12 w13", "w4"]})
    else:
        data = make_text_dataset(num_rows=8)
    if kind == "live":
        teacher = make_tiny_llama(seed=1, num_layers=3)
    elif kind == "ensemble":
        teacher = [make_tiny_llama(seed=1, num_layers=3), make_tiny_llama(seed=2)]
        extra = {"teacher_ensemble_weights": [0.6, 0.4]}
    elif kind == "ema":
        teacher, extra = "ema", {"ema_decay": 0.5}
    else:  # precomputed columns from a live teacher
        teacher = None
        config = PrecomputeConfig(mode="topk", k=8, temperature=2.0)
        data = precompute_teacher_signal(
            make_tiny_llama(seed=1), tok, token_rows(8), tmp_path / "signal", config, progress=False
        )
    return teacher, tok, tok, data, extra


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("trainer_name", list(TRAINERS))
def test_cell_trains_or_is_refused(tmp_path, trainer_name, kind, fused, lora):
    trainer_class, config_class = TRAINERS[trainer_name]
    teacher, teacher_tok, student_tok, data, extra = _teacher_and_data(kind, trainer_name, tmp_path)
    if trainer_name == "feature":
        extra["hidden_loss_weight"] = 1.0
    args = kd_args(
        tmp_path / "run", config_class=config_class, max_steps=1, fused_lm_head=fused, temperature=2.0, **extra
    )
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    build = dict(
        model=make_tiny_llama(vocab_size=len(student_tok) if kind == "cross_tokenizer" else 64, seed=0),
        args=args,
        train_dataset=data,
        processing_class=student_tok,
        teacher_model=teacher,
        teacher_processing_class=teacher_tok if kind == "cross_tokenizer" else None,
        peft_config=peft_config,
    )
    refusal = REFUSED.get((trainer_name, kind))
    if refusal is not None:
        with pytest.raises(TeacherCompatibilityError, match=refusal):
            trainer_class(**build)
        return
    trainer = trainer_class(**build)
    assert trainer.teacher_source.kind == kind
    assert trainer.use_fused_head is fused
    trainer.train()
    logs = next(entry for entry in trainer.state.log_history if "loss" in entry)
    assert math.isfinite(logs["loss"])
    for name in LOGGED[trainer_name]:
        assert name in logs and math.isfinite(logs[name]), (name, logs)
    if lora:
        trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
        assert trainable and all("lora_" in n for n in trainable)


def test_packing_with_precomputed_columns_is_refused_before_the_columns_are_dropped(tmp_path):
    tok = make_word_tokenizer()
    data = precompute_teacher_signal(
        make_tiny_llama(seed=1), tok, token_rows(8), tmp_path / "signal", PrecomputeConfig(k=4), progress=False
    )
    with pytest.raises(TeacherCompatibilityError, match=r"packing=True cannot be used with a 'precomputed' teacher"):
        KDTrainer(
            model=make_tiny_llama(seed=0),
            args=kd_args(tmp_path / "run", packing=True, temperature=1.0),
            train_dataset=data,
            processing_class=tok,
        )
