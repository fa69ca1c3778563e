"""Peak memory per device of a distillation step, by component, unsharded and under ZeRO-3 / FSDP.

The peak is modelled as what lives the whole step (weights, optimizer states) plus the largest of three
phases that do not overlap: the teacher forward (no grad), the student's saved activations with the loss
buffers (the moment backward starts), and the full set of student gradients (the moment it ends; the
activations are freed as backward walks down the layers). Activations count the tensors a Llama-style
decoder layer saves for backward with SDPA attention, per token (h hidden, q/kv attention widths, i MLP width):
the layer input, both norms' normalised states and outputs (4h), the residual sum (h), q, k, v and the attention
output (2q + 2kv; o_proj saves a view of that output), and the MLP's gate, SiLU, up and product (4i).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .model_shape import ModelShape

# Bytes per weight. nf4: 4 bits plus double-quantised block scales (8 bits per 64 weights, fp32 per 256 blocks);
# bitsandbytes keeps embeddings and the output head unquantised (counted at compute precision when known).
WEIGHT_BYTES = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "int8": 1.0,
    "int4": 0.5,
    "nf4": (4 + 8 / 64 + 32 / (64 * 256)) / 8,
}
QUANTISED = ("int8", "int4", "nf4")
OPTIMIZER_STATE_BYTES = {"adamw": None, "adamw_8bit": 2.0}  # None: two states in the parameter's dtype (torch)
SHARDINGS = ("none", "zero3", "fsdp")
# The chunked loss's buffers (hf_distill/losses/token_kd.py): one projected chunk of 2**26 float32 elements in
# all, worked through in blocks of 2**20 (CPU) or 2**24 (accelerator) elements; a few blocks live at once.
PROJECTED_CHUNK_ELEMENTS = 1 << 26
BLOCK_ELEMENTS = {"cpu": 1 << 20, "accelerator": 1 << 24}
LIVE_BLOCKS = 4
# A plain kl_div over full logits holds about five (tokens x vocab) float32 tensors (BENCHMARKS.md section 1:
# 5.9 GiB extra peak at 2,048 x 128,256, of which 0.49 GiB is the lm_head gradient).
NAIVE_LOSS_BUFFERS = 5


@dataclass(frozen=True)
class MemorySetup:
    """One micro-batch step's inputs to the memory model (the CLI's arguments, resolved)."""

    student: ModelShape
    teacher: ModelShape | None  # None: no teacher in memory while training (offline columns, SeqKD)
    micro_batch: int = 1
    seq_len: int = 2048
    mode: str = "logit"
    teacher_dtype: str = "bf16"
    student_dtype: str = "bf16"
    student_training: str = "full"
    lora_rank: int = 16
    optimizer: str = "adamw"
    activation_checkpointing: bool = False
    attention: str = "sdpa"
    feature_layers: int = 0
    feature_projection: bool = True
    topk: int = 32
    device_type: str = "accelerator"

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("teacher_dtype", self.teacher_dtype, WEIGHT_BYTES),
            ("student_dtype", self.student_dtype, ("fp32", "bf16", "fp16")),
            ("student_training", self.student_training, ("full", "lora", "qlora")),
            ("optimizer", self.optimizer, OPTIMIZER_STATE_BYTES),
            ("attention", self.attention, ("sdpa", "eager")),
            ("device_type", self.device_type, BLOCK_ELEMENTS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
        if self.micro_batch < 1 or self.seq_len < 1:
            raise ValueError(f"micro_batch and seq_len must be >= 1, got {self.micro_batch}, {self.seq_len}")

    @property
    def tokens(self) -> int:
        return self.micro_batch * self.seq_len

    @property
    def activation_bytes(self) -> float:
        return 4.0 if self.student_dtype == "fp32" else 2.0

    @property
    def teacher_compute_bytes(self) -> float:
        return 4.0 if self.teacher_dtype == "fp32" else 2.0


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per device by component, and the modelled peak."""

    sharding: str
    devices: int
    static: dict[str, float]
    phases: dict[str, dict[str, float]]
    naive_loss_bytes: float | None
    notes: list[str] = field(default_factory=list)

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=lambda name: sum(self.phases[name].values()))

    @property
    def peak(self) -> float:
        return sum(self.static.values()) + sum(self.phases[self.peak_phase].values())


def teacher_weight_bytes(shape: ModelShape, dtype: str) -> float:
    """Teacher weights; quantised teachers keep embeddings and the head at 16 bits when the shapes are known."""
    per = WEIGHT_BYTES[dtype]
    if dtype not in QUANTISED or not shape.has_shapes:
        return shape.params * per
    unquantised = shape.vocab * shape.hidden * (1 if shape.tied_embeddings else 2)
    return (shape.params - unquantised) * per + unquantised * 2.0


