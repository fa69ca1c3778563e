"""Model cards for distilled students, rendered from the package-data template `templates/distilled_model_card.md`.

A card states what a user needs to trust or reject a distilled model: the student's base model and how it was
initialised, the teacher, the distillation method with its hyperparameters, the data, the before/after
evaluation table, intended use and limits. `ModelCardMixin` makes a Trainer write it on every save (checkpoints
included) and on `push_to_hub`, whose upload then carries it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

TEMPLATE_ENV_VAR = "HF_DISTILL_MODEL_CARD_TEMPLATE"
# Package data (pyproject's [tool.setuptools.package-data]), so installed wheels carry it.
DEFAULT_TEMPLATE = Path(__file__).parent / "templates" / "distilled_model_card.md"

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")

DEFAULT_INTENDED_USE = (
    "Research and prototyping of smaller, faster code models: the student is meant to be evaluated against its "
    "teacher on your own held-out data before use, and fine-tuned further where it falls short."
)
DEFAULT_LIMITATIONS = (
    "A distilled student inherits the teacher's errors, biases and licence terms, and is usually weaker than the "
    "teacher, most of all on inputs unlike its distillation data. Generated code can be wrong or insecure: "
    "review and test it before running it."
)

# Training arguments shown in the card, in this order, when present.
_HYPERPARAMETERS = (
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "max_steps",
    "num_train_epochs",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "weight_decay",
    "seed",
)
_KD_HYPERPARAMETERS = ("divergence", "temperature", "alpha", "jsd_beta", "skew_lambda", "beta")


@dataclass
class ModelCardInfo:
    """What the trainer cannot know by itself; every field has a sensible default."""

    model_name: str | None = None
    base_model: str | None = None
    teacher: str | None = None
    student_init: str = "the base model's pretrained weights"
    method: str | None = None
    data: str = "Not recorded."
    evaluation: str = "No evaluation was recorded for this model."
    intended_use: str = DEFAULT_INTENDED_USE
    limitations: str = DEFAULT_LIMITATIONS
    datasets: list[str] = field(default_factory=list)
    license: str | None = None
    extra_hyperparameters: dict[str, Any] = field(default_factory=dict)


def template_path(path: str | os.PathLike | None = None) -> Path:
    """The card template: the argument, else ``$HF_DISTILL_MODEL_CARD_TEMPLATE``, else the packaged one."""
    chosen = Path(path or os.environ.get(TEMPLATE_ENV_VAR) or DEFAULT_TEMPLATE)
    if not chosen.is_file():
        raise FileNotFoundError(
            f"Model card template {chosen} not found; pass template=... or set {TEMPLATE_ENV_VAR} to a template "
            "file (see hf_distill/templates/distilled_model_card.md in the hf_distill repository)."
        )
    return chosen


def describe_method(args: Any) -> str:
    """One line naming the loss from a `KDConfig`-like object (or 'sequence-level KD' for SeqKD configs)."""
    divergence = getattr(args, "divergence", None)
    if divergence is None:
        return "supervised fine-tuning (no distillation loss)"
    alpha = getattr(args, "alpha", None)
    temperature = getattr(args, "temperature", None)
    prefix = "sequence-level KD on teacher completions, with " if hasattr(args, "completion_column") else ""
    if alpha == 0:
        return prefix + "cross-entropy on the labels only (alpha = 0, no teacher term)"
    return (
        f"{prefix}token-level logit distillation: alpha * T^2 * {divergence}(teacher || student) + (1 - alpha) * "
        f"cross-entropy, with alpha = {alpha} and temperature T = {temperature}"
    )


def hyperparameter_rows(args: Any, extra: dict[str, Any] | None = None) -> list[tuple[str, Any]]:
    rows = [(name, getattr(args, name)) for name in _KD_HYPERPARAMETERS + _HYPERPARAMETERS if hasattr(args, name)]
    rows = [(name, value.value if hasattr(value, "value") else value) for name, value in rows]
    divergence = str(getattr(args, "divergence", ""))
    unused = {"jsd_beta"} if divergence != "jsd" else set()
    unused |= {"skew_lambda"} if not divergence.startswith("skew") else set()
    rows = [(name, value) for name, value in rows if name not in unused]
    if getattr(args, "max_steps", -1) and getattr(args, "max_steps", -1) > 0:
        rows = [(name, value) for name, value in rows if name != "num_train_epochs"]
    return rows + list((extra or {}).items())


def _front_matter(info: ModelCardInfo, tags: list[str]) -> str:
    lines = []
    if info.base_model and _HUB_ID.match(info.base_model) and not os.path.isdir(info.base_model):
        lines.append(f"base_model: {info.base_model}")
    lines.append("library_name: transformers")
    if info.license:
        lines.append(f"license: {info.license}")
    if info.datasets:
        lines += ["datasets:", *(f"- {name}" for name in info.datasets)]
    lines += ["tags:", *(f"- {tag}" for tag in dict.fromkeys(tags))]
    return "\n".join(lines)


def _versions() -> str:
    import torch
    import transformers
    import trl

    from ._version import __version__

    return (
        f"hf_distill {__version__}, transformers {transformers.__version__}, trl {trl.__version__}, "
        f"torch {torch.__version__}"
    )


def render_model_card(
    info: ModelCardInfo,
    args: Any = None,
    *,
    repo_id: str | None = None,
    tags: list[str] | None = None,
    template: str | os.PathLike | None = None,
) -> str:
    """The card text: ``info`` plus the method and hyperparameters read from the training ``args``."""
    model_name = info.model_name or (repo_id.split("/")[-1] if repo_id else "distilled-student")
    method = info.method or (describe_method(args) if args is not None else "knowledge distillation")
    rows = hyperparameter_rows(args, info.extra_hyperparameters) if args is not None else []
    table = "\n".join(f"| {name} | {value} |" for name, value in rows) or "| (not recorded) | |"
    values = {
        "front_matter": _front_matter(info, ["hf_distill", "knowledge-distillation", *(tags or [])]),
        "model_name": model_name,
        "base_model": info.base_model or "unknown",
        "teacher": info.teacher or "unknown",
        "student_init": info.student_init,
        "method": method,
        "method_short": method.split(":")[0],
        "hyperparameters": table,
        "data": info.data,
        "evaluation": info.evaluation,
        "intended_use": info.intended_use,
        "limitations": info.limitations,
        "repo_id": repo_id or f"path/to/{model_name}",
        "versions": _versions(),
    }
    return Template(template_path(template).read_text(encoding="utf-8")).substitute(values)


def _name(model: Any) -> str | None:
    config = getattr(model, "config", None)
    name = getattr(config, "_name_or_path", None) or getattr(model, "name_or_path", None)
    return str(name) if name else None


def trainer_card_info(trainer: Any) -> ModelCardInfo:
    """The trainer's `model_card_info` if the caller set one, completed with what the trainer knows."""
    info = getattr(trainer, "model_card_info", None) or ModelCardInfo()
    args = trainer.args
    core = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    if info.base_model is None:
        info.base_model = _name(core)
    if info.teacher is None:
        teacher = getattr(trainer, "teacher_model", None)
        info.teacher = getattr(args, "teacher_model_name_or_path", None) or (_name(teacher) if teacher else None)
        source = getattr(trainer, "teacher_source", None)
        if source is not None and (info.teacher is None or source.kind in ("ema", "ensemble", "precomputed")):
            info.teacher = source.describe()  # e.g. "EMA self-teacher (decay 0.999)", "ensemble of 2 teachers"
    return info


