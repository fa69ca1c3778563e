"""`KDTrainer`: TRL's `SFTTrainer` with a frozen teacher and a token-level distillation loss.

The story of one step (`compute_loss`):
1. get the teacher signal for the batch (a frozen model's logits or hidden states, no gradients);
2. run the student, inside its wrapper's forward, and combine both into named loss terms;
3. normalise once by the number of target tokens of the whole accumulated, multi-process batch;
4. keep token-weighted sums of the terms for logging.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel, TrainingArguments
from trl import SFTTrainer

from ..losses.sparse_kd import SparseTeacherSignal
from ..losses.token_kd import KDLossTerms, LogitSource, causal_targets, token_kd_loss
from ..model_card import ModelCardMixin
from ..teachers.frozen import TeacherLoadError, check_same_vocabulary, freeze, load_teacher, teacher_load_kwargs
from .forward_redirect import call_inside_forward
from .input_checks import check_after_sft_init, check_before_sft_init
from .kd_config import KDConfig
from .offline_signal import attach_offline_signal, keep_signal_columns
from .schedules import scheduled_temperature
from .step_sums import StepSums

logger = logging.getLogger(__name__)

# Keys of a collated batch that are model inputs (the rest are labels or teacher columns).
MODEL_INPUT_KEYS = (
    "input_ids",
    "attention_mask",
    "position_ids",
    "cu_seq_lens_q",
    "cu_seq_lens_k",
    "max_length_q",
    "max_length_k",
)
# Config attributes through which a model post-processes its logits; the fused path would skip them.
_LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier")


def core_model(model: nn.Module) -> nn.Module:
    """The transformers model under a PEFT wrapper (LoRA layers stay injected in it)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def supports_fused_head(model: nn.Module) -> bool:
    """Whether logits are exactly `hidden @ lm_head.weight.T (+ bias)`, so they can be formed per chunk."""
    core = core_model(model)
    config = getattr(core, "config", None)
    if config is None or not hasattr(core, "get_output_embeddings"):
        return False
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    if any(getattr(text_config, attr, None) not in (None, 1, 1.0) for attr in _LOGIT_POSTPROCESSING):
        return False
    head = core.get_output_embeddings()
    return isinstance(head, nn.Linear) and head.weight.dtype in (torch.float32, torch.bfloat16, torch.float16)


def _rows(weight: Tensor) -> int:
    """Row count of a weight, also when DeepSpeed ZeRO-3 has partitioned it (its local shape is then empty)."""
    return int(getattr(weight, "ds_shape", weight.shape)[0])