def lora_params(shape: ModelShape, rank: int) -> float:
    """Adapter parameters for rank ``rank`` on every linear of every decoder layer."""
    _require_shapes(shape, "LoRA adapter sizes")
    return float(shape.layers * rank * sum(a + b for a, b in shape.layer_linear_shapes))


def activation_elements_per_token(shape: ModelShape, seq_len: int, attention: str, checkpointing: bool) -> float:
    """Saved-for-backward elements per token of the whole decoder stack (see the module docstring)."""
    _require_shapes(shape, "activation memory")
    h, q, kv, i = shape.hidden, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim, shape.intermediate
    layer = 6 * h + 2 * q + 2 * kv + 4 * i
    if attention == "eager":
        layer += 2 * shape.heads * seq_len  # the attention probabilities and the scores they came from
    final_norm = 3 * h
    if checkpointing:  # layer inputs only, plus one layer recomputed during backward
        return shape.layers * h + layer + final_norm
    return shape.layers * layer + final_norm


def memory_plan(setup: MemorySetup, sharding: str = "none", devices: int = 1) -> MemoryPlan:
    """Per-device bytes of ``setup`` under ``sharding`` (none: every device holds everything) over ``devices``."""
    if sharding not in SHARDINGS:
        raise ValueError(f"sharding must be one of {SHARDINGS}, got {sharding!r}")
    if devices < 1:
        raise ValueError(f"devices must be >= 1, got {devices}")
    shards = 1 if sharding == "none" else devices
    s, t, n = setup.student, setup.teacher, setup.tokens
    notes: list[str] = []
    static: dict[str, float] = {}

    # ---- student parameters, gradients, optimizer states
    wb = setup.activation_bytes if setup.student_dtype != "fp32" else 4.0
    if setup.student_training == "full":
        base_bytes, trainable, train_bytes = 0.0, s.params, wb
    else:
        base_dtype = "nf4" if setup.student_training == "qlora" else setup.student_dtype
        base_bytes = teacher_weight_bytes(s, base_dtype)
        trainable, train_bytes = lora_params(s, setup.lora_rank), 4.0  # PEFT keeps adapters in float32
    if setup.mode == "feature" and setup.feature_projection and t is not None:
        _require_shapes(t, "feature projections")
        _require_shapes(s, "feature projections")
        static["feature projections (fp32, trained)"] = setup.feature_layers * s.hidden * t.hidden * 4.0 * 4 / shards
    state_bytes = OPTIMIZER_STATE_BYTES[setup.optimizer] or 2 * train_bytes
    static["student weights"] = (base_bytes + trainable * train_bytes) / shards
    static["optimizer states"] = trainable * state_bytes / shards
    if sharding == "zero3" and train_bytes < 4:
        static["fp32 master weights (ZeRO-3)"] = trainable * 4.0 / shards
    gradients = trainable * train_bytes / shards

    # ---- teacher weights
    if t is not None:
        static["teacher weights"] = teacher_weight_bytes(t, setup.teacher_dtype) / shards
    if shards > 1:
        gathered = 2 * _layer_bytes(s, setup.activation_bytes)  # the layer in use + the one prefetched
        if t is not None:
            gathered += 2 * _layer_bytes(t, setup.teacher_compute_bytes)
        static["gathered layers (sharded)"] = gathered
        if s.has_shapes and s.vocab * s.hidden > s.layer_params:
            static["gathered layers (sharded)"] += s.vocab * s.hidden * setup.activation_bytes
            notes.append("the gathered working set includes the embedding matrix, the largest unit")

    # ---- phases
    phases: dict[str, dict[str, float]] = {"student gradients (end of backward)": {"gradients": gradients}}
    naive = None
    if s.has_shapes:
        act = activation_elements_per_token(s, setup.seq_len, setup.attention, setup.activation_checkpointing)
        forward: dict[str, float] = {"student activations": act * n * setup.activation_bytes}
        forward.update(_loss_buffers(setup, sharding))
        if setup.student_training == "full" and sharding == "none":
            forward["lm_head gradient (formed inside the loss)"] = s.vocab * s.hidden * 4.0
        if t is not None and not t.has_shapes:
            notes.append(f"{t.name}: the teacher's hidden states and forward temporaries need its config")
        elif t is not None:
            forward.update(_teacher_signal(setup, sharding))
            phases["teacher forward (no grad)"] = {
                "teacher layer temporaries": _teacher_forward_bytes(t, n, setup.teacher_compute_bytes)
            }
        phases["student activations + loss (start of backward)"] = forward
        naive = NAIVE_LOSS_BUFFERS * n * s.vocab * 4.0
    else:
        notes.append(f"{s.name}: activations and loss buffers unknown without its config (peak is a lower bound)")
    return MemoryPlan(sharding, devices, static, phases, naive, notes)


