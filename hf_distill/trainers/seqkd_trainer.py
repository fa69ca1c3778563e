"""`SeqKDTrainer`: sequence-level KD, i.e. fine-tuning the student on teacher-written completions.

One step: the student reads prompt + completion; the loss covers completion tokens only. Rows come from two
sources, teacher completions and (optionally) ground-truth targets, tagged per row, and the loss is
``beta * L_seqkd + (1 - beta) * L_gt`` with each term summed over its tokens and divided once by its own token
count over the whole accumulated batch. With a teacher model that shares the vocabulary, ``L_seqkd`` adds
`KDTrainer`'s token-level term on the teacher completions.
"""

from __future__ import annotations

from typing import Any

import torch
from datasets import Dataset
from torch import Tensor, nn
from transformers import PreTrainedModel, TrainingArguments

from ..forward_redirect import call_inside_forward
from ..losses.cross_entropy import cross_entropy_sum
from ..losses.token_kd import IGNORE_INDEX, causal_targets
from ..teachers.sources import TeacherNeeds, TeacherRequest, check_compatible, resolve_teacher_source
from .config_conversion import as_config
from .kd_trainer import MODEL_INPUT_KEYS, KDTrainer
from .seqkd_config import SeqKDConfig

SOURCE_COLUMN = "seqkd_source"
TEACHER_SOURCE, GROUND_TRUTH_SOURCE = 0, 1


