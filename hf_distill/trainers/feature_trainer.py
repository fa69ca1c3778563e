"""`FeatureKDTrainer`: `KDTrainer` plus hidden-state and attention-map distillation over mapped layers.

One step: forward hooks record the mapped layers of teacher and student while `KDTrainer` runs its usual
forwards; the feature sums over the same target positions are added to the logit-loss sum before the single
division by the token count. Learned projections live in their own module (not in the student), so they are
added to the optimizer, written to every checkpoint, restored on resume, and never end up in the student's
saved weights.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..features.capture import LayerCapture, ensure_eager_attention, num_decoder_layers
from ..features.layer_maps import build_layer_map, format_layer_map
from ..features.projections import PROJECTIONS_FILE, FeatureProjections
from ..losses.attention import attention_kl_loss
from ..losses.feature import hidden_state_loss
from ..losses.token_kd import IGNORE_INDEX, KDLossTerms
from ..modeling import core_model
from ..teachers.sources import TeacherNeeds
from .config_conversion import as_config
from .feature_config import FeatureKDConfig
from .kd_trainer import KDTrainer

logger = logging.getLogger(__name__)

# Logged names of the feature terms (per target token, unweighted), in the order of the metric sums.
FEATURE_TERMS = ("hidden_loss", "attention_loss")


class _ZeroProjectionGrads(TrainerCallback):
    """The Trainer only zeroes the model's gradients after a step; the projections need the same."""

    def __init__(self, projections: nn.Module):
        self.projections = projections

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.projections.zero_grad(set_to_none=True)


