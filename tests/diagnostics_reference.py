"""Float64 NumPy reference of the distillation diagnostics, written from the textbook definitions, row by row."""

from __future__ import annotations

import numpy as np


def _softmax(row: np.ndarray) -> np.ndarray:
    shifted = np.exp(row - row.max())
    return shifted / shifted.sum()


def reference_diagnostics(student_logits, teacher_logits, targets, bins: int = 10) -> dict[str, float]:
    """Means over rows: KL(p_t || p_s), top-1 agreement, top-5 overlap, Pearson r, entropies (bits), ECE."""
    s_all = np.asarray(student_logits, dtype=np.float64)
    t_all = np.asarray(teacher_logits, dtype=np.float64)
    labels = np.asarray(targets)
    kl, agree, overlap, corr, h_t, h_s = [], [], [], [], [], []
    confidences = {"teacher": [], "student": []}
    correct = {"teacher": [], "student": []}
    for s_row, t_row, label in zip(s_all, t_all, labels):
        q, p = _softmax(s_row), _softmax(t_row)
        kl.append(float(np.sum(p * (np.log(p) - np.log(q)))))
        agree.append(float(np.argmax(p) == np.argmax(q)))
        k = min(5, len(p))
        top_t, top_s = set(np.argsort(-p)[:k].tolist()), set(np.argsort(-q)[:k].tolist())
        overlap.append(len(top_t & top_s) / k)
        corr.append(float(np.corrcoef(p, q)[0, 1]))
        h_t.append(float(-np.sum(p * np.log2(p))))
        h_s.append(float(-np.sum(q * np.log2(q))))
        for name, dist in (("teacher", p), ("student", q)):
            confidences[name].append(float(dist.max()))
            correct[name].append(float(np.argmax(dist) == label))
    result = {
        "kl": np.mean(kl),
        "top1_agreement": np.mean(agree),
        "top5_overlap": np.mean(overlap),
        "prob_correlation": np.mean(corr),
        "teacher_entropy_bits": np.mean(h_t),
        "student_entropy_bits": np.mean(h_s),
    }
    for name in ("teacher", "student"):
        conf, hit = np.array(confidences[name]), np.array(correct[name])
        edges = np.linspace(0.0, 1.0, bins + 1)
        ece = 0.0
        for b in range(bins):
            upper = conf <= edges[b + 1] if b == bins - 1 else conf < edges[b + 1]
            member = (conf >= edges[b]) & upper
            if member.any():
                ece += member.mean() * abs(hit[member].mean() - conf[member].mean())
        result[f"{name}_ece"] = ece
    return {key: float(value) for key, value in result.items()}
