"""Trainers where several models learn in one run: `MutualKDTrainer` (deep mutual learning, 2+ models) and
`OnlineKDTrainer` (a teacher trained on the labels while the student distils from it).

The story of one step:
1. every model reads the batch once (the student inside its wrapper's forward, so DDP sees it);
2. each model's loss against the (detached) models it learns from (`hf_distill.losses.peer_kd`);
3. one backward of the sum: the graphs share nothing, so each model receives exactly its own loss's gradient;
4. the Trainer steps the student; each other model (`hf_distill.cotrained.peers.Peer`) then steps its own
   optimizer and schedule, and saves / restores them with every checkpoint.
The logged `loss` is the sum over the models; each model's terms are logged under its name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from transformers import AutoModelForCausalLM, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..cotrained.peers import PEERS_DIR, Peer, broadcast_from_main_process
from ..forward_redirect import call_inside_forward
from ..losses.peer_kd import peer_kd_terms
from ..losses.token_kd import LogitSource, causal_targets
from ..model_card import ModelCardInfo
from ..modeling import final_hidden_states, fused_head_obstacle, lm_head, vocab_rows
from ..teachers.sources import TeacherNeeds
from .cotrained_config import MutualKDConfig, OnlineKDConfig
from .kd_trainer import MODEL_INPUT_KEYS, KDTrainer

logger = logging.getLogger(__name__)

STUDENT = "student"
# Per-model statistics, in the order `_terms_inside` stacks them.
MODEL_STATS = ("loss", "hard_loss", "soft_loss", "agreement", "tokens")


class _StepPeers(TrainerCallback):
    """Every process starts from the same co-trained models; right after the student's optimizer step, each
    co-trained model takes its own."""

    def __init__(self, trainer: CoTrainedTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for peer in self.trainer.peers:
            broadcast_from_main_process(peer.module)

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for peer in self.trainer.peers:
            peer.step(args.max_grad_norm, self.trainer.accelerator.num_processes)


class CoTrainedTrainer(KDTrainer):
    """Base of the co-trained trainers: the student is `model`, the others are `Peer`s built by subclasses."""

    teacher_needs: ClassVar[TeacherNeeds] = TeacherNeeds("CoTrainedTrainer", teacher_required=False)
    regime: ClassVar[str] = "co-trained distillation"  # names the method on the student's model card

    def __init__(self, model: Any, args: Any = None, *positional: Any, others: Sequence[Any], **kwargs: Any) -> None:
        super().__init__(model, args, *positional, **kwargs)
        if self.teacher_source is not None:
            raise ValueError(
                f"{type(self).__name__} trains all its models and takes no frozen teacher, but found one "
                f"({self.teacher_source.describe()}): remove precomputed teacher columns from the dataset."
            )
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            raise ValueError(f"{type(self).__name__} supports one process or DDP, not FSDP / DeepSpeed.")
        modules = [self._as_module(other) for other in others]
        if len({id(module) for module in modules}) != len(modules):
            raise ValueError("The same model object was given twice; each co-trained model needs its own.")
        self.peers = self._build_peers(modules)
        if not self.peers:
            raise ValueError(f"{type(self).__name__} needs at least one model besides the student.")
        self._check_vocabularies()
        for peer in self.peers:
            peer.module.to(self.args.device)
        self.add_callback(_StepPeers(self))
        if self.model_card_info is None:
            self.model_card_info = self._card_info()

    def _card_info(self) -> ModelCardInfo:
        args, others = self.args, ", ".join(f"{peer.name} ({peer.export_subdir}/)" for peer in self.peers)
        return ModelCardInfo(
            teacher=f"co-trained in the same run: {others}",
            method=f"{self.regime}: (1 - alpha) * cross-entropy + alpha * T^2 * mean {args.divergence}(other || "
            f"student) over {', '.join(self.student_teachers)}, with alpha = {args.alpha} and T = {args.temperature}",
        )

    def _build_peers(self, modules: list[nn.Module]) -> list[Peer]:
        raise NotImplementedError

    def _as_module(self, model: Any) -> nn.Module:
        if isinstance(model, str):
            kwargs = self.args.model_init_kwargs or {}
            return AutoModelForCausalLM.from_pretrained(model, **kwargs)
        if not isinstance(model, nn.Module):
            raise TypeError(f"A co-trained model must be a model or a name/path, got {type(model).__name__}.")
        if model is self.model or model is self.accelerator.unwrap_model(self.model):
            raise ValueError("A co-trained model must be a different model object from the student.")
        return model

    def _check_vocabularies(self) -> None:
        student_rows = vocab_rows(self.model)
        tokens = len(self.processing_class) if hasattr(self.processing_class, "__len__") else None
        for peer in self.peers:
            rows = vocab_rows(peer.module)
            if rows is None:
                raise ValueError(f"'{peer.name}' has no output embedding; a co-trained model must be a causal LM.")
            if tokens is not None and rows < tokens:
                raise ValueError(
                    f"'{peer.name}' has {rows} vocabulary rows but the tokenizer has {tokens} tokens: co-trained "
                    "models must share the student's tokenizer."
                )
            if student_rows is not None and tokens is None and rows != student_rows:
                raise ValueError(f"'{peer.name}' has {rows} vocabulary rows, the student {student_rows}.")

    @property
    def all_names(self) -> list[str]:
        return [STUDENT, *(peer.name for peer in self.peers)]

    # ---- the step ----------------------------------------------------------------------------------

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, Any]:
        if model.training:
            self.apply_loss_settings(self.state.global_step)  # temperature and alpha schedules, as in KDTrainer
        model_inputs = {k: v for k, v in inputs.items() if k in MODEL_INPUT_KEYS}
        targets = causal_targets(inputs["labels"])
        unwrapped = self.accelerator.unwrap_model(model)
        total, stats = call_inside_forward(model, unwrapped, self._terms_inside, unwrapped, model_inputs, targets)
        self.step_sums.add("cotrained", self.metric_mode, list(stats.reshape(-1)))
        loss = self.normalise(total, stats[0, -1], num_items_in_batch)
        if return_outputs:
            with torch.no_grad():
                outputs = model(**model_inputs, use_cache=False)
            return loss, outputs
        return loss

    def _terms_inside(
        self, student: nn.Module, model_inputs: dict[str, Tensor], targets: Tensor
    ) -> tuple[Tensor, Tensor]:
        sources = {STUDENT: self._logit_source(student, model_inputs, self.use_fused_head)}
        for peer in self.peers:
            peer.module.train(student.training)
            sources[peer.name] = self._logit_source(peer.module, model_inputs, fused_head_obstacle(peer.module) is None)
        teachers = {STUDENT: self.student_teachers, **{peer.name: peer.teachers for peer in self.peers}}
        total, stats = None, []
        for name, source in sources.items():
            terms = peer_kd_terms(source, [sources[other] for other in teachers[name]], targets, self.loss_spec)
            total = terms.loss if total is None else total + terms.loss
            values = [terms.loss, terms.hard_sum, terms.soft_sum, terms.top1_agree, terms.num_tokens]
            stats.append(torch.stack([v.detach().float().reshape(()) for v in values]))
        return total, torch.stack(stats)

    @staticmethod
    def _logit_source(model: nn.Module, model_inputs: dict[str, Tensor], fused: bool) -> LogitSource:
        """Hidden states plus the `lm_head` when logits can be formed per chunk, else the model's own logits."""
        if fused:
            hidden = final_hidden_states(model, model_inputs)
            head = lm_head(model)
            return LogitSource(hidden.reshape(-1, hidden.shape[-1]), head.weight, head.bias)
        logits = model(**model_inputs, use_cache=False).logits
        return LogitSource(logits.reshape(-1, logits.shape[-1]))

    @property
    def student_teachers(self) -> list[str]:
        raise NotImplementedError

    # ---- the other models' optimizers, checkpoints and exports -------------------------------------

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        optimizer = super().create_optimizer(model)
        for peer in self.peers:
            if peer.optimizer is None:
                peer.build_optimizer(self)
        return optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        for peer in self.peers:
            if peer.scheduler is None:
                peer.build_scheduler(self.args, num_training_steps)
        return scheduler

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            for peer in self.peers:
                peer.save_state(folder)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        # After the optimizers and schedules exist, on every resume path.
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            for peer in self.peers:
                peer.load_state(checkpoint)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The student where `Trainer` puts it; each other model (a plain `save_pretrained` folder with the
        tokenizer and a card) in its own folder below it. Checkpoints keep the others' state in `peers/`."""
        super().save_model(output_dir, _internal_call)
        if not _internal_call and self.args.should_save:
            for peer in self.peers:
                peer.export(output_dir or self.args.output_dir, self.processing_class, type(self).__name__)

    def push_to_hub(self, *args: Any, **kwargs: Any) -> Any:
        """Push the student with the other models in their folders below it (`Trainer.push_to_hub` saves with an
        internal call, which `save_model` leaves without exports)."""
        if self.args.should_save:
            for peer in self.peers:
                peer.export(self.args.output_dir, self.processing_class, type(self).__name__)
        return super().push_to_hub(*args, **kwargs)

    # ---- logging -----------------------------------------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = self.metric_mode
        sums = self.step_sums.pop("cotrained", mode, self.accelerator)
        if sums is not None:
            prefix = "eval_" if mode == "eval" else ""
            width = len(MODEL_STATS)
            for index, name in enumerate(self.all_names):
                row = sums[index * width : (index + 1) * width]
                tokens = max(row[-1], 1.0)
                for stat, value in zip(MODEL_STATS[:-1], row[:-1]):
                    if stat in ("soft_loss", "agreement") and not self._teachers_of(name):
                        continue  # trained on the labels only
                    logs[f"{prefix}{name}_{stat}"] = value / tokens
            if mode == "train":
                for peer in self.peers:
                    if peer.last_lr is not None:
                        logs[f"{peer.name}_learning_rate"] = peer.last_lr
        super().log(logs, start_time)

    def _teachers_of(self, name: str) -> list[str]:
        if name == STUDENT:
            return self.student_teachers
        return next(peer.teachers for peer in self.peers if peer.name == name)


