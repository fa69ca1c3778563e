"""The recipe's own settings: what to distil (mode), from which data, how to build the student, how to evaluate.

They are parsed together with `KDConfig` (training and loss) and TRL's `ModelConfig` (the student and LoRA) by
`TrlParser`, so a YAML file sets defaults and every field can be overridden on the command line.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from .two_stage_arguments import TwoStageArguments, check_two_stage_arguments

MODES = ("logit", "offline", "seqkd", "cross_tokenizer", "feature")
CE_BASELINE_TRAINERS = ("sft", "trainer")


@dataclass
class RecipeArguments(TwoStageArguments):
    """Recipe settings (the training and loss settings are `KDConfig`'s, the student's are `ModelConfig`'s).

    The two-stage seqkd job's fields (`generate_prompts_from`, `generation_*`) come from `TwoStageArguments`.
    """

    mode: str = field(
        default="logit",
        metadata={
            "help": "logit: online logit KD; offline: from precomputed teacher columns; seqkd: sequence-level "
            "KD on teacher completions; cross_tokenizer: logit KD across tokenizers; feature: logit + "
            "hidden-state KD (FeatureKDTrainer).",
            "choices": list(MODES),
        },
    )
    # ---- data
    dataset_name: str = field(
        default="stdlib",
        metadata={"help": "'stdlib' (Python standard library sources, offline) or a load_dataset name/path."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    dataset_data_dir: str | None = field(default=None, metadata={"help": "data_dir for load_dataset."})
    dataset_train_split: str = field(default="train", metadata={"help": "Training split."})
    dataset_eval_split: str | None = field(default=None, metadata={"help": "Held-out split for evaluation."})
    num_eval_files: int = field(default=16, metadata={"help": "stdlib: held-out source files (never trained on)."})
    num_train_rows: int | None = field(
        default=None,
        metadata={"help": "stdlib: training chunks of max_length tokens (default: exactly what max_steps consumes)."},
    )
    max_chunks_per_file: int | None = field(
        default=None, metadata={"help": "stdlib: at most this many training chunks per file (more varied code)."}
    )
    eval_chars_per_file: int | None = field(
        default=None, metadata={"help": "stdlib: score only the first whole lines (up to this size) of held-out files."}
    )
    split_seed: int = field(default=0, metadata={"help": "Seed of the held-out file split."})
    precomputed_dir: str | None = field(
        default=None, metadata={"help": "offline mode: directory written by scripts/precompute_logits.py."}
    )
    teacher_display_name: str | None = field(
        default=None,
        metadata={
            "help": "Teacher named in the report and model card when no teacher model is loaded (offline "
            "columns, sequence-level KD on its completions)."
        },
    )
    # ---- student
    student_init: str = field(
        default="pretrained",
        metadata={
            "help": "pretrained: the student's own weights; layer_subset: keep student_num_layers layers of "
            "model_name_or_path (usually the teacher), evenly spaced incl. first and last.",
            "choices": ["pretrained", "layer_subset"],
        },
    )
    student_num_layers: int | None = field(default=None, metadata={"help": "layer_subset: layers to keep."})
    student_layers: list[int] | None = field(
        default=None,
        metadata={
            "help": "layer_subset: the teacher layer indices to keep, strictly increasing (default: "
            "student_num_layers evenly spaced); scripts/choose_student_layers.py picks them by KL to the teacher."
        },
    )
    feature_pair_kept_layers: bool = field(
        default=True,
        metadata={
            "help": "feature mode with a layer_subset student: pair each student layer with the teacher layer it "
            "was copied from (overrides feature_layer_map)."
        },
    )
    # ---- baseline and evaluation
    ce_baseline: bool = field(
        default=False, metadata={"help": "Also train a CE-only student (alpha = 0) on the same data and steps."}
    )
    ce_baseline_trainer: str = field(
        default="sft",
        metadata={
            "help": "What trains the CE-only student: sft (TRL SFTTrainer: every dataset format) or trainer (a plain "
            "transformers.Trainer, the cheapest CE step; needs pre-tokenized input_ids rows, as the stdlib corpus "
            "gives).",
            "choices": ["sft", "trainer"],
        },
    )
    ce_baseline_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Peak learning rate of the CE-only student (default: learning_rate). Give each student its own "
            "best rate, so that a tuned KD student is not compared with an untuned baseline."
        },
    )
    curve_eval_every: int = field(
        default=0,
        metadata={
            "help": "Score both students on the held-out texts every this many steps and report the steps and "
            "seconds the KD student needs to reach the CE-only student's final held-out loss (0: off)."
        },
    )
    eval_max_length: int | None = field(default=None, metadata={"help": "Held-out window (default: max_length)."})
    eval_batch_size: int = field(default=4, metadata={"help": "Batch size of the held-out evaluation."})
    max_eval_texts: int | None = field(default=None, metadata={"help": "Cap on held-out texts of a Hub dataset."})
    next_line_pairs: int = field(default=0, metadata={"help": "Next-line completion examples (0: skip)."})
    next_line_context_tokens: int = field(default=256, metadata={"help": "Context tokens for next-line completion."})
    next_line_max_new_tokens: int = field(default=32, metadata={"help": "Generated tokens per next line."})
    humaneval_limit: int | None = field(
        default=None, metadata={"help": "HumanEval problems for pass@1 (None: skip; needs allow_code_execution)."}
    )
    allow_code_execution: bool = field(
        default=False, metadata={"help": "Opt in to running generated code (sandboxed) for HumanEval pass@k."}
    )
    inference_prompts: int = field(
        default=0,
        metadata={
            "help": "Held-out prompts for the inference-speed columns (prefill/decode tokens per second, time to "
            "first token, peak memory, model size) of the teacher and the trained students (0: skip)."
        },
    )
    inference_prompt_tokens: int = field(default=128, metadata={"help": "Tokens per inference-speed prompt."})
    inference_new_tokens: int = field(default=32, metadata={"help": "Greedy tokens generated per speed prompt."})
    report_dir: str | None = field(default=None, metadata={"help": "report.md directory (default: output_dir/report)."})
    license: str | None = field(default=None, metadata={"help": "Licence written in the model card."})

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.student_layers is not None and self.student_init != "layer_subset":
            raise ValueError(
                "student_layers picks the layers of a layer_subset student, but student_init is "
                f"{self.student_init!r}: set student_init=layer_subset, or remove student_layers"
            )
        if self.student_layers is not None:
            if self.student_num_layers not in (None, len(self.student_layers)):
                raise ValueError(
                    f"student_layers has {len(self.student_layers)} layers but student_num_layers is "
                    f"{self.student_num_layers}: give one of them, or matching values"
                )
            self.student_num_layers = len(self.student_layers)
        if self.student_init == "layer_subset" and not self.student_num_layers:
            raise ValueError("student_init=layer_subset needs student_num_layers or student_layers")
        if self.mode == "offline" and not self.precomputed_dir:
            raise ValueError("mode=offline needs precomputed_dir (written by scripts/precompute_logits.py)")
        if self.ce_baseline_learning_rate is not None and not self.ce_baseline_learning_rate > 0:
            raise ValueError(f"ce_baseline_learning_rate must be > 0, got {self.ce_baseline_learning_rate}")
        if not self.ce_baseline and (self.ce_baseline_learning_rate is not None or self.ce_baseline_trainer != "sft"):
            warnings.warn(
                "ce_baseline is off: ignoring ce_baseline_trainer / ce_baseline_learning_rate (set ce_baseline=true "
                "to train the CE-only student)",
                stacklevel=3,
            )
        if self.ce_baseline_trainer not in CE_BASELINE_TRAINERS:
            allowed = CE_BASELINE_TRAINERS
            raise ValueError(f"ce_baseline_trainer must be one of {allowed}, got {self.ce_baseline_trainer!r}")
        check_two_stage_arguments(self)
