"""The estimate for a recipe's own configuration, printed before training so the log shows what was expected.

The shapes come from the models the recipe built (the student after any layer subset, the teacher if one is
in memory); with precomputed columns or SeqKD completions the teacher's work is already done and not counted.
The device is the machine the recipe runs on: its memory, and no time or price (no table entry for it).
"""

from __future__ import annotations

from typing import Any

from .arguments import EstimateArguments
from .model_shape import ModelShape, resolve_model_shape
from .plan import estimate_distillation, format_estimate

RECIPE_MODES = {"logit": "logit", "cross_tokenizer": "logit", "offline": "offline_topk", "seqkd": "seqkd"}
NO_TEACHER = ModelShape(name="(no teacher in memory: precomputed signal)", params=0.0)


def recipe_estimate_text(mode: str, args: Any, student: Any, teacher: Any | None) -> str:
    """The estimate report for one training process of a recipe run (time and cost left out)."""
    import torch

    from ..modeling import core_model

    student_shape = resolve_model_shape(core_model(student).config, "student")
    teacher_shape = resolve_model_shape(teacher.config, "teacher") if teacher is not None else NO_TEACHER
    tokens_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    tokens = max(args.max_steps, 1) * tokens_per_step * args.max_length
    on_gpu = torch.cuda.is_available() and not getattr(args, "use_cpu", False)
    memory_gb = torch.cuda.get_device_properties(0).total_memory / 1e9 if on_gpu else _host_memory_gb()
    estimate = estimate_distillation(
        EstimateArguments(
            teacher=teacher_shape,
            student=student_shape,
            tokens=float(tokens),
            seq_len=args.max_length,
            micro_batch_size=args.per_device_train_batch_size,
            mode=RECIPE_MODES.get(mode, "logit"),
            seqkd_generation_length=0,  # the rows already hold the completions
            teacher_dtype=_dtype_name(teacher, getattr(args, "teacher_load_in_4bit", False)),
            student_dtype=_dtype_name(student, False),
            activation_checkpointing=bool(getattr(args, "gradient_checkpointing", False)),
            accelerator="this machine",
            num_devices=args.world_size,
            device_memory_gb=memory_gb,
            peak_tflops=1.0,
            price_per_hour=0.0,
        )
    )
    return format_estimate(estimate, with_cost=False)


def _dtype_name(model: Any, nf4: bool) -> str:
    if model is None:
        return "bf16"
    if nf4:
        return "nf4"
    dtype = next(model.parameters()).dtype
    return {"torch.float32": "fp32", "torch.float16": "fp16"}.get(str(dtype), "bf16")


def _host_memory_gb() -> float:
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
