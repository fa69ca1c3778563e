"""Disk for offline KD columns, per token, from the Arrow layout measured in BENCHMARKS.md section 3.

top-k: ``k`` uint16 ids + ``k`` float16 log-probabilities + a float16 tail mass, plus a 4-byte list offset per
position for each of the two nested columns' rows of values -> 4k + 2 bytes (5k + 2 when ids need a third
byte, vocabularies above 65,536). sampled: ``d`` distinct ids (uint16) + ``d`` uint8 counts + float16 entropy
-> 3d + 10 bytes (4d + 14 above 65,536 ids); ``d`` measured 8.9 for 24 draws on SmolLM2 + Python source.
"""

from __future__ import annotations

UINT16_IDS = 1 << 16
MEASURED_DISTINCT_PER_24_DRAWS = 8.9


def offline_bytes_per_token(mode: str, vocab: int | None, k: int = 32, distinct: float | None = None) -> float:
    """Arrow bytes per token position of the offline columns (``vocab`` None: assume <= 65,536 ids)."""
    wide = vocab is not None and vocab > UINT16_IDS
    if mode == "offline_topk":
        return (5 if wide else 4) * k + 2
    if mode == "offline_sampled":
        d = MEASURED_DISTINCT_PER_24_DRAWS if distinct is None else distinct
        return (4 * d + 14) if wide else (3 * d + 10)
    raise ValueError(f"offline storage is defined for offline_topk and offline_sampled, not {mode!r}")
