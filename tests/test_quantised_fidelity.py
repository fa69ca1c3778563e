"""Quantised-teacher fidelity statistics against a float64 NumPy reference written row by row."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_distill.estimate.quantised_fidelity import FidelitySums, compare_teachers


def _reference(ref_logits: np.ndarray, quant_logits: np.ndarray, ks) -> dict:
    kl, agree, overlap = [], [], {k: [] for k in ks}
    for a, b in zip(ref_logits.astype(np.float64), quant_logits.astype(np.float64)):
        p, q = np.exp(a - a.max()), np.exp(b - b.max())
        p, q = p / p.sum(), q / q.sum()
        kl.append(np.sum(p * np.log(p / q)))
        agree.append(float(p.argmax() == q.argmax()))
        for k in ks:
            top_p, top_q = np.argsort(-p)[:k], set(np.argsort(-q)[:k].tolist())
            overlap[k].append(sum(p[v] for v in top_p if v in top_q) / p[top_p].sum())
    return {
        "kl_nats": np.mean(kl),
        "top1_agreement": np.mean(agree),
        "overlap": {k: np.mean(v) for k, v in overlap.items()},
    }


def test_statistics_match_the_reference_on_random_logits():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(50, 40, generator=g) * 3
    quant = ref + torch.randn(50, 40, generator=g) * 0.8
    sums = FidelitySums(ks=(1, 8, 32))
    sums.add(ref[:20], quant[:20])
    sums.add(ref[20:], quant[20:])
    summary, expected = sums.summary(), _reference(ref.numpy(), quant.numpy(), (1, 8, 32))
    assert summary["positions"] == 50
    assert summary["kl_nats"] == pytest.approx(expected["kl_nats"], rel=1e-9)
    assert summary["top1_agreement"] == pytest.approx(expected["top1_agreement"])
    for k in (1, 8, 32):
        assert summary["topk_mass_overlap"][k] == pytest.approx(expected["overlap"][k], rel=1e-9)


def test_identical_teachers_are_perfectly_faithful(tiny_llama):
    teacher = tiny_llama(seed=0).eval()
    batch = {"input_ids": torch.randint(3, 64, (2, 10), generator=torch.Generator().manual_seed(1))}
    same = compare_teachers(teacher, teacher, [batch]).summary()
    assert same["kl_nats"] == pytest.approx(0.0, abs=1e-12) and same["top1_agreement"] == 1.0
    assert all(value == pytest.approx(1.0) for value in same["topk_mass_overlap"].values())


def test_nf4_teacher_is_close_but_not_identical(tiny_llama, tmp_path):
    from hf_distill.estimate.quantised_fidelity import format_fidelity, load_nf4

    teacher = tiny_llama(seed=0, hidden_size=64).eval()
    teacher.save_pretrained(tmp_path)
    batch = {"input_ids": torch.randint(3, 64, (2, 10), generator=torch.Generator().manual_seed(1))}
    summary = compare_teachers(teacher, load_nf4(str(tmp_path)), [batch]).summary()
    assert 0.0 < summary["kl_nats"] < 0.1 and summary["top1_agreement"] >= 0.8
    assert "top-1 agreement" in format_fidelity(summary)
