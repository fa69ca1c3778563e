"""`KDTrainer`: TRL's `SFTTrainer` with a teacher and a token-level distillation loss.

The story of one step (`compute_loss`):
1. get the teacher signal for the batch from the teacher source (a live model, precomputed columns, a teacher
   with another tokenizer, the student's own EMA, an ensemble; see `hf_distill.teachers.sources`);
2. run the student, inside its wrapper's forward, and let the source combine both into named loss terms;
3. normalise once by the number of target tokens of the whole accumulated, multi-process batch;
4. keep token-weighted sums of the terms for logging.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import SFTTrainer

from ..diagnostics import DiagnosticsWatch, sampled_diagnostic_sums, summarize, supports_teacher
from ..forward_redirect import call_inside_forward
from ..losses.token_kd import KDLossTerms, LogitSource
from ..model_card import ModelCardMixin
from ..modeling import final_hidden_states, fused_head_obstacle, lm_head
from ..teachers.sources import (
    TeacherNeeds,
    TeacherRequest,
    TeacherSource,
    check_compatible,
    resolve_teacher_source,
)
from ..teachers.sources.precomputed import keep_signal_columns
from .config_conversion import as_config
from .input_checks import check_after_sft_init, check_before_sft_init
from .kd_config import KDConfig
from .loss_schedules import loss_settings_at
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


class TeacherSourceCallback(TrainerCallback):
    """Gives the teacher source its training-time hooks (EMA initialisation and updates, ...)."""

    def __init__(self, trainer: KDTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.teacher_source.on_train_begin(self.trainer)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # After the optimizer step and the global_step increment, before any checkpoint of this step is written.
        self.trainer.teacher_source.after_optimizer_step(self.trainer)


class KDTrainer(ModelCardMixin, SFTTrainer):
    """Knowledge distillation as a drop-in replacement for `SFTTrainer` (and so for `Trainer`).

    Args:
        model: the student, a model or a Hub id / local path (loaded with `args.model_init_kwargs`).
        args: a `KDConfig`; a plain `TrainingArguments`/`SFTConfig` is converted with default KD settings.
        teacher_model: the teacher: a model or a Hub id / local path (defaults to
            `args.teacher_model_name_or_path`); a list of them for an ensemble; `"ema"` for the student's own
            exponential moving average; or a `TeacherSource`. Without one, the datasets' precomputed teacher
            columns are used. Teacher models are frozen and never receive gradients.
        teacher_processing_class: the teacher's tokenizer, used to check that both models share one, or, with
            `args.cross_tokenizer=True`, to tokenize the text for the teacher (different tokenizers).
        teacher_prompt_fn: with `cross_tokenizer`, rewrites the student's prompt text into the teacher's
            format (e.g. its chat template); default: the teacher reads the same text.
        model_init: builds a fresh student for each `hyperparameter_search` trial (as `Trainer`'s argument);
            `model` may then be None. Loss settings a trial sets on `args` (temperature, alpha, divergence,
            feature weights, schedules) take effect: they are re-read whenever training starts.
        Everything else is passed to `SFTTrainer` unchanged (datasets in any of its formats, collators,
        callbacks, `peft_config` for a LoRA student, ...).
    """

    _tag_names = ["trl", "sft", "hf_distill", "knowledge-distillation"]
    config_class: ClassVar[type[KDConfig]] = KDConfig
    config_suffix: ClassVar[str] = "KD"
    teacher_needs: ClassVar[TeacherNeeds] = TeacherNeeds("KDTrainer")

    def __init__(
        self,
        model: str | PreTrainedModel | nn.Module,
        args: KDConfig | TrainingArguments | None = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        *,
        teacher_model: Any = None,
        teacher_processing_class: Any = None,
        teacher_prompt_fn: Callable[[str], str] | None = None,
        model_init: Callable[..., nn.Module] | None = None,
        **sft_kwargs: Any,
    ) -> None:
        model = first_student(model, model_init, sft_kwargs)
        args = as_config(self.config_class, args, model, self.config_suffix)
        self.loss_spec = args.loss_spec()
        self.loss_settings = loss_settings_at(args, 0, 0)
        check_before_sft_init(model, args, train_dataset, processing_class)
        # Which teacher, and whether it can serve this trainer with these settings: decided before SFT prepares
        # (and possibly packs) the datasets, so a mismatch is refused at once.
        request = TeacherRequest(
            teacher_model, args, [train_dataset, eval_dataset], teacher_processing_class, teacher_prompt_fn
        )
        self.teacher_source: TeacherSource | None = resolve_teacher_source(request)
        check_compatible(self.teacher_source, self.teacher_needs, args)
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
        self.model_init = model_init
        self.step_sums = StepSums()
        self.use_fused_head = self._decide_fused(args)
        self._diagnostics_generator = torch.Generator().manual_seed(args.seed)
        self._said_no_diagnostics = False
        self.diagnostics_watch = DiagnosticsWatch() if args.diagnostics_watch and args.diagnostics_positions else None
        if self.diagnostics_watch is not None:
            self.add_callback(self.diagnostics_watch)
        if self.teacher_source is not None:
            self.teacher_source.setup(self)
            self.add_callback(TeacherSourceCallback(self))
            logger.info("Teacher: %s", self.teacher_source.describe())

    # ---- construction -------------------------------------------------------------------------------

    @property
    def teacher_model(self) -> nn.Module | None:
        """The teacher network when the source runs exactly one (live or cross-tokenizer teacher), else None."""
        modules = self.teacher_source.modules if self.teacher_source is not None else []
        return modules[0] if len(modules) == 1 else None

    def _decide_fused(self, args: KDConfig) -> bool:
        sharded = self.is_fsdp_enabled or (
            self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.zero_stage == 3
        )
        obstacle = "its lm_head is sharded (DeepSpeed ZeRO-3 / FSDP)" if sharded else fused_head_obstacle(self.model)
        if args.fused_lm_head and obstacle is not None:
            raise ValueError(
                f"fused_lm_head=True is not possible for this student: {obstacle}. Leave fused_lm_head unset to "
                "choose automatically."
            )
        return obstacle is None if args.fused_lm_head is None else args.fused_lm_head

    # ---- the step ----------------------------------------------------------------------------------

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, Any]:
        if model.training:
            self.apply_loss_settings(self.state.global_step)
        model_inputs = {k: v for k, v in inputs.items() if k in MODEL_INPUT_KEYS}
        terms = self.loss_terms(model, inputs, model_inputs)
        loss = self.normalise(terms.loss, terms.num_tokens, num_items_in_batch)
        self._accumulate_metrics(terms)
        if return_outputs:
            with torch.no_grad():
                outputs = model(**model_inputs, use_cache=False)
            return loss, outputs
        return loss

    def loss_terms(
        self, model: nn.Module, inputs: dict[str, Any], model_inputs: dict[str, Tensor] | None = None
    ) -> KDLossTerms:
        """The batch's summed loss terms (not yet normalised): the teacher source's signal, then its terms."""
        if model_inputs is None:
            model_inputs = {k: v for k, v in inputs.items() if k in MODEL_INPUT_KEYS}
        signal = self.teacher_signal(inputs, model_inputs)
        return self.teacher_source.terms(self, model, inputs, model_inputs, signal)

    def apply_loss_settings(self, step: int) -> None:
        """Set the temperature and loss weights of optimizer step ``step`` (schedules are pure functions of it)."""
        self.loss_settings = loss_settings_at(self.args, step, self.state.max_steps)
        self.loss_spec = self.args.loss_spec(
            temperature=self.loss_settings["temperature"], alpha=self.loss_settings["alpha"]
        )

    # ---- search trials: loss settings are read from `args` when training starts ----------------------

    def _hp_search_setup(self, trial: Any) -> None:
        # `Trainer.train` calls this at the start of every run (trial or not), after `model_init` built the
        # student; a search backend has just written the trial's values onto `args`.
        super()._hp_search_setup(trial)
        self.reload_loss_settings()

    def reload_loss_settings(self) -> None:
        """Re-read (and re-validate) the loss settings from `args` after fields were set on it."""
        self.args.check_loss_settings()
        self.apply_loss_settings(self.state.global_step)
        self.use_fused_head = self._decide_fused(self.args)
        if self.teacher_source is not None:
            self.teacher_source.settings_changed(self)

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

    def teacher_signal(self, inputs: dict[str, Any], model_inputs: dict[str, Tensor]) -> Any:
        """The teacher source's signal for the batch (no gradients)."""
        with torch.no_grad():
            return self.teacher_source.signal(self, inputs, model_inputs)

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
            hidden = final_hidden_states(unwrapped, model_inputs)
            head = lm_head(unwrapped)
            return LogitSource(hidden.reshape(-1, hidden.shape[-1]), head.weight, head.bias)
        logits = unwrapped(**model_inputs, use_cache=False).logits
        return LogitSource(logits.reshape(-1, logits.shape[-1]))

    def _student_terms_inside(
        self, unwrapped: nn.Module, model_inputs: dict[str, Tensor], targets: Tensor, teacher_signal: Any
    ) -> tuple[Tensor, ...]:
        terms = self.kd_loss(self.student_logit_source(unwrapped, model_inputs), teacher_signal, targets)
        return terms.as_tuple()

    def kd_loss(self, student: LogitSource, teacher_signal: Any, targets: Tensor) -> KDLossTerms:
        """Student logits plus the teacher's signal as loss terms, the way the teacher source defines them."""
        terms = self.teacher_source.loss(student, teacher_signal, targets, self.loss_spec)
        if self._diagnostics_due():
            if supports_teacher(teacher_signal):
                count, generator = self.args.diagnostics_positions, self._diagnostics_generator
                sums = sampled_diagnostic_sums(student, teacher_signal, targets, count, generator)
                self.step_sums.add("diag", self.metric_mode, list(sums.unbind()))
            elif not self._said_no_diagnostics:
                self._said_no_diagnostics = True
                logger.warning(
                    "diagnostics_positions=%d, but the %s teacher gives no full next-token distribution, so no "
                    "diag_* metrics are logged (they need a live, EMA or ensemble teacher). Set "
                    "diagnostics_positions=0 to silence this.",
                    self.args.diagnostics_positions,
                    self.teacher_source.kind,
                )
        return terms

    def _diagnostics_due(self) -> bool:
        """In evaluation, and in training on the steps that end on a log (so they cost 1/logging_steps)."""
        if not self.args.diagnostics_positions:
            return False
        if not self.model.training or self.args.logging_strategy != "steps":
            return True
        every = self.state.logging_steps or self.args.logging_steps
        return (self.state.global_step + 1) % max(int(every), 1) == 0

    # ---- the teacher source's state in checkpoints ---------------------------------------------------

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if self.teacher_source is not None and self.args.should_save:
            folder = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            self.teacher_source.save(os.path.join(self._get_output_dir(trial=trial), folder))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        # Every resume path (plain, DeepSpeed, FSDP) comes through here.
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None and self.teacher_source is not None:
            self.teacher_source.load(checkpoint)

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
            if mode == "train":
                logs.update(self.logged_loss_settings())
        diagnostics = self.step_sums.pop("diag", mode, self.accelerator)
        if diagnostics is not None:
            prefix = "eval_" if mode == "eval" else ""
            logs.update({f"{prefix}diag_{key}": value for key, value in summarize(diagnostics).items()})
        super().log(logs, start_time)

    def logged_loss_settings(self) -> dict[str, float]:
        """Temperature and alpha in force at the last step, and every other weight that follows a schedule."""
        scheduled = self.args.weight_schedules()
        return {
            name: value
            for name, value in self.loss_settings.items()
            if name in ("temperature", "alpha") or name in scheduled
        }


def first_student(model: Any, model_init: Callable[..., nn.Module] | None, sft_kwargs: dict[str, Any]) -> Any:
    """The student to construct with: ``model``, or the first one ``model_init`` builds (as `Trainer` does)."""
    if model_init is None:
        return model
    if sft_kwargs.get("peft_config") is not None:
        raise ValueError(
            "model_init and peft_config cannot be combined: the student model_init builds for each trial would not "
            "get the adapters. Return a PeftModel from model_init instead."
        )
    if model is not None:
        return model
    from transformers.trainer_utils import number_of_arguments

    return model_init() if number_of_arguments(model_init) == 0 else model_init(None)