def _loss_buffers(setup: MemorySetup, sharding: str) -> dict[str, float]:
    """The chunked loss's buffers; under ZeRO-3/FSDP the head is sharded, so full logits are formed instead."""
    s, n = setup.student, setup.tokens
    buffers = 2 if setup.teacher is not None and setup.mode in ("logit", "feature") else 1
    chunk = min(PROJECTED_CHUNK_ELEMENTS, n * s.vocab * buffers) * 4.0
    block = BLOCK_ELEMENTS[setup.device_type] * 4.0 * LIVE_BLOCKS
    out = {"loss chunk + blocks": chunk + block, "hidden-state gradient (fp32)": n * s.hidden * 4.0}
    if sharding != "none":
        out["full student logits + their gradient"] = n * s.vocab * (setup.activation_bytes + 4.0)
    if setup.mode.startswith("offline"):
        out["offline teacher columns (collated)"] = n * (setup.topk * 8.0 + 4.0)
    return out


def _teacher_signal(setup: MemorySetup, sharding: str) -> dict[str, float]:
    """What the teacher forward leaves alive while the student trains."""
    t, n, tb = setup.teacher, setup.tokens, setup.teacher_compute_bytes
    out = {"teacher final hidden states": n * t.hidden * tb}
    if sharding != "none":
        out["teacher full logits"] = n * t.vocab * tb
    if setup.mode == "feature" and setup.feature_layers:
        out["captured teacher layers"] = setup.feature_layers * n * t.hidden * tb
        per_pair = 2 + (1 if setup.feature_projection else 0)  # unit-normalised student, difference, projection
        out["feature loss saved tensors (fp32)"] = setup.feature_layers * n * t.hidden * 4.0 * per_pair
    return out


def _teacher_forward_bytes(t: ModelShape, tokens: int, compute_bytes: float) -> float:
    """A no-grad forward holds about one layer's input, residual, attention and MLP temporaries at a time."""
    h, i = t.hidden, t.intermediate
    return tokens * (4 * h + 3 * i) * compute_bytes


def _layer_bytes(shape: ModelShape, bytes_per: float) -> float:
    if not shape.has_shapes:
        return 0.0
    return shape.layer_params * bytes_per


def _require_shapes(shape: ModelShape, what: str) -> None:
    if not shape.has_shapes:
        raise ValueError(
            f"{what} need the model's shapes; {shape.name!r} is only a parameter count. Give a config "
            "(local directory or config.json) instead."
        )


def fixes_for(setup: MemorySetup, sharding: str, devices: int, capacity: float) -> list[str]:
    """Single changes that bring the peak under ``capacity`` bytes (empty when it already fits or none does)."""
    if memory_plan(setup, sharding, devices).peak <= capacity:
        return []
    candidates: list[tuple[str, MemorySetup, str, int]] = []
    if not setup.activation_checkpointing:
        candidates.append(
            ("turn on activation checkpointing", replace(setup, activation_checkpointing=True), sharding, devices)
        )
    if setup.teacher is not None and setup.teacher_dtype not in ("nf4", "int4"):
        candidates.append(("load the teacher in NF4", replace(setup, teacher_dtype="nf4"), sharding, devices))
    if setup.teacher is not None and setup.mode == "logit":
        candidates.append(
            (
                "precompute offline top-k columns (no teacher in memory)",
                replace(setup, teacher=None, mode="offline_topk"),
                sharding,
                devices,
            )
        )
    if setup.optimizer == "adamw":
        candidates.append(("use an 8-bit AdamW", replace(setup, optimizer="adamw_8bit"), sharding, devices))
    if setup.student_training == "full" and setup.student.has_shapes:
        candidates.append(
            ("train LoRA adapters (rank 16)", replace(setup, student_training="lora", lora_rank=16), sharding, devices)
        )
        candidates.append(
            (
                "train QLoRA (NF4 base, rank 16)",
                replace(setup, student_training="qlora", lora_rank=16),
                sharding,
                devices,
            )
        )
    found = [text for text, changed, shard, count in candidates if memory_plan(changed, shard, count).peak <= capacity]
    batch = _largest_fitting(
        lambda b: replace(setup, micro_batch=b), setup.micro_batch - 1, sharding, devices, capacity
    )
    if batch:
        found.append(f"micro-batch {batch} (use gradient accumulation for the same effective batch)")
    if sharding != "none":
        for count in (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024):
            if count > devices and memory_plan(setup, sharding, count).peak <= capacity:
                found.append(f"{count} devices")
                break
    return found


def _largest_fitting(make, upper: int, sharding: str, devices: int, capacity: float) -> int:
    low, high = 0, upper
    while low < high:
        mid = (low + high + 1) // 2
        if memory_plan(make(mid), sharding, devices).peak <= capacity:
            low = mid
        else:
            high = mid - 1
    return low
