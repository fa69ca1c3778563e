"""`MTPTrainer`: multi-token-prediction self-distillation, alone or on top of a teacher.

The story of one step:
1. run the student's backbone once (final hidden states, inside its wrapper's forward);
2. main loss from those states and the `lm_head`: the teacher source's terms when a teacher is given, else the
   plain cross-entropy on the labels;
3. the auxiliary heads (`hf_distill.cotrained.mtp_heads`) read the same states; head d adds
   ``mtp_ce_weight * CE(token i+d+1) + mtp_kd_weight * T^2 * KL(main head at i+d || head d at i)``;
4. one division by the step's target-token count, as in `KDTrainer`.

The heads are a module of their own, not part of the student: an extra optimizer group, gradients averaged over
processes like DDP would, written to ``mtp_heads/`` in every checkpoint and beside the exported student, which
reloads with `AutoModelForCausalLM.from_pretrained` and has no auxiliary parameters.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import Tensor, nn
from transformers import TrainerCallback

from ..cotrained.mtp_heads import MTP_HEADS_DIR, MTPHeads
from ..cotrained.peers import broadcast_from_main_process
from ..forward_redirect import call_inside_forward
from ..losses.cross_entropy import cross_entropy_sum
from ..losses.mtp import depth_targets, lagged_rows, lead_rows, mtp_depth_terms
from ..losses.token_kd import IGNORE_INDEX, KDLossTerms, LogitSource, causal_targets
from ..model_card import ModelCardInfo, describe_method
from ..modeling import final_hidden_states, fused_head_obstacle, lm_head
from ..teachers.sources import TeacherNeeds
from .kd_trainer import MODEL_INPUT_KEYS, KDTrainer
from .mtp_config import MTPConfig

logger = logging.getLogger(__name__)

# Per-depth statistics, in the order `_terms_inside` stacks them.
DEPTH_STATS = ("ce", "kl", "agreement", "tokens")


class _ZeroHeadGrads(TrainerCallback):
    """The same heads on every process at the start, and zeroed gradients after each step (the Trainer zeroes
    only the model's)."""

    def __init__(self, heads: nn.Module) -> None:
        self.heads = heads

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        broadcast_from_main_process(self.heads)  # after a resume too: every process loaded the same checkpoint

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.heads.zero_grad(set_to_none=True)


class MTPTrainer(KDTrainer):
    """`KDTrainer` whose student also trains auxiliary next-k-token heads (see `MTPConfig`).

    Takes the same arguments as `KDTrainer`, but the teacher is optional: without one, the main loss is the
    cross-entropy on the labels (self-distillation only). The heads are in `trainer.mtp_heads`.
    """

    config_class = MTPConfig
    config_suffix = "MTP"
    teacher_needs = TeacherNeeds("MTPTrainer", same_vocabulary=True, teacher_required=False)

    def __init__(self, model: Any, args: Any = None, *positional: Any, **kwargs: Any) -> None:
        super().__init__(model, args, *positional, **kwargs)
        sharded = self.is_fsdp_enabled or self.is_deepspeed_enabled
        obstacle = "FSDP / DeepSpeed shard its lm_head" if sharded else fused_head_obstacle(self.model)
        if obstacle is not None:
            raise ValueError(
                f"MTP heads read the student's final hidden states and project them like its lm_head, which is not "
                f"possible here: {obstacle}."
            )
        args = self.args
        self.mtp_spec = args.mtp_spec()
        head = lm_head(self.model)
        self.mtp_heads = MTPHeads.for_head(
            head, args.mtp_num_heads, args.mtp_tie_projection, args.mtp_intermediate_size
        )
        self.add_callback(_ZeroHeadGrads(self.mtp_heads))
        if self.model_card_info is None:
            self.model_card_info = self._card_info()
        logger.info("MTP: %d auxiliary head(s), tied projection: %s", args.mtp_num_heads, args.mtp_tie_projection)

    def _card_info(self) -> ModelCardInfo:
        args = self.args
        main = "cross-entropy on the labels" if self.teacher_source is None else describe_method(args)
        heads = (
            f"plus {args.mtp_num_heads} auxiliary next-k-token head(s) trained with {args.mtp_ce_weight} * CE + "
            f"{args.mtp_kd_weight} * T^2 * KL(main head || head) at T = {args.mtp_temperature} (saved in "
            f"{MTP_HEADS_DIR}/, not part of this model)"
        )
        teacher = None if self.teacher_source is not None else "none: the model's own main head (self-distillation)"
        return ModelCardInfo(teacher=teacher, method=f"multi-token-prediction self-distillation: {main}, {heads}")

    # ---- the step ----------------------------------------------------------------------------------

    def loss_terms(
        self, model: nn.Module, inputs: dict[str, Any], model_inputs: dict[str, Tensor] | None = None
    ) -> KDLossTerms:
        if self.teacher_source is not None:
            return super().loss_terms(model, inputs, model_inputs)
        if model_inputs is None:
            model_inputs = {k: v for k, v in inputs.items() if k in MODEL_INPUT_KEYS}
        return self.student_terms(model, model_inputs, causal_targets(inputs["labels"]), None)

    def student_terms(
        self, model: nn.Module, model_inputs: dict[str, Tensor], targets: Tensor, teacher_signal: Any
    ) -> KDLossTerms:
        unwrapped = self.accelerator.unwrap_model(model)
        outputs = call_inside_forward(
            model, unwrapped, self._terms_inside, unwrapped, model_inputs, targets, teacher_signal
        )
        self.step_sums.add("mtp", self.metric_mode, list(outputs[-1].reshape(-1)))
        return KDLossTerms(*outputs[:-1])

    def _terms_inside(
        self, unwrapped: nn.Module, model_inputs: dict[str, Tensor], targets: Tensor, teacher_signal: Any
    ) -> tuple[Tensor, ...]:
        hidden = final_hidden_states(unwrapped, model_inputs)
        head = lm_head(unwrapped)
        main_source = LogitSource(hidden.reshape(-1, hidden.shape[-1]), head.weight, head.bias)
        if teacher_signal is None:
            main = self._label_terms(main_source, targets)
        else:
            main = self.kd_loss(main_source, teacher_signal, targets)
        grid = targets.reshape(hidden.shape[:2])
        loss, stats = main.loss, []
        for depth, states in enumerate(self.mtp_heads(hidden), start=1):
            if hidden.shape[1] <= depth:  # nothing that far ahead in this batch
                stats.append(torch.zeros(len(DEPTH_STATS), device=hidden.device))
                continue
            weight, bias = self.mtp_heads.projection(depth, head)
            terms = mtp_depth_terms(
                LogitSource(lead_rows(states, depth), weight, bias),
                LogitSource(lagged_rows(hidden, depth), head.weight, head.bias),
                depth_targets(grid, depth),
                self.mtp_spec,
            )
            loss = loss + terms.loss
            stats.append(torch.stack([terms.hard_sum, terms.soft_sum, terms.top1_agree, terms.num_tokens.float()]))
        main.loss = loss
        return (*main.as_tuple(), torch.stack(stats).detach())

    def _label_terms(self, main: LogitSource, targets: Tensor) -> KDLossTerms:
        """The main head's cross-entropy when there is no teacher (the soft-term statistics stay 0)."""
        args = self.args
        ce = cross_entropy_sum(main, targets, args.loss_chunk_size, args.loss_precision)
        zero = torch.zeros((), device=ce.device)
        count = (targets != IGNORE_INDEX).sum()
        return KDLossTerms(loss=ce, soft_sum=zero, hard_sum=ce.detach(), num_tokens=count, top1_agree=zero, kl_sum=zero)

    # ---- heads: optimizer, gradients, files ---------------------------------------------------------

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """The student's optimizer with one extra parameter group holding the heads."""
        optimizer = super().create_optimizer(model)
        params = [p for p in self.mtp_heads.parameters() if p.requires_grad]
        already = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if not already.intersection(id(p) for p in params):
            optimizer.add_param_group({"params": params, "weight_decay": self.args.weight_decay})
        return optimizer

    def training_step(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        world = self.accelerator.num_processes
        if world > 1:  # the heads sit outside DDP: average their gradients as DDP does the student's
            for param in self.mtp_heads.parameters():
                if param.grad is not None:
                    torch.distributed.all_reduce(param.grad, op=torch.distributed.ReduceOp.SUM)
                    param.grad.div_(world)
        return loss

    def _clip_grad_norm(self, model: nn.Module) -> Any:
        """Clip the heads to the same max norm (separately: they are not the model's parameters)."""
        params = [p for p in self.mtp_heads.parameters() if p.grad is not None]
        if params and self.args.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, self.args.max_grad_norm)
        return super()._clip_grad_norm(model)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The plain student where `Trainer` puts it, and the heads in ``mtp_heads/`` beside it (checkpoints too)."""
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            self.mtp_heads.save(output_dir or self.args.output_dir)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None and not self.mtp_heads.load(checkpoint):
            logger.warning("%s has no %s/: the MTP heads start fresh.", checkpoint, MTP_HEADS_DIR)

    def _load_best_model(self) -> None:
        super()._load_best_model()
        best = self.state.best_model_checkpoint
        if best is not None and os.path.isdir(os.path.join(best, MTP_HEADS_DIR)):
            self.mtp_heads.load(best)

    # ---- logging -----------------------------------------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = self.metric_mode
        sums = self.step_sums.pop("mtp", mode, self.accelerator)
        if sums is not None:
            prefix = "eval_" if mode == "eval" else ""
            width = len(DEPTH_STATS)
            for depth in range(1, len(sums) // width + 1):
                ce, kl, agree, tokens = sums[(depth - 1) * width : depth * width]
                tokens = max(tokens, 1.0)
                logs[f"{prefix}mtp{depth}_ce"] = ce / tokens
                logs[f"{prefix}mtp{depth}_kl"] = kl / tokens
                logs[f"{prefix}mtp{depth}_main_agreement"] = agree / tokens
            if self.teacher_source is None:
                # No teacher: the main loss is the cross-entropy alone, so there are no teacher terms to log.
                main = self.step_sums.pop("kd", mode, self.accelerator)
                if main is not None:
                    logs[f"{prefix}hard_loss"] = main[1] / max(main[4], 1.0)
        super().log(logs, start_time)