class KDTrainer(ModelCardMixin, SFTTrainer):
    """Knowledge distillation as a drop-in replacement for `SFTTrainer` (and so for `Trainer`).

    Args:
        model: the student, a model or a Hub id / local path (loaded with `args.model_init_kwargs`).
        args: a `KDConfig`; a plain `TrainingArguments`/`SFTConfig` is converted with default KD settings.
        teacher_model: the teacher, a model or a Hub id / local path; defaults to
            `args.teacher_model_name_or_path`. It is frozen and never receives gradients.
        teacher_processing_class: the teacher's tokenizer, used to check that both models share one, or, with
            `args.cross_tokenizer=True`, to tokenize the text for the teacher (different tokenizers).
        teacher_prompt_fn: with `cross_tokenizer`, rewrites the student's prompt text into the teacher's
            format (e.g. its chat template); default: the teacher reads the same text.
        Everything else is passed to `SFTTrainer` unchanged (datasets in any of its formats, collators,
        callbacks, `peft_config` for a LoRA student, ...).
    """

    _tag_names = ["trl", "sft", "hf_distill", "knowledge-distillation"]

    def __init__(
        self,
        model: str | PreTrainedModel | nn.Module,
        args: KDConfig | TrainingArguments | None = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        *,
        teacher_model: str | PreTrainedModel | nn.Module | None = None,
        teacher_processing_class: Any = None,
        teacher_prompt_fn: Callable[[str], str] | None = None,
        **sft_kwargs: Any,
    ) -> None:
        args = self._as_kd_config(model, args)
        self.loss_spec = args.loss_spec()
        check_before_sft_init(model, args, train_dataset, processing_class)
        super().__init__(
            model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **sft_kwargs,
        )
        check_after_sft_init(self.train_dataset, train_dataset)
        # Our loss is a sum normalised by `num_items_in_batch`: make the Trainer always count it (over shifted
        # labels) and treat the result as already scaled for gradient accumulation.
        self.model_accepts_loss_kwargs = True
        self._loss_shifts_labels = True
        self.step_sums = StepSums()

        teacher_model = teacher_model if teacher_model is not None else args.teacher_model_name_or_path
        self.teacher_model: nn.Module | None = None
        self.teacher_processing_class = teacher_processing_class
        self.cross_tokenizer = None  # a CrossTokenizerDistiller when args.cross_tokenizer
        self._teacher_prompt_fn = teacher_prompt_fn
        if teacher_model is not None:
            self._setup_teacher(teacher_model, args)
        # No teacher model: learn from precomputed teacher columns if the datasets carry them.
        self.offline_signal = attach_offline_signal(self) if self.teacher_model is None else None
        self.use_fused_head = self._decide_fused(args)

    # ---- construction -------------------------------------------------------------------------------

    @staticmethod
    def _as_kd_config(model: Any, args: TrainingArguments | None) -> KDConfig:
        if args is None:
            name = model if isinstance(model, str) else getattr(getattr(model, "config", None), "_name_or_path", "")
            return KDConfig(output_dir=f"{str(name).rstrip('/').split('/')[-1] or 'student'}-KD")
        if isinstance(args, KDConfig):
            return args
        # Copy field values directly: `to_dict()` masks every `*_token` field (eos_token, hub_token, ...).
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init}
        return KDConfig(**{k: v for k, v in values.items() if k in KDConfig.__dataclass_fields__})

    def _setup_teacher(self, teacher: str | nn.Module, args: KDConfig) -> None:
        if isinstance(teacher, str):
            name = teacher
            if self.teacher_processing_class is None:
                self.teacher_processing_class = self._try_load_tokenizer(name)
            teacher = load_teacher(
                name,
                **teacher_load_kwargs(args.teacher_model_init_kwargs, args.teacher_dtype, args.teacher_load_in_4bit),
            )
        elif args.teacher_load_in_4bit or args.teacher_model_init_kwargs:
            raise ValueError(
                "teacher_load_in_4bit / teacher_model_init_kwargs apply when the teacher is loaded by name; the "
                "teacher_model you passed is already instantiated. Pass its name or path, or quantize it yourself."
            )
        freeze(teacher)
        if args.cross_tokenizer:
            from .cross_tokenizer import build_distiller

            self.cross_tokenizer = build_distiller(self, teacher, self._teacher_prompt_fn)
        else:
            self._check_teacher_vocabulary(teacher)
        self.teacher_model = self._place_teacher(teacher)

    @staticmethod
    def _try_load_tokenizer(name: str) -> Any:
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(name)
        except OSError as err:
            raise TeacherLoadError(
                f"Could not load the tokenizer of teacher {name!r}: {err}\nPass a local directory as the teacher, "
                "or pass `teacher_processing_class` explicitly."
            ) from err

    def _check_teacher_vocabulary(self, teacher: nn.Module) -> None:
        student_core = core_model(self.accelerator.unwrap_model(self.model))
        student_vocab = _rows(student_core.get_output_embeddings().weight)
        teacher_vocab = _rows(core_model(teacher).get_output_embeddings().weight)
        student_tok = getattr(self.processing_class, "tokenizer", self.processing_class)
        teacher_tok = getattr(self.teacher_processing_class, "tokenizer", self.teacher_processing_class)
        self.shared_vocab_size = check_same_vocabulary(student_vocab, teacher_vocab, student_tok, teacher_tok)

    def _place_teacher(self, teacher: nn.Module) -> nn.Module:
        """Put the teacher where each backend needs it: sharded under ZeRO-3/FSDP, replicated otherwise."""
        if self.is_deepspeed_enabled:
            from trl.models.utils import prepare_deepspeed

            return prepare_deepspeed(teacher, self.accelerator)
        if self.is_fsdp_enabled:
            from trl.models.utils import prepare_fsdp

            return prepare_fsdp(teacher, self.accelerator)
        return self.accelerator.prepare_model(teacher, evaluation_mode=True)

    def _decide_fused(self, args: KDConfig) -> bool:
        sharded = self.is_fsdp_enabled or (
            self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.zero_stage == 3
        )
        possible = supports_fused_head(self.model) and not sharded
        if args.fused_lm_head and not possible:
            raise ValueError(
                "fused_lm_head=True is not possible here: the student post-processes its logits or its lm_head is "
                "sharded (DeepSpeed ZeRO-3 / FSDP). Leave fused_lm_head unset to choose automatically."
            )
        return possible if args.fused_lm_head is None else args.fused_lm_head

    # ---- the step ----------------------------------------------------------------------------------

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, Any]:
        if self.args.temperature_schedule != "constant" and model.training:
            self.loss_spec = self.args.loss_spec(temperature=self.current_temperature())
        model_inputs = {k: v for k, v in inputs.items() if k in MODEL_INPUT_KEYS}
        if self.cross_tokenizer is not None:
            from .cross_tokenizer import cross_tokenizer_terms

            terms = cross_tokenizer_terms(self, model, inputs)
        else:
            targets = causal_targets(inputs["labels"])
            teacher_signal = self.teacher_signal(inputs, model_inputs)
            terms = self.student_terms(model, model_inputs, targets, teacher_signal)

        loss = self.normalise(terms.loss, terms.num_tokens, num_items_in_batch)
        self._accumulate_metrics(terms)
        if return_outputs:
            with torch.no_grad():
                outputs = model(**model_inputs, use_cache=False)
            return loss, outputs
        return loss

    def current_temperature(self) -> float:
        """The temperature for the current optimizer step under `temperature_schedule`."""
        args = self.args
        step, total = self.state.global_step, self.state.max_steps
        return scheduled_temperature(args.temperature_schedule, args.temperature, args.temperature_end, step, total)

    def normalise(self, loss_sum: Tensor, local_tokens: Tensor, num_items_in_batch: Tensor | int | None) -> Tensor:
        """Divide the summed loss once by the target-token count of the whole optimizer step.

        `num_items_in_batch` counts every micro-batch of the accumulation and, with
        `average_tokens_across_devices`, every process; DDP then averages gradients over processes, which the
        multiplication by the process count undoes.
        """
        if num_items_in_batch is None:
            return loss_sum / local_tokens.clamp(min=1).to(loss_sum.dtype)
        loss = loss_sum / torch.as_tensor(num_items_in_batch, device=loss_sum.device).clamp(min=1)
        if self.args.average_tokens_across_devices:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        return loss

    @torch.no_grad()
    def teacher_signal(self, inputs: dict[str, Any], model_inputs: dict[str, Tensor]) -> Any:
        """The teacher's next-token signal for every position of the batch, as a `LogitSource`."""
        if self.teacher_model is None and self.offline_signal is not None:
            return self.offline_signal.from_batch(inputs)
        if self.teacher_model is None:
            raise ValueError(
                "KDTrainer has no teacher: pass `teacher_model`, set `teacher_model_name_or_path`, or train from "
                "precomputed teacher columns."
            )
        teacher = self.teacher_model
        self._check_teacher_context(model_inputs["input_ids"])
        unwrapped = self.accelerator.unwrap_model(teacher)
        fused = self.use_fused_head and supports_fused_head(unwrapped)
        batch = model_inputs["input_ids"].shape[0]
        step = self.args.teacher_micro_batch_size or batch
        pieces = []
        for start in range(0, batch, step):
            micro = {
                k: (v[start : start + step] if torch.is_tensor(v) and v.dim() > 0 else v)
                for k, v in model_inputs.items()
            }
            if fused:
                hidden = call_inside_forward(teacher, unwrapped, self._backbone_states, unwrapped, micro)
                pieces.append(hidden)
            else:
                pieces.append(teacher(**micro, use_cache=False).logits)
        states = torch.cat(pieces, dim=0)
        states = states.reshape(-1, states.shape[-1])
        if not fused:
            return LogitSource(states)
        head = core_model(unwrapped).get_output_embeddings()
        return LogitSource(states, head.weight, head.bias)

    def _check_teacher_context(self, input_ids: Tensor) -> None:
        if not self.args.check_teacher_context:
            return
        config = core_model(self.accelerator.unwrap_model(self.teacher_model)).config.get_text_config()
        limit = getattr(config, "max_position_embeddings", None)
        if limit is not None and input_ids.shape[-1] > limit:
            raise ValueError(
                f"Batch sequence length {input_ids.shape[-1]} exceeds the teacher's context of {limit} tokens; "
                "set `max_length` to at most that, or `check_teacher_context=False` if the teacher extrapolates."
            )

    @staticmethod
    def _backbone_states(model: nn.Module, model_inputs: dict[str, Tensor]) -> Tensor:
        """Final hidden states (after the last norm), i.e. what the `lm_head` sees."""
        backbone = core_model(model).base_model
        return backbone(**model_inputs, use_cache=False).last_hidden_state

    def student_terms(
        self, model: nn.Module, model_inputs: dict[str, Tensor], targets: Tensor, teacher_signal: Any
    ) -> KDLossTerms:
        """Run the student inside its wrapper's forward and return the loss terms."""
        unwrapped = self.accelerator.unwrap_model(model)
        outputs = call_inside_forward(
            model, unwrapped, self._student_terms_inside, unwrapped, model_inputs, targets, teacher_signal
        )
        return KDLossTerms(*outputs)

    def student_logit_source(self, unwrapped: nn.Module, model_inputs: dict[str, Tensor]) -> LogitSource:
        """The student's forward, as hidden states plus its `lm_head` (fused) or as full logits."""
        if self.use_fused_head:
            hidden = self._backbone_states(unwrapped, model_inputs)
            head = core_model(unwrapped).get_output_embeddings()
            return LogitSource(hidden.reshape(-1, hidden.shape[-1]), head.weight, head.bias)
        logits = unwrapped(**model_inputs, use_cache=False).logits
        return LogitSource(logits.reshape(-1, logits.shape[-1]))

    def _student_terms_inside(
        self, unwrapped: nn.Module, model_inputs: dict[str, Tensor], targets: Tensor, teacher_signal: Any
    ) -> tuple[Tensor, ...]:
        terms = self.kd_loss(self.student_logit_source(unwrapped, model_inputs), teacher_signal, targets)
        # A tuple of tensors passes through every wrapper's output handling (DDP inspects outputs).
        return (terms.loss, terms.soft_sum, terms.hard_sum, terms.num_tokens, terms.top1_agree, terms.kl_sum)

    def kd_loss(self, student: LogitSource, teacher_signal: Any, targets: Tensor) -> KDLossTerms:
        """Combine student and teacher into loss terms; subclasses add other kinds of teacher signal."""
        if isinstance(teacher_signal, SparseTeacherSignal) and self.offline_signal is not None:
            return self.offline_signal.loss(student, teacher_signal, targets, self.loss_spec)
        if not isinstance(teacher_signal, LogitSource):
            raise TypeError(f"Unsupported teacher signal {type(teacher_signal).__name__}.")
        return token_kd_loss(student, teacher_signal, targets, self.loss_spec)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        # `remove_unused_columns` must keep precomputed teacher columns for the collator.
        self._signature_columns = keep_signal_columns(self._signature_columns)

    # ---- logging -----------------------------------------------------------------------------------

    @property
    def metric_mode(self) -> str:
        return "train" if self.model.training else "eval"

    def _accumulate_metrics(self, terms: KDLossTerms) -> None:
        values = [terms.soft_sum, terms.hard_sum, terms.top1_agree, terms.kl_sum, terms.num_tokens]
        self.step_sums.add("kd", self.metric_mode, values)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = self.metric_mode
        sums = self.step_sums.pop("kd", mode, self.accelerator)
        if sums is not None:
            tokens = max(float(sums[4]), 1.0)
            prefix = "eval_" if mode == "eval" else ""
            logs[f"{prefix}soft_loss"] = float(sums[0]) / tokens
            logs[f"{prefix}hard_loss"] = float(sums[1]) / tokens
            logs[f"{prefix}teacher_agreement"] = float(sums[2]) / tokens
            logs[f"{prefix}teacher_kl"] = float(sums[3]) / tokens
            if mode == "train" and self.args.temperature_schedule != "constant":
                logs["temperature"] = self.loss_spec.temperature
        super().log(logs, start_time)