class MutualKDTrainer(CoTrainedTrainer):
    """Deep mutual learning: the student and `peers` each learn from the labels and from all the others.

    Args:
        model: the student (saved to `output_dir` by `save_model`).
        peers: one or more other causal LMs with the same tokenizer (models or names/paths; LoRA-wrapped
            `PeftModel`s train their adapters only). Peer `i` is logged as `peer{i}` and saved to
            `output_dir/peers/peer{i}`.
        Everything else as `KDTrainer`, without a teacher; `args` should be a `MutualKDConfig`.
    """

    _tag_names = ["trl", "sft", "hf_distill", "knowledge-distillation", "mutual-learning"]
    regime = "deep mutual learning"
    config_class = MutualKDConfig
    config_suffix = "Mutual"
    teacher_needs = TeacherNeeds("MutualKDTrainer", teacher_required=False)

    def __init__(self, model: Any, args: Any = None, *positional: Any, peers: Sequence[Any], **kwargs: Any) -> None:
        if isinstance(peers, (str, nn.Module)):
            peers = [peers]
        super().__init__(model, args, *positional, others=list(peers), **kwargs)

    def _build_peers(self, modules: list[nn.Module]) -> list[Peer]:
        names = [f"peer{i}" for i in range(1, len(modules) + 1)]
        peers = []
        for index, (name, module) in enumerate(zip(names, modules)):
            peers.append(
                Peer(
                    name=name,
                    module=module,
                    learning_rate=self.args.peer_learning_rate(index, len(modules)),
                    export_subdir=f"{PEERS_DIR}/{name}",
                    role="A peer of deep mutual learning: trained on the labels and on the other models' outputs.",
                    teachers=[STUDENT, *(other for other in names if other != name)],
                )
            )
        return peers

    @property
    def student_teachers(self) -> list[str]:
        return [peer.name for peer in self.peers]


