"""Teacher inspection against float64 references written from the definitions (numpy, full sorts), on random
logits and on a tiny model, and the `hf-distill inspect-teacher` command on a local model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import make_tiny_llama, make_word_tokenizer

from hf_distill.estimate.teacher_inspection import TeacherInspection, inspect_teacher, position_statistics


def reference(logits: np.ndarray, k: int, temperature: float = 1.0) -> tuple[float, float, float]:
    """(entropy, top-k mass, KL(p || top-k kept, tail spread evenly)) of one row, float64, by the definitions."""
    z = logits.astype(np.float64) / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    entropy = -sum(x * math.log(x) for x in p if x > 0)
    order = np.argsort(-p, kind="stable")
    k = min(k, len(p))
    kept, rest = order[:k], order[k:]
    mass = p[kept].sum()
    reconstruction = p.copy()
    if len(rest):
        reconstruction[rest] = p[rest].sum() / len(rest)
    kl = sum(x * math.log(x / y) for x, y in zip(p, reconstruction) if x > 0)
    return entropy, mass, kl


@pytest.mark.parametrize("scale, temperature", [(1.0, 1.0), (6.0, 1.0), (6.0, 2.0), (0.01, 1.0)])
def test_statistics_equal_float64_definitions_on_random_logits(scale, temperature):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 300, generator=generator) * scale
    ks = (1, 8, 32, 128, 300, 500)
    entropy, mass, lost = position_statistics(logits, ks, temperature)
    for row in range(logits.shape[0]):
        for k in ks:
            h, m, kl = reference(logits[row].numpy(), k, temperature)
            assert entropy[row].item() == pytest.approx(h, rel=1e-9, abs=1e-12)
            assert mass[k][row].item() == pytest.approx(m, rel=1e-9, abs=1e-12)
            assert lost[k][row].item() == pytest.approx(kl, rel=1e-6, abs=1e-10)
    assert torch.all(lost[300] == 0) and torch.all(lost[500] == 0)  # k covers the vocabulary: nothing lost


def test_uniform_tail_loses_nothing_and_a_peaked_tail_loses_a_lot():
    vocab = 64
    flat_tail = torch.zeros(1, vocab)
    flat_tail[0, :4] = 5.0  # four big tokens, the rest identical
    peaked_tail = flat_tail.clone()
    peaked_tail[0, 4] = 4.0  # one structured token just outside k = 4
    _, _, flat_lost = position_statistics(flat_tail, (4,))
    _, _, peaked_lost = position_statistics(peaked_tail, (4,))
    assert flat_lost[4].item() == pytest.approx(0.0, abs=1e-12)
    assert peaked_lost[4].item() > 0.01


def test_tiny_model_positions_match_float64_reference():
    model = make_tiny_llama(vocab_size=64, num_layers=2, seed=3)
    ids = torch.randint(3, 64, (2, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # padding positions are skipped
    result = inspect_teacher(model, [{"input_ids": ids, "attention_mask": mask}], ks=(1, 8, 32))
    assert result.positions == 10 + 7
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    rows = logits[mask.bool()].double().numpy()
    for position, row in enumerate(rows):
        for k in (1, 8, 32):
            h, m, kl = reference(row, k)
            assert result.entropy[position] == pytest.approx(h, rel=1e-6)
            assert result.topk_mass[k][position] == pytest.approx(m, rel=1e-6)
            assert result.kl_lost[k][position] == pytest.approx(kl, rel=1e-5, abs=1e-9)
    summary = result.summary()
    assert summary["entropy_bits_mean"] == pytest.approx(np.mean(result.entropy) / math.log(2))
    assert summary["per_k"][32]["bytes_per_token"] == 4 * 32 + 2  # uint16 ids: 4k + 2 (BENCHMARKS.md)


def test_chunks_give_the_same_result_as_one_pass(monkeypatch):
    import hf_distill.estimate.teacher_inspection as module

    logits = torch.randn(10, 50, generator=torch.Generator().manual_seed(2)) * 3
    whole = TeacherInspection(vocab=50, ks=(1, 8))
    whole.add(logits)
    monkeypatch.setattr(module, "ROWS_PER_CHUNK", 3)
    chunked = TeacherInspection(vocab=50, ks=(1, 8))
    chunked.add(logits)
    assert chunked.entropy == whole.entropy and chunked.kl_lost == whole.kl_lost


def test_inspect_teacher_command_on_a_local_model(tmp_path, capsys):
    from datasets import Dataset

    from hf_distill.cli import main

    teacher_dir = tmp_path / "teacher"
    make_tiny_llama(vocab_size=64, num_layers=2).save_pretrained(teacher_dir)
    make_word_tokenizer(64).save_pretrained(teacher_dir)
    data_dir = tmp_path / "data"
    Dataset.from_dict({"text": [" ".join(f"w{i % 60 + 3}" for i in range(n, n + 12)) for n in range(5)]}).to_json(
        str(data_dir / "train.jsonl")
    )
    out = tmp_path / "inspection.json"
    argv = ["inspect-teacher", "--teacher", str(teacher_dir), "--dataset", str(data_dir), "--num_rows", "3",
            "--max_length", "8", "--ks", "1", "8", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "top-k mass" in printed and "KL lost" in printed
    saved = json.loads(out.read_text())
    assert saved["summary"]["positions"] == 3 * 8
    assert set(saved["summary"]["per_k"]) == {"1", "8"}
