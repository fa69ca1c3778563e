"""A frozen teacher model run on every batch (bf16, fp16 or NF4), sharing the student's tokenizer."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ...forward_redirect import call_inside_forward
from ...losses.token_kd import LogitSource
from ...modeling import check_context_length, final_hidden_states, lm_head, supports_fused_head, vocab_rows
from ..frozen import check_same_vocabulary, materialize_teacher
from .base import Capabilities, TeacherRequest, TeacherSource
from .registry import register_teacher_source

if TYPE_CHECKING:  # pragma: no cover
    from ...trainers.kd_trainer import KDTrainer

logger = logging.getLogger(__name__)


def place_teacher(trainer: KDTrainer, teacher: nn.Module) -> nn.Module:
    """Put a teacher where each backend needs it: sharded under ZeRO-3/FSDP, replicated otherwise.

    A quantized (bitsandbytes NF4) teacher cannot be sharded: FSDP's flat DTensor shards and ZeRO-3's partitions
    would cut its packed 4-bit weights apart. Under FSDP every process holds it whole instead (an 8B teacher is
    about 5 GB in NF4), next to the sharded student; under ZeRO-3 it is refused.
    """
    quantized = is_quantized(teacher)
    check_quantized_placement(trainer, quantized)
    if trainer.is_deepspeed_enabled:
        from trl.models.utils import prepare_deepspeed

        return prepare_deepspeed(teacher, trainer.accelerator)
    if trainer.is_fsdp_enabled:
        if quantized:
            return teacher.to(trainer.accelerator.device)
        from trl.models.utils import prepare_fsdp

        return prepare_fsdp(teacher, trainer.accelerator)
    return trainer.accelerator.prepare_model(teacher, evaluation_mode=True)


def check_quantized_placement(trainer: KDTrainer, quantized: bool) -> None:
    """Refuse a quantized teacher under DeepSpeed ZeRO-3 (checked before loading too, as ZeRO-3 loads partitioned)."""
    plugin = trainer.accelerator.state.deepspeed_plugin if trainer.is_deepspeed_enabled else None
    if quantized and plugin is not None and plugin.zero_stage == 3:
        raise ValueError(
            "A quantized (NF4) teacher cannot be partitioned by DeepSpeed ZeRO-3 (teacher_load_in_4bit=True). "
            "Use FSDP (recipes/accelerate/fsdp.yaml: every process holds the NF4 teacher whole, the student is "
            "sharded) or DDP, or set teacher_load_in_4bit=False to partition a bf16 teacher under ZeRO-3."
        )


def is_quantized(model: nn.Module) -> bool:
    """Whether transformers loaded the model through a quantizer (bitsandbytes NF4/int8 and the like)."""
    return getattr(model, "hf_quantizer", None) is not None or bool(getattr(model, "is_loaded_in_4bit", False))


def check_teacher_vocabulary(trainer: KDTrainer, teacher: nn.Module, teacher_tokenizer: Any) -> int:
    """The shared vocabulary size; refuses teachers whose tokenizer differs from the student's."""
    student_tok = getattr(trainer.processing_class, "tokenizer", trainer.processing_class)
    teacher_tok = getattr(teacher_tokenizer, "tokenizer", teacher_tokenizer)
    if teacher_tok is None and student_tok is not None:
        teacher_tok = _tokenizer_saved_with(teacher)
    if teacher_tok is None:
        logger.warning(
            "The teacher was passed as a model without its tokenizer, so only the vocabulary sizes of teacher and "
            "student were compared; a teacher with another tokenizer of the same size would train silently wrong. "
            "Pass `teacher_processing_class=<the teacher's tokenizer>` to have the tokenizers compared."
        )
    student_vocab = vocab_rows(trainer.accelerator.unwrap_model(trainer.model))
    return check_same_vocabulary(student_vocab, vocab_rows(teacher), student_tok, teacher_tok)


def _tokenizer_saved_with(teacher: nn.Module) -> Any:
    """The tokenizer in the teacher's own local directory, if it was loaded from one that has it."""
    import os

    path = getattr(getattr(teacher, "config", None), "_name_or_path", "") or ""
    if not os.path.isdir(path) or not any(
        os.path.isfile(os.path.join(path, name)) for name in ("tokenizer.json", "tokenizer_config.json")
    ):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        return None


@torch.no_grad()
def teacher_logit_source(trainer: KDTrainer, teacher: nn.Module, model_inputs: dict[str, Tensor]) -> LogitSource:
    """One teacher's next-token signal over the whole batch: hidden states + `lm_head` (fused) or logits.

    The teacher runs in slices of `teacher_micro_batch_size` sequences, inside its wrapper's forward (so ZeRO-3 /
    FSDP gather its shards).
    """
    if trainer.args.check_teacher_context:
        check_context_length(trainer.accelerator.unwrap_model(teacher), model_inputs["input_ids"].shape[-1])
    unwrapped = trainer.accelerator.unwrap_model(teacher)
    fused = trainer.use_fused_head and supports_fused_head(unwrapped)
    batch = model_inputs["input_ids"].shape[0]
    step = trainer.args.teacher_micro_batch_size or batch
    pieces = []
    for start in range(0, batch, step):
        micro = {
            k: (v[start : start + step] if torch.is_tensor(v) and v.dim() > 0 else v) for k, v in model_inputs.items()
        }
        if fused:
            pieces.append(call_inside_forward(teacher, unwrapped, final_hidden_states, unwrapped, micro))
        else:
            pieces.append(teacher(**micro, use_cache=False).logits)
    states = torch.cat(pieces, dim=0)
    states = states.reshape(-1, states.shape[-1])
    if not fused:
        return LogitSource(states)
    head = lm_head(unwrapped)
    # Detached views: they keep pointing at the values used now even if the parameters' data is swapped later.
    bias = None if head.bias is None else head.bias.detach()
    return LogitSource(states, head.weight.detach(), bias)


@register_teacher_source
class LiveTeacher(TeacherSource):
    """A frozen teacher model with the student's tokenizer: logits (or hidden states) on every batch."""

    kind = "live"
    priority = 50
    capabilities = Capabilities(same_vocabulary=True, layer_features=True, packed_batches=True)

    @classmethod
    def claims(cls, request: TeacherRequest) -> bool:
        teacher = request.teacher_or_name
        return isinstance(teacher, (str, nn.Module)) and not getattr(request.args, "cross_tokenizer", False)

    def __init__(self, request: TeacherRequest) -> None:
        super().__init__(request)
        self.model: nn.Module | None = None
        self.tokenizer = request.teacher_processing_class

    def setup(self, trainer: KDTrainer) -> None:
        check_quantized_placement(trainer, trainer.args.teacher_load_in_4bit)
        model, self.tokenizer = materialize_teacher(self.request.teacher_or_name, trainer.args, self.tokenizer)
        trainer.shared_vocab_size = check_teacher_vocabulary(trainer, model, self.tokenizer)
        self.model = place_teacher(trainer, model)

    @property
    def modules(self) -> list[nn.Module]:
        return [self.model] if self.model is not None else []

    def describe(self) -> str:
        name = getattr(getattr(self.model, "config", None), "_name_or_path", "") or type(self.model).__name__
        return f"live teacher {name}"

    def signal(self, trainer: KDTrainer, inputs: dict[str, Any], model_inputs: dict[str, Tensor]) -> LogitSource:
        return teacher_logit_source(trainer, self.model, model_inputs)
