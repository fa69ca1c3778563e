"""A student made from its teacher by keeping a subset of the teacher's layers (DistilBERT-style).

Why: a student initialised from the teacher's own weights starts close to it, so a short distillation run is
enough to recover much of the teacher's quality, which random initialisation could not do on a CPU budget.
Embeddings, the final norm and the LM head are copied whole; decoder layer ``indices[j]`` of the teacher becomes
layer ``j`` of the student.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence

from torch import nn

_LAYER_KEY = re.compile(r"^(?P<prefix>(?:.*\.)?layers)\.(?P<index>\d+)\.(?P<rest>.+)$")


def spaced_layer_indices(num_layers: int, num_keep: int) -> list[int]:
    """``num_keep`` layer indices spread evenly over ``num_layers``, always including the first and the last.

    The first layer reads raw embeddings and the last one feeds the final norm and LM head; dropping either
    costs the most, so both are kept and the rest are taken at a near-constant stride (every k-th layer).
    """
    if not 1 <= num_keep <= num_layers:
        raise ValueError(f"num_keep must be in [1, {num_layers}], got {num_keep}")
    if num_keep == 1:
        return [num_layers - 1]
    return [round(j * (num_layers - 1) / (num_keep - 1)) for j in range(num_keep)]


def check_layer_indices(indices: Sequence[int], num_layers: int) -> list[int]:
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("layer indices must not be empty")
    if sorted(set(indices)) != indices:
        raise ValueError(f"layer indices must be strictly increasing, got {indices}")
    if indices[0] < 0 or indices[-1] >= num_layers:
        raise ValueError(f"layer indices must be in [0, {num_layers}), got {indices}")
    return indices


def subset_state_dict(state_dict: dict, indices: Sequence[int]) -> dict:
    """The teacher's state dict with only the kept decoder layers, renumbered 0..len(indices)-1."""
    new_position = {old: new for new, old in enumerate(indices)}
    result = {}
    for key, value in state_dict.items():
        match = _LAYER_KEY.match(key)
        if match is None:
            result[key] = value
            continue
        old = int(match["index"])
        if old in new_position:
            result[f"{match['prefix']}.{new_position[old]}.{match['rest']}"] = value
    return result


def layer_subset_config(config, indices: Sequence[int]):
    """A copy of the teacher's config with ``len(indices)`` layers (per-layer settings subset too)."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    indices = check_layer_indices(indices, text_config.num_hidden_layers)
    new_config = copy.deepcopy(config)
    new_text = new_config.get_text_config() if hasattr(new_config, "get_text_config") else new_config
    new_text.num_hidden_layers = len(indices)
    # Per-layer lists (sliding/full attention pattern, ...) must follow the kept layers.
    for name in ("layer_types",):
        values = getattr(new_text, name, None)
        if isinstance(values, (list, tuple)) and len(values) == text_config.num_hidden_layers:
            setattr(new_text, name, [values[i] for i in indices])
    return new_config


def layer_subset_student(teacher: nn.Module, indices: Sequence[int]) -> nn.Module:
    """A new model of the teacher's class with the teacher's layers ``indices`` (copies, not shared tensors)."""
    config = layer_subset_config(teacher.config, indices)
    indices = check_layer_indices(indices, teacher.config.get_text_config().num_hidden_layers)
    student = type(teacher)(config)
    state = {key: value.detach().clone() for key, value in subset_state_dict(teacher.state_dict(), indices).items()}
    missing, unexpected = student.load_state_dict(state, strict=False)
    tied = set(getattr(student, "_tied_weights_keys", None) or {})
    missing = [key for key in missing if key not in tied]
    if missing or unexpected:
        raise RuntimeError(f"layer subset does not fit the student: missing={missing} unexpected={unexpected}")
    if getattr(config, "tie_word_embeddings", False):
        student.tie_weights()
    student.to(next(teacher.parameters()).dtype)
    student.config._name_or_path = getattr(teacher.config, "_name_or_path", "")
    return student.train(teacher.training)
