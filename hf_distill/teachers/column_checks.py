"""Per-position consistency of precomputed teacher columns: total probability mass and distinct ids.

Malformed columns (probabilities that do not add up, an id listed twice at one position) would otherwise train
without complaint: the top-k loss credits the stored mass as if it were a distribution and writes one gradient
entry per id, so a repeated id silently drops mass. These checks describe the first bad position
(column, row, position); ``columns.validate_columns`` raises what they return.
"""

from __future__ import annotations

import math

import numpy as np

# Unit roundoff (half the spacing of numbers in [1, 2)) of the dtypes log-probabilities are stored in.
_UNIT_ROUNDOFF = {"float16": 2.0**-11, "bfloat16": 2.0**-8, "float32": 2.0**-24}
# Rounding of the teacher's own float32 log-softmax and log-sum-exp before storage (the sums here are float64).
_COMPUTE_SLACK = 1e-5


def mass_tolerance(value_dtype: str, k: int) -> float:
    """How far ``sum_i exp(logprob_i) + tail`` may sit from 1 after storage rounding alone.

    Storing a log-probability ``l`` rounds it to ``l (1 + e)`` with ``|e| <= u`` (the dtype's unit roundoff), so
    the probability becomes ``p exp(e l)``: an error of about ``u p |log p|``. Summed over the k stored tokens
    that is at most ``u`` times the entropy of the (k tokens + tail) distribution, which is at most
    ``log(k + 1)``. The tail mass is stored rounded too: at most ``u`` more. Twice that bound, plus slack for
    the teacher's float32 arithmetic, is what an honest capture can be off by; float16 storage with k = 64
    gives about 0.005, far below the errors these checks look for (a dropped or doubled token, unnormalised
    logits stored as log-probabilities).
    """
    u = _UNIT_ROUNDOFF[value_dtype]
    return 2.0 * u * (math.log(k + 1) + 1.0) + _COMPUTE_SLACK


def _row_and_position(position: int, seq_lengths: np.ndarray) -> tuple[int, int]:
    """(row within the batch, position within that row) of a flat position index."""
    ends = np.cumsum(seq_lengths)
    row = int(np.searchsorted(ends, position, side="right"))
    return row, position - int(ends[row] - seq_lengths[row])


def total_mass_problem(
    logprobs: np.ndarray,
    tail_mass: np.ndarray,
    k: int,
    value_dtype: str,
    seq_lengths: np.ndarray,
    offset: int,
    names: tuple[str, str],
) -> str | None:
    """What is wrong with the first position whose stored probabilities plus tail mass are not 1 within
    `mass_tolerance`, or None."""
    if not tail_mass.size:
        return None
    probs = np.exp(logprobs.astype(np.float64).reshape(-1, k))
    totals = probs.sum(-1) + tail_mass.astype(np.float64)
    tolerance = mass_tolerance(value_dtype, k)
    bad = np.abs(totals - 1.0) > tolerance
    if not bad.any():
        return None
    position = int(np.flatnonzero(bad)[0])
    row, where = _row_and_position(position, seq_lengths)
    return (
        f"Columns {names[0]!r} (as probabilities) plus {names[1]!r} sum to {totals[position]:.6f} instead of 1 "
        f"at row {offset + row}, position {where} ({int(bad.sum())} such positions in rows from {offset}; "
        f"tolerance {tolerance:.2g} for {value_dtype} storage). Store log-probabilities (log_softmax), not "
        "logits, and the probability of every token outside the top k as the tail mass."
    )


def repeated_id_problem(
    ids: np.ndarray, widths: np.ndarray, seq_lengths: np.ndarray, offset: int, name: str
) -> str | None:
    """What is wrong with the first position that lists a token id twice (`widths` ids per position, flattened
    in `ids`), or None."""
    if not ids.size:
        return None
    found = _first_repeat(ids, widths)
    if found is None:
        return None
    position, token = found
    row, where = _row_and_position(position, seq_lengths)
    return (
        f"Column {name!r} lists token id {token} twice at row {offset + row}, position {where}; "
        "each position must hold distinct ids (the top-k loss writes one gradient entry per id, so a repeat "
        "loses mass; a repeat also means the columns were not built from one distribution). Rebuild them."
    )


def _first_repeat(ids: np.ndarray, widths: np.ndarray) -> tuple[int, int] | None:
    """(flat position, token id) of the first position that holds an id twice, or None."""
    if (widths == widths[0]).all():  # top-k: a fixed width, so sort each position's ids in its own row
        ordered = np.sort(ids.reshape(widths.size, int(widths[0])), axis=1)
        repeated = ordered[:, 1:] == ordered[:, :-1]
        if not repeated.any():
            return None
        position = int(np.flatnonzero(repeated.any(1))[0])
        return position, int(ordered[position, 1:][repeated[position]][0])
    # Ragged (sampled): one sort of (position, id) packed into an int64 key.
    span = int(ids.max()) + 1
    keys = np.sort(np.repeat(np.arange(widths.size, dtype=np.int64), widths) * span + ids)
    repeated = np.flatnonzero(keys[1:] == keys[:-1])
    if not repeated.size:
        return None
    key = int(keys[repeated[0]])
    return key // span, key % span