def seqkd_training_rows(dataset: Any, args: SeqKDConfig) -> Any:
    """Prompt/completion rows SFT can tokenize, tagged with their source (teacher or ground truth).

    Accepts the output of ``generate_teacher_completions`` (its other columns are dropped) or any dataset with
    the prompt and completion columns, or a ``messages`` column whose last turn is the teacher's answer. With
    ``beta < 1`` each example yields two rows: the teacher completion and the ground-truth one.
    """
    if dataset is None:
        return None
    if isinstance(dataset, dict):
        return {name: seqkd_training_rows(part, args) for name, part in dataset.items()}
    if not isinstance(dataset, Dataset):
        raise TypeError(f"SeqKDTrainer needs a datasets.Dataset (or a dict of them), got {type(dataset).__name__}.")
    columns = dataset.column_names
    if len(dataset) == 0:
        raise ValueError("The training dataset is empty.")
    use_messages = args.prompt_column not in columns and args.completion_column not in columns and "messages" in columns
    if not use_messages:
        missing = [c for c in (args.prompt_column, args.completion_column) if c not in columns]
        if missing:
            raise ValueError(
                f"SeqKDTrainer needs columns {missing} (set prompt_column / completion_column) or a 'messages' "
                f"column; the dataset has {columns}."
            )
    mixing = args.beta < 1.0
    if mixing and args.ground_truth_column not in columns:
        raise ValueError(
            f"beta={args.beta} needs the ground-truth column '{args.ground_truth_column}'; the dataset has {columns}."
        )

    def expand(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {"prompt": [], "completion": [], SOURCE_COLUMN: []}
        for i in range(len(next(iter(batch.values())))):
            if use_messages:
                prompt, completion = _split_conversation(batch["messages"][i])
            else:
                prompt, completion = batch[args.prompt_column][i], batch[args.completion_column][i]
            pairs = [(completion, TEACHER_SOURCE)]
            if mixing:
                pairs.append((batch[args.ground_truth_column][i], GROUND_TRUTH_SOURCE))
            for target, source in pairs:
                out["prompt"].append(prompt)
                out["completion"].append(_as_completion(target, prompt, source))
                out[SOURCE_COLUMN].append(source)
        return out

    return dataset.map(expand, batched=True, remove_columns=columns, desc="SeqKD rows")


def _split_conversation(messages: list[dict]) -> tuple[list[dict], list[dict]]:
    if not messages or messages[-1].get("role") != "assistant" or len(messages) < 2:
        raise ValueError("A 'messages' row must end with the assistant (teacher) turn after at least one prompt turn.")
    return list(messages[:-1]), [messages[-1]]


def _as_completion(target: Any, prompt: Any, source: int) -> Any:
    """Match the completion's form to the prompt's: text with text, an assistant message with messages."""
    name = "ground-truth" if source == GROUND_TRUTH_SOURCE else "teacher"
    if target is None:
        raise ValueError(f"A {name} completion is missing (None).")
    if isinstance(prompt, list):
        return [{"role": "assistant", "content": target}] if isinstance(target, str) else target
    if not isinstance(target, str):
        raise ValueError(f"The prompt is text but a {name} completion is {type(target).__name__}; use text for both.")
    return target


class SourceTaggingCollator:
    """Wraps SFT's collator and adds a (batch,) tensor saying which rows hold ground-truth targets."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        sources = [int(example.get(SOURCE_COLUMN, TEACHER_SOURCE)) for example in examples]
        batch = self.inner([{k: v for k, v in example.items() if k != SOURCE_COLUMN} for example in examples])
        batch[SOURCE_COLUMN] = torch.tensor(sources, dtype=torch.long)
        return batch


class SeqKDTrainer(KDTrainer):
    """Sequence-level distillation as a drop-in `SFTTrainer`/`KDTrainer`: train on teacher completions.

    Args:
        model: the student (model or name); `peft_config` makes it a LoRA student.
        args: a `SeqKDConfig` (a plain `TrainingArguments` is converted with defaults).
        train_dataset / eval_dataset: prompt + teacher completion rows, e.g. from
            `hf_distill.teachers.generate_teacher_completions`, plus the ground-truth column when `beta < 1`.
        teacher_model: optional; when given (any teacher that shares the student's vocabulary: a model, an
            ensemble, "ema") the loss on teacher completions adds the token-level KD term of `KDTrainer`. A
            teacher with another tokenizer is refused: train on its generated completions without `teacher_model`.
    """

    _tag_names = ["trl", "sft", "hf_distill", "sequence-kd"]
    config_class = SeqKDConfig
    config_suffix = "SeqKD"
    # The token-level term compares teacher and student position by position; without a teacher, plain SeqKD.
    teacher_needs = TeacherNeeds("SeqKDTrainer", same_vocabulary=True, teacher_required=False, builds_own_rows=True)

    def __init__(
        self,
        model: str | PreTrainedModel | nn.Module,
        args: SeqKDConfig | TrainingArguments | None = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        *,
        teacher_model: Any = None,
        teacher_processing_class: Any = None,
        **sft_kwargs: Any,
    ) -> None:
        args = as_config(SeqKDConfig, args, model, self.config_suffix)
        # The teacher is resolved on the datasets as given (the rows built below no longer show, e.g., precomputed
        # teacher columns), then handed on as a source.
        request = TeacherRequest(teacher_model, args, [train_dataset, eval_dataset], teacher_processing_class)
        teacher_model = resolve_teacher_source(request)
        check_compatible(teacher_model, self.teacher_needs, args)
        if args.beta < 1.0 and args.padding_free:
            raise ValueError("padding_free flattens the batch into one row; use padding_free=False when beta < 1.")
        super().__init__(
            model,
            args=args,
            data_collator=data_collator,
            train_dataset=seqkd_training_rows(train_dataset, args),
            eval_dataset=seqkd_training_rows(eval_dataset, args),
            processing_class=processing_class,
            teacher_model=teacher_model,
            teacher_processing_class=teacher_processing_class,
            **sft_kwargs,
        )
        self.data_collator = SourceTaggingCollator(self.data_collator)
        # Per-source target-token counts of the current accumulation window (see `_get_num_items_in_batch`).
        self._source_items: tuple[Any, Any] = (None, None)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if SOURCE_COLUMN not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, SOURCE_COLUMN]

    # ---- token counts ------------------------------------------------------------------------------

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> Tensor | int | None:
        """Total target tokens (as the Trainer expects), and, stored aside, the count of each source.

        The Trainer calls this once per accumulation window before its micro-steps (and per batch in
        evaluation), so the stored counts always belong to the batches `compute_loss` sees next.
        """
        total = super()._get_num_items_in_batch(batch_samples, device)
        if self.args.beta < 1.0 and batch_samples and "labels" in batch_samples[0]:
            self._source_items = tuple(
                super(SeqKDTrainer, self)._get_num_items_in_batch(
                    [{"labels": _labels_of_source(b, source)} for b in batch_samples], device
                )
                for source in (TEACHER_SOURCE, GROUND_TRUTH_SOURCE)
            )
        return total

    # ---- the step ----------------------------------------------------------------------------------

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, Any]:
        model_inputs = {k: v for k, v in inputs.items() if k in MODEL_INPUT_KEYS}
        teacher_labels = _labels_of_source(inputs, TEACHER_SOURCE)
        truth_labels = _labels_of_source(inputs, GROUND_TRUTH_SOURCE)
        teacher_targets, truth_targets = causal_targets(teacher_labels), causal_targets(truth_labels)
        teacher_signal = self.teacher_signal(inputs, model_inputs) if self.teacher_source is not None else None

        unwrapped = self.accelerator.unwrap_model(model)
        seq_sum, seq_ce, seq_tokens, gt_sum, gt_tokens, kd_terms = call_inside_forward(
            model,
            unwrapped,
            self._terms_inside,
            unwrapped,
            model_inputs,
            teacher_targets,
            truth_targets,
            teacher_signal,
        )
        if self.args.beta < 1.0:
            seq_items, gt_items = self._source_items if num_items_in_batch is not None else (None, None)
            loss = self.args.beta * self.normalise(seq_sum, seq_tokens, seq_items)
            loss = loss + (1.0 - self.args.beta) * self.normalise(gt_sum, gt_tokens, gt_items)
        else:
            loss = self.normalise(seq_sum, seq_tokens, num_items_in_batch)
        self._accumulate_seqkd_metrics(seq_ce, seq_tokens, gt_sum, gt_tokens)
        if kd_terms is not None:
            self._accumulate_metrics(kd_terms)
        if return_outputs:
            with torch.no_grad():
                outputs = model(**model_inputs, use_cache=False)
            return loss, outputs
        return loss

    def _terms_inside(
        self,
        unwrapped: nn.Module,
        model_inputs: dict[str, Tensor],
        teacher_targets: Tensor,
        truth_targets: Tensor,
        teacher_signal: Any,
    ) -> tuple[Any, ...]:
        student = self.student_logit_source(unwrapped, model_inputs)
        chunk = self.args.loss_chunk_size
        kd_terms = None
        if teacher_signal is not None:
            kd_terms = self.kd_loss(student, teacher_signal, teacher_targets)
            seq_sum, seq_ce = kd_terms.loss, kd_terms.hard_sum.detach()
        else:
            seq_sum = cross_entropy_sum(student, teacher_targets, chunk)
            seq_ce = seq_sum.detach()
        if self.args.beta < 1.0:
            gt_sum = cross_entropy_sum(student, truth_targets, chunk)
        else:
            gt_sum = seq_sum.new_zeros(())
        return seq_sum, seq_ce, _num_targets(teacher_targets), gt_sum, _num_targets(truth_targets), kd_terms

    # ---- logging -----------------------------------------------------------------------------------

    def _accumulate_seqkd_metrics(self, seq_ce: Tensor, seq_tokens: Tensor, gt_ce: Tensor, gt_tokens: Tensor) -> None:
        self.step_sums.add("seqkd", self.metric_mode, [seq_ce, seq_tokens, gt_ce, gt_tokens])

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = self.metric_mode
        sums = self.step_sums.pop("seqkd", mode, self.accelerator)
        if sums is not None:
            prefix = "eval_" if mode == "eval" else ""
            logs[f"{prefix}seqkd_ce"] = float(sums[0]) / max(float(sums[1]), 1.0)
            if self.args.beta < 1.0:
                logs[f"{prefix}ground_truth_ce"] = float(sums[2]) / max(float(sums[3]), 1.0)
        super().log(logs, start_time)


def _num_targets(targets: Tensor) -> Tensor:
    return (targets != IGNORE_INDEX).sum()


def _labels_of_source(batch: dict[str, Any], source: int) -> Tensor:
    """The batch's labels with every row of the other source masked out."""
    labels = batch["labels"]
    sources = batch.get(SOURCE_COLUMN)
    if sources is None:
        return labels if source == TEACHER_SOURCE else torch.full_like(labels, IGNORE_INDEX)
    keep = (sources.to(labels.device) == source).unsqueeze(-1)
    return torch.where(keep, labels, torch.full_like(labels, IGNORE_INDEX))
