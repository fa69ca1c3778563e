"""Learned linear maps from student hidden width to teacher hidden width, one per layer pair.

They are trained with the student but are not part of it: the trainer keeps them in a separate module,
adds them to the optimizer, writes them to ``feature_projections.safetensors`` in every checkpoint, and
keeps them out of the saved student weights so the student reloads as a plain model.
"""

from __future__ import annotations

import json
import os

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .layer_maps import LayerMap

PROJECTIONS_FILE = "feature_projections.safetensors"


def pair_key(student_layer: int, teacher_layer: int) -> str:
    return f"s{student_layer}_t{teacher_layer}"


class FeatureProjections(nn.Module):
    """``ModuleDict`` of bias-free ``Linear(d_student, d_teacher)``, float32, one per mapped pair.

    Pairs get a projection when the widths differ or ``always`` is set; otherwise states pass through.
    Square projections start as the identity so adding them does not perturb the initial loss.
    """

    def __init__(self, layer_map: LayerMap, student_width: int, teacher_width: int, always: bool = False):
        super().__init__()
        self.layer_map = tuple(layer_map)
        self.student_width = student_width
        self.teacher_width = teacher_width
        self.projections = nn.ModuleDict()
        if always or student_width != teacher_width:
            for s, t in self.layer_map:
                linear = nn.Linear(student_width, teacher_width, bias=False, dtype=torch.float32)
                if student_width == teacher_width:
                    nn.init.eye_(linear.weight)
                self.projections[pair_key(s, t)] = linear

    def forward(self, student_layer: int, teacher_layer: int, states: Tensor) -> Tensor:
        """Project one pair's student states (any dtype) to the teacher width, in float32."""
        key = pair_key(student_layer, teacher_layer)
        if key in self.projections:
            return self.projections[key](states.float())
        return states.float()

    def describe(self) -> dict:
        """What the saved file must match to be reloaded (stored as safetensors metadata)."""
        return {
            "layer_map": [list(pair) for pair in self.layer_map],
            "student_width": self.student_width,
            "teacher_width": self.teacher_width,
            "projected_pairs": sorted(self.projections.keys()),
        }

    def save(self, directory: str) -> str:
        """Write the weights to ``directory/feature_projections.safetensors``; returns the path."""
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, PROJECTIONS_FILE)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, path, metadata={"hf_distill_feature_projections": json.dumps(self.describe())})
        return path

    def load(self, directory: str) -> None:
        """Load weights written by ``save``; refuses files made for a different map or widths."""
        path = os.path.join(directory, PROJECTIONS_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} not found: this checkpoint has no feature projections (was it written by FeatureKDTrainer?)."
            )
        from safetensors import safe_open

        with safe_open(path, framework="pt") as handle:
            saved = json.loads((handle.metadata() or {}).get("hf_distill_feature_projections", "{}"))
        if saved and saved != self.describe():
            raise ValueError(
                f"Feature projections in {path} were saved for {saved}, but this run uses {self.describe()}."
            )
        device = next(self.parameters()).device if len(self.projections) else torch.device("cpu")
        self.load_state_dict(load_file(path, device=str(device)))