def write_model_card(
    trainer: Any,
    output_dir: str | os.PathLike | None = None,
    *,
    model_name: str | None = None,
    tags: str | list[str] | None = None,
    dataset_name: str | None = None,
) -> Path:
    """Render the card for ``trainer`` into ``<output_dir>/README.md`` (default: the trainer's output_dir)."""
    info = trainer_card_info(trainer)
    if model_name and not info.model_name:
        info.model_name = model_name
    if dataset_name and dataset_name not in info.datasets:
        info.datasets.append(dataset_name)
    tags = [tags] if isinstance(tags, str) else list(tags or [])
    tags += [tag for tag in getattr(trainer, "_tag_names", []) if tag not in tags]
    repo_id = getattr(trainer, "hub_model_id", None) or trainer.args.hub_model_id
    text = render_model_card(info, trainer.args, repo_id=repo_id, tags=tags)
    path = Path(output_dir or trainer.args.output_dir) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


class ModelCardMixin:
    """Trainer mixin: the distillation card replaces the generic one on `save_model` and `push_to_hub`.

    Set `trainer.model_card_info = ModelCardInfo(...)` (e.g. with the evaluation table) before saving.
    """

    model_card_info: ModelCardInfo | None = None

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: str | list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        if self.is_world_process_zero():
            write_model_card(self, model_name=model_name, tags=tags, dataset_name=dataset_name)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict=state_dict)
        if self.args.should_save:
            write_model_card(self, output_dir)
