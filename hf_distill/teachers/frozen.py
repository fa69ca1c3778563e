"""A frozen teacher model: loading (bf16/fp16/NF4), freezing, and checking it against the student."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class TeacherLoadError(OSError):
    """The teacher (or its tokenizer) could not be loaded; the message says how to point to a local copy."""


def _resolve_dtype(name: str | None) -> Any:
    if name in (None, "auto"):
        return "auto"
    if name not in _DTYPES:
        raise ValueError(f"Unknown teacher dtype {name!r}; use one of auto, {', '.join(_DTYPES)}.")
    return _DTYPES[name]


def teacher_load_kwargs(
    init_kwargs: dict[str, Any] | None, dtype: str | None = "auto", load_in_4bit: bool = False
) -> dict[str, Any]:
    """`from_pretrained` keyword arguments for a teacher, with NF4 quantization when asked for."""
    kwargs = dict(init_kwargs or {})
    resolved = _resolve_dtype(dtype)
    kwargs.setdefault("dtype", resolved)
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        compute_dtype = resolved if isinstance(resolved, torch.dtype) else torch.bfloat16
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        )
    return kwargs


def load_teacher(name_or_path: str, **kwargs: Any) -> nn.Module:
    """Load a causal LM teacher; a missing model gets an error naming it and the way to use a local copy."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    except OSError as err:
        raise TeacherLoadError(
            f"Could not load the model {name_or_path!r}: {err}\n"
            "If the Hugging Face Hub is unreachable, download the model once elsewhere (e.g. "
            f"`hf download {name_or_path} --local-dir /path/to/model`) and pass that directory instead, "
            "or set HF_HUB_OFFLINE=1 with the model already in the local Hub cache."
        ) from err


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no gradients: the teacher must never change or hold optimizer state."""
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def _split_vocab(tokenizer: Any) -> tuple[dict[str, int], dict[str, int]]:
    """(regular vocabulary, added/special tokens) of a tokenizer."""
    added = dict(tokenizer.get_added_vocab()) if hasattr(tokenizer, "get_added_vocab") else {}
    regular = {tok: idx for tok, idx in tokenizer.get_vocab().items() if tok not in added}
    return regular, added


def describe_tokenizer_difference(student_tok: Any, teacher_tok: Any) -> str | None:
    """None when both tokenizers map the same regular strings to the same ids, else a short description.

    Added/special tokens may be *named* differently at the same ids (DeepSeek-R1-Distill-Llama renames
    Llama 3's special tokens): logits are compared by id, so that is reported as a warning, not an error.
    """
    student_vocab, student_added = _split_vocab(student_tok)
    teacher_vocab, teacher_added = _split_vocab(teacher_tok)
    if student_vocab == teacher_vocab:
        if student_added != teacher_added:
            renamed = sorted(set(student_added.items()) ^ set(teacher_added.items()), key=lambda item: item[1])[:6]
            logger.warning("Teacher and student special tokens differ (compared by id): %s", renamed)
        return None
    only_student = sorted(set(student_vocab) - set(teacher_vocab))[:5]
    only_teacher = sorted(set(teacher_vocab) - set(student_vocab))[:5]
    moved = [tok for tok in student_vocab if tok in teacher_vocab and student_vocab[tok] != teacher_vocab[tok]][:5]
    parts = [f"student tokenizer has {len(student_vocab)} regular entries, teacher tokenizer {len(teacher_vocab)}"]
    if only_student:
        parts.append(f"only in student: {only_student}")
    if only_teacher:
        parts.append(f"only in teacher: {only_teacher}")
    if moved:
        parts.append(f"same string, different id: {moved}")
    return "; ".join(parts)


def check_same_vocabulary(
    student_vocab_size: int,
    teacher_vocab_size: int,
    student_tokenizer: Any | None = None,
    teacher_tokenizer: Any | None = None,
) -> int:
    """Return the shared vocabulary size, or raise if logit-level KD between the two is impossible.

    Embedding matrices padded to different sizes (e.g. 151,936 vs 152,064) are fine as long as every real
    token id fits in both; the loss then compares the shared range.
    """
    hint = (
        " Logit distillation needs one tokenizer for both models; for different tokenizers pass "
        "`teacher_processing_class` and set `cross_tokenizer=True` (tokenizer-agnostic loss), or use "
        "sequence-level KD (SeqKDTrainer)."
    )
    if student_tokenizer is not None and teacher_tokenizer is not None:
        difference = describe_tokenizer_difference(student_tokenizer, teacher_tokenizer)
        if difference is not None:
            raise ValueError(f"Teacher and student tokenizers differ: {difference}.{hint}")
    shared = min(student_vocab_size, teacher_vocab_size)
    if student_vocab_size != teacher_vocab_size:
        needed = len(student_tokenizer) if student_tokenizer is not None else None
        if needed is None or needed > shared:
            raise ValueError(
                f"Teacher vocab_size {teacher_vocab_size} differs from the student's {student_vocab_size}"
                + (f" and the tokenizer has {needed} tokens" if needed is not None else "")
                + "; cannot tell whether this is only embedding padding."
                + hint
            )
        logger.info(
            "Teacher and student embeddings are padded differently (%d vs %d); comparing the shared %d ids.",
            teacher_vocab_size,
            student_vocab_size,
            shared,
        )
    return shared


def try_load_tokenizer(name: str) -> Any:
    """The tokenizer saved with a teacher loaded by name or path."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except OSError as err:
        raise TeacherLoadError(
            f"Could not load the tokenizer of teacher {name!r}: {err}\nPass a local directory as the teacher, "
            "or pass `teacher_processing_class` explicitly."
        ) from err


def materialize_teacher(
    teacher: Any, args: Any, tokenizer: Any = None, loaded_as_is: bool = False
) -> tuple[nn.Module, Any]:
    """A frozen teacher model and its tokenizer (loaded with it when the teacher is given by name or path).

    The config's loading settings (NF4, init kwargs) apply to teachers given by name; a model object is refused
    with them, unless ``loaded_as_is`` says objects are expected to arrive in their own form (ensembles).
    """
    if isinstance(teacher, str):
        if tokenizer is None:
            tokenizer = try_load_tokenizer(teacher)
        kwargs = teacher_load_kwargs(args.teacher_model_init_kwargs, args.teacher_dtype, args.teacher_load_in_4bit)
        teacher = load_teacher(teacher, **kwargs)
    elif not loaded_as_is and (args.teacher_load_in_4bit or args.teacher_model_init_kwargs):
        raise ValueError(
            "teacher_load_in_4bit / teacher_model_init_kwargs apply when the teacher is loaded by name; the "
            "teacher_model you passed is already instantiated. Pass its name or path, or quantize it yourself."
        )
    if not isinstance(teacher, nn.Module):
        raise TypeError(f"A teacher must be a model or a name/path, got {type(teacher).__name__}.")
    return freeze(teacher), tokenizer