class OnlineKDTrainer(CoTrainedTrainer):
    """Online distillation: `teacher_model` trains on the labels while the student distils from it.

    Args:
        model: the student (saved to `output_dir`).
        teacher_model: the co-trained teacher, a model or a name/path with the student's tokenizer; logged as
            `teacher` and saved to `output_dir/teacher`.
        Everything else as `KDTrainer`; `args` should be an `OnlineKDConfig`.
    """

    _tag_names = ["trl", "sft", "hf_distill", "knowledge-distillation", "online-distillation"]
    regime = "online distillation (the teacher trains on the labels alone)"
    config_class = OnlineKDConfig
    config_suffix = "Online"
    teacher_needs = TeacherNeeds("OnlineKDTrainer", teacher_required=False)

    def __init__(
        self, model: Any, args: Any = None, *positional: Any, teacher_model: Any = None, **kwargs: Any
    ) -> None:
        if teacher_model is None:
            raise ValueError("OnlineKDTrainer needs `teacher_model`: the model that trains alongside the student.")
        super().__init__(model, args, *positional, others=[teacher_model], **kwargs)

    def _build_peers(self, modules: list[nn.Module]) -> list[Peer]:
        (module,) = modules
        role = "The teacher of online distillation: trained on the labels while the student distilled from it."
        rate = self.args.peer_learning_rate(0, 1)
        return [Peer(name="teacher", module=module, learning_rate=rate, export_subdir="teacher", role=role)]

    @property
    def student_teachers(self) -> list[str]:
        return ["teacher"]

    @property
    def teacher_model(self) -> nn.Module | None:
        """The co-trained teacher (named on the student's model card)."""
        peers = getattr(self, "peers", None)
        return peers[0].module if peers else None
