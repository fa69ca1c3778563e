"""A model trained next to the student (a mutual-learning peer, an online teacher) and everything it owns.

The Trainer knows only its own model, optimizer and schedule, so each co-trained model carries its own here:
its optimizer and schedule (built like the Trainer's own, with its own learning rate), the optimizer step
(gradients averaged over processes, clipped like the student's), and the checkpoint state that makes a resumed
run bit-identical (trainable weights, optimizer and schedule state, in ``peers/<name>/`` of each checkpoint).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

PEERS_DIR = "peers"
WEIGHTS_FILE = "trainable.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"


def broadcast_from_main_process(module: nn.Module) -> None:
    """Give every process the main process's values (what DDP does for the student when it wraps it), so models
    built with different random initialisations on different processes cannot drift apart."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    if torch.distributed.get_world_size() < 2:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            torch.distributed.broadcast(tensor.data, src=0)


@dataclass
class Peer:
    """One co-trained model: its name in logs and folders, where its export goes, and its training state."""

    name: str
    module: nn.Module
    learning_rate: float
    export_subdir: str  # relative to the student's output directory
    role: str  # one line for its model card
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    teachers: list[str] = field(default_factory=list)  # names of the models it distils from
    last_lr: float | None = None

    def trainable(self) -> dict[str, nn.Parameter]:
        return {name: p for name, p in self.module.named_parameters() if p.requires_grad}

    def build_optimizer(self, trainer: Any) -> None:
        """The optimizer the Trainer would build for this model (same class, settings and weight-decay groups)."""
        decay = set(trainer.get_decay_parameter_names(self.module))
        params = self.trainable()
        groups = [
            {"params": [p for n, p in params.items() if n in decay], "weight_decay": trainer.args.weight_decay},
            {"params": [p for n, p in params.items() if n not in decay], "weight_decay": 0.0},
        ]
        optimizer_cls, kwargs = trainer.get_optimizer_cls_and_kwargs(trainer.args, self.module)
        self.optimizer = optimizer_cls(groups, **{**kwargs, "lr": self.learning_rate})

    def build_scheduler(self, args: Any, num_training_steps: int) -> None:
        from transformers import get_scheduler

        self.scheduler = get_scheduler(
            args.lr_scheduler_type,
            optimizer=self.optimizer,
            num_warmup_steps=args.get_warmup_steps(num_training_steps),
            num_training_steps=num_training_steps,
            scheduler_specific_kwargs=args.lr_scheduler_kwargs,
        )

    def step(self, max_grad_norm: float, world_size: int) -> None:
        """Average gradients over processes (the peer sits outside DDP), clip, step, advance the schedule."""
        params = [p for p in self.trainable().values() if p.grad is not None]
        if world_size > 1:
            for param in params:
                torch.distributed.all_reduce(param.grad, op=torch.distributed.ReduceOp.SUM)
                param.grad.div_(world_size)
        if params and max_grad_norm and max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        self.optimizer.step()
        self.last_lr = float(self.optimizer.param_groups[0]["lr"])  # the rate of this step, as the Trainer logs it
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    @property
    def current_lr(self) -> float:
        """The learning rate the next step will use."""
        return float(self.optimizer.param_groups[0]["lr"])

    # ---- checkpoints ---------------------------------------------------------------------------------

    def state_dir(self, checkpoint: str) -> str:
        return os.path.join(checkpoint, PEERS_DIR, self.name)

    def save_state(self, checkpoint: str) -> None:
        folder = self.state_dir(checkpoint)
        os.makedirs(folder, exist_ok=True)
        weights = {name: p.detach().contiguous().cpu() for name, p in self.trainable().items()}
        save_file(weights, os.path.join(folder, WEIGHTS_FILE))
        torch.save(self.optimizer.state_dict(), os.path.join(folder, OPTIMIZER_FILE))
        torch.save(self.scheduler.state_dict(), os.path.join(folder, SCHEDULER_FILE))

    def load_state(self, checkpoint: str) -> None:
        folder = self.state_dir(checkpoint)
        path = os.path.join(folder, WEIGHTS_FILE)
        if not os.path.isfile(path):
            raise ValueError(
                f"{checkpoint} has no state for the co-trained model '{self.name}' ({path} is missing): it was not "
                "written by this trainer with the same models. Resume from a checkpoint of this run."
            )
        saved, params = load_file(path), self.trainable()
        if set(saved) != set(params):
            missing, extra = sorted(set(params) - set(saved))[:3], sorted(set(saved) - set(params))[:3]
            raise ValueError(f"{path} does not match '{self.name}' (missing {missing}, unexpected {extra}).")
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(saved[name])
        device = next(iter(params.values())).device
        self.optimizer.load_state_dict(torch.load(os.path.join(folder, OPTIMIZER_FILE), map_location=device))
        self.scheduler.load_state_dict(torch.load(os.path.join(folder, SCHEDULER_FILE), weights_only=True))

    # ---- export -------------------------------------------------------------------------------------

    def export(self, output_dir: str, processing_class: Any, trainer_name: str) -> str:
        """``save_pretrained`` into ``output_dir/<export_subdir>`` with its tokenizer and a card saying what it is."""
        folder = os.path.join(output_dir, self.export_subdir)
        os.makedirs(folder, exist_ok=True)
        self.module.save_pretrained(folder)
        if processing_class is not None:
            processing_class.save_pretrained(folder)
        learned = (
            f"It distilled from: {', '.join(self.teachers)}." if self.teachers else "It trained on the labels only."
        )
        with open(os.path.join(folder, "README.md"), "w") as handle:
            handle.write(
                f"---\nlibrary_name: transformers\ntags:\n- hf_distill\n- {trainer_name}\n---\n\n"
                f"# {self.name}\n\n{self.role}\n\nTrained with `hf_distill.{trainer_name}` at learning rate "
                f"{self.learning_rate}; the student of the run is in the parent output directory. "
                f"{learned}\n"
            )
        return folder