class FeatureKDTrainer(KDTrainer):
    """Knowledge distillation of logits, intermediate hidden states and attention maps.

    Takes the same arguments as `KDTrainer`; `args` should be a `FeatureKDConfig`. Needs a live teacher model
    with the student's tokenizer (other teacher kinds are refused at construction). The layer map is logged at
    start-up; the learned projections are in `trainer.feature_projections`.
    """

    config_class = FeatureKDConfig
    config_suffix = "FeatureKD"
    teacher_needs = TeacherNeeds("FeatureKDTrainer", same_vocabulary=True, layer_features=True)

    def __init__(
        self,
        model: str | PreTrainedModel | nn.Module,
        args: FeatureKDConfig | TrainingArguments | None = None,
        *positional: Any,
        **kwargs: Any,
    ) -> None:
        args = as_config(FeatureKDConfig, args, model, self.config_suffix)
        super().__init__(model, args, *positional, **kwargs)
        self._setup_features(args)

    # ---- construction -------------------------------------------------------------------------------

    def _setup_features(self, args: FeatureKDConfig) -> None:
        student = core_model(self.accelerator.unwrap_model(self.model))
        teacher = core_model(self.accelerator.unwrap_model(self.teacher_model))
        n_student, n_teacher = num_decoder_layers(student), num_decoder_layers(teacher)
        self.layer_map = build_layer_map(
            args.feature_layer_map, n_student, n_teacher, k=args.feature_last_k, pairs=args.feature_layer_pairs
        )
        logger.info(format_layer_map(self.layer_map, n_student, n_teacher))

        # A term is captured if its weight is ever above 0 (its schedule may start at 0).
        use_hidden = args.feature_term_active("hidden_loss_weight")
        use_attention = args.feature_term_active("attention_loss_weight")
        self.active_feature_terms = {"hidden_loss_weight": use_hidden, "attention_loss_weight": use_attention}
        if use_attention:
            ensure_eager_attention(student, args.feature_switch_to_eager, "student")
            ensure_eager_attention(teacher, args.feature_switch_to_eager, "teacher")
        student_layers = [s for s, _ in self.layer_map]
        teacher_layers = [t for _, t in self.layer_map]
        self.student_capture = LayerCapture(student, student_layers, hidden=use_hidden, attention=use_attention)
        self._captured_student = student
        self.teacher_capture = LayerCapture(teacher, teacher_layers, hidden=use_hidden, attention=use_attention)

        student_width = student.config.get_text_config().hidden_size
        teacher_width = teacher.config.get_text_config().hidden_size
        # Attention maps need no projection: without the hidden term there is nothing to learn.
        self.feature_projections = FeatureProjections(
            self.layer_map if use_hidden else (), student_width, teacher_width, always=args.feature_always_project
        ).to(self.args.device)
        zero3 = self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.zero_stage == 3
        if zero3 and any(True for _ in self.feature_projections.parameters()):
            # DeepSpeed's ZeRO-3 optimizer takes only parameters it partitioned (it fails on the projections).
            raise ValueError(
                "FeatureKDTrainer's learned projections cannot be trained under DeepSpeed ZeRO-3. Use FSDP "
                "(recipes/accelerate/fsdp.yaml) or DDP, or set hidden_loss_weight=0 / equal widths without "
                "feature_always_project so that no projection is needed."
            )
        self.add_callback(_ZeroProjectionGrads(self.feature_projections))

    def reload_loss_settings(self) -> None:
        """`KDTrainer`'s re-read, plus: the feature terms captured at construction must still cover the new
        weights, and a student that `model_init` rebuilt for a trial gets the student hooks again."""
        super().reload_loss_settings()
        for name, captured in self.active_feature_terms.items():
            if not captured and self.args.feature_term_active(name):
                raise ValueError(
                    f"{name} is now above 0, but it was 0 when this FeatureKDTrainer was built, so those activations "
                    f"are not captured. Build the trainer with {name} > 0 (or a schedule that reaches it) to search "
                    "over it; a trial may still set it to 0."
                )
        student = core_model(self.accelerator.unwrap_model(self.model))
        if student is not self._captured_student:
            if self.active_feature_terms["attention_loss_weight"]:
                ensure_eager_attention(student, self.args.feature_switch_to_eager, "student")
            self.student_capture.remove()
            self.student_capture = LayerCapture(
                student,
                [s for s, _ in self.layer_map],
                hidden=self.active_feature_terms["hidden_loss_weight"],
                attention=self.active_feature_terms["attention_loss_weight"],
            )
            self._captured_student = student

    # ---- the step ----------------------------------------------------------------------------------

    def teacher_signal(self, inputs: dict[str, Any], model_inputs: dict[str, Tensor]) -> Any:
        with self.teacher_capture.capturing():
            return super().teacher_signal(inputs, model_inputs)

    def student_terms(
        self, model: nn.Module, model_inputs: dict[str, Tensor], targets: Tensor, teacher_signal: Any
    ) -> KDLossTerms:
        """The logit-KD terms with the weighted feature sums added to the (still unnormalised) loss."""
        try:
            with self.student_capture.capturing():
                terms = super().student_terms(model, model_inputs, targets, teacher_signal)
            mask = (targets != IGNORE_INDEX).reshape(model_inputs["input_ids"].shape)
            hidden_sum, attention_sum = self.feature_sums(mask)
        finally:
            self.student_capture.clear()
            self.teacher_capture.clear()
        self._accumulate_feature_metrics(hidden_sum, attention_sum, mask.sum())
        weights = self.loss_settings
        extra = weights["hidden_loss_weight"] * hidden_sum + weights["attention_loss_weight"] * attention_sum
        return KDLossTerms(
            terms.loss + extra.to(terms.loss.dtype),
            terms.soft_sum,
            terms.hard_sum,
            terms.num_tokens,
            terms.top1_agree,
            terms.kl_sum,
        )

    def feature_sums(self, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Hidden-state and attention terms: averaged over layer pairs, summed over target positions in ``mask``."""
        device = mask.device
        hidden_sum = torch.zeros((), device=device)
        attention_sum = torch.zeros((), device=device)
        needs_grad = torch.is_grad_enabled() and self.model.training
        for s, t in self.layer_map:
            if self.active_feature_terms["hidden_loss_weight"]:
                student_states = self.student_capture.hidden_state(s)
                self._check_graph(student_states, needs_grad, s, "hidden states")
                projected = self.feature_projections(s, t, student_states)
                teacher_states = self.teacher_capture.hidden_state(t)
                hidden_sum = hidden_sum + hidden_state_loss(projected, teacher_states, mask, self.args.hidden_loss_type)
            if self.active_feature_terms["attention_loss_weight"]:
                student_maps = self.student_capture.attention(s)
                self._check_graph(student_maps, needs_grad, s, "attention maps")
                attention_sum = attention_sum + attention_kl_loss(
                    student_maps, self.teacher_capture.attention(t), mask, self.args.attention_head_reduction
                )
        # Mean over pairs, so a weight means the same whatever the number of mapped layers.
        n_pairs = len(self.layer_map)
        return hidden_sum / n_pairs, attention_sum / n_pairs

    @staticmethod
    def _check_graph(tensor: Tensor, needs_grad: bool, layer: int, what: str) -> None:
        if needs_grad and not tensor.requires_grad:
            raise RuntimeError(
                f"The student's layer-{layer} {what} carry no gradient, so feature distillation could not train "
                "it. This happens when activation/gradient checkpointing recomputes the attention module under "
                "no_grad (reentrant checkpointing); disable it or set activation_checkpointing_kwargs="
                "{'use_reentrant': False} (the transformers default)."
            )

    # ---- projections: optimizer, gradients, checkpoints ----------------------------------------------

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """The student's optimizer with one extra parameter group holding the projections."""
        optimizer = super().create_optimizer(model)
        if not self.is_fsdp_enabled:
            self._add_projection_group(optimizer)
        return optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
        # Under FSDP, accelerate swaps the optimizer's parameters for the student's shards and refuses any it cannot
        # find in the student, so the projections join only now, after that, and before the schedule sees the groups.
        self._add_projection_group(optimizer or self.optimizer)
        return super().create_scheduler(num_training_steps, optimizer)

    def _add_projection_group(self, optimizer: torch.optim.Optimizer) -> None:
        params = [p for p in self.feature_projections.parameters() if p.requires_grad]
        already = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if params and not already.intersection(id(p) for p in params):
            optimizer.add_param_group({"params": params, "weight_decay": self.args.weight_decay})

    def training_step(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._average_projection_grads()
        return loss

    def _average_projection_grads(self) -> None:
        """Projections sit outside DDP, so average their gradients across processes like DDP does."""
        world = self.accelerator.num_processes
        if world <= 1:
            return
        for param in self.feature_projections.parameters():
            if param.grad is not None:
                torch.distributed.all_reduce(param.grad, op=torch.distributed.ReduceOp.SUM)
                param.grad.div_(world)

    def _clip_grad_norm(self, model: nn.Module) -> Any:
        """Clip the projections to the same max norm (separately: they are not the model's parameters)."""
        params = [p for p in self.feature_projections.parameters() if p.grad is not None]
        if params and self.args.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, self.args.max_grad_norm)
        return super()._clip_grad_norm(model)

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        super()._save_checkpoint(model, trial)  # the teacher source's state too
        if self.args.should_save:
            folder = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            self.feature_projections.save(os.path.join(self._get_output_dir(trial=trial), folder))

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the plain student (no projection weights in it); export projections beside it if asked."""
        super().save_model(output_dir, _internal_call)
        if self.args.feature_export_projections and self.args.should_save:
            self.feature_projections.save(output_dir or self.args.output_dir)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        # Every resume path (plain, DeepSpeed, FSDP) comes through here, after the optimizer exists.
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            self.feature_projections.load(checkpoint)

    def _load_best_model(self) -> None:
        super()._load_best_model()
        best = self.state.best_model_checkpoint
        if best is not None and os.path.isfile(os.path.join(best, PROJECTIONS_FILE)):
            self.feature_projections.load(best)

    # ---- logging -----------------------------------------------------------------------------------

    def _accumulate_feature_metrics(self, hidden_sum: Tensor, attention_sum: Tensor, tokens: Tensor) -> None:
        self.step_sums.add("feature", self.metric_mode, [hidden_sum, attention_sum, tokens])

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = self.metric_mode
        sums = self.step_sums.pop("feature", mode, self.accelerator)
        if sums is not None:
            tokens = max(float(sums[2]), 1.0)
            prefix = "eval_" if mode == "eval" else ""
            terms = self.active_feature_terms
            active = (terms["hidden_loss_weight"], terms["attention_loss_weight"])
            for index, (name, on) in enumerate(zip(FEATURE_TERMS, active)):
                if on:
                    logs[f"{prefix}{name}"] = float(sums[index]) / tokens
        super().log(logs, start_time)
