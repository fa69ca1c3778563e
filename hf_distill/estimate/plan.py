"""`estimate_distillation`: FLOPs, memory per device, time, cost and offline storage of one planned run."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .accelerators import Accelerator, accelerator, cost_usd, training_hours
from .arguments import EstimateArguments
from .flops import OFFLINE_MODES, FlopBudget, distillation_flops
from .memory import SHARDINGS, MemoryPlan, MemorySetup, fixes_for, memory_plan
from .model_shape import ModelShape, resolve_model_shape
from .storage import offline_bytes_per_token

STORAGE_OPTIONS = (("offline_topk", 8), ("offline_topk", 32), ("offline_topk", 128), ("offline_sampled", None))
# Left free on each device for the runtime (CUDA context, allocator fragmentation, communication buffers).
RESERVED_BYTES = 2e9


@dataclass(frozen=True)
class DistillationEstimate:
    """Everything `hf-distill estimate` prints, as numbers."""

    args: EstimateArguments
    teacher: ModelShape
    student: ModelShape
    device: Accelerator
    flops: FlopBudget
    hours: float
    cost: float
    memory: dict[tuple[str, bool], MemoryPlan]  # (sharding, activation checkpointing) -> plan
    fixes: dict[str, list[str]]
    storage: dict[str, float]  # label -> bytes for one pass over the tokens

    @property
    def usable_bytes(self) -> float:
        return self.device.memory_gb * 1e9 - RESERVED_BYTES

    def fits(self, sharding: str, checkpointing: bool | None = None) -> bool:
        ckpt = self.args.activation_checkpointing if checkpointing is None else checkpointing
        return self.memory[(sharding, ckpt)].peak <= self.usable_bytes


def memory_setup(args: EstimateArguments, teacher: ModelShape, student: ModelShape) -> MemorySetup:
    """The training step's memory inputs; offline and SeqKD runs train with no teacher in memory."""
    online = args.mode in ("logit", "feature")
    layers = args.feature_layers or (student.layers or 0)
    return MemorySetup(
        student=student,
        teacher=teacher if online else None,
        micro_batch=args.micro_batch_size,
        seq_len=args.seq_len + (args.seqkd_generation_length if args.mode == "seqkd" else 0),
        mode=args.mode,
        teacher_dtype=args.teacher_dtype,
        student_dtype=args.student_dtype,
        student_training=args.student_training,
        lora_rank=args.lora_rank,
        optimizer=args.optimizer,
        activation_checkpointing=args.activation_checkpointing,
        attention=args.attention,
        feature_layers=layers if args.mode == "feature" else 0,
        feature_projection=teacher.hidden != student.hidden or teacher.hidden is None,
        topk=args.topk,
    )


def estimate_distillation(args: EstimateArguments) -> DistillationEstimate:
    """Resolve the models and the device, then compute every figure of the estimate."""
    teacher = resolve_model_shape(args.teacher, "teacher")
    student = resolve_model_shape(args.student, "student")
    device = accelerator(args.accelerator, args.device_memory_gb, args.peak_tflops, args.price_per_hour)
    flops = distillation_flops(
        teacher.matmul_params,
        student.matmul_params,
        args.tokens,
        mode=args.mode,
        epochs=args.epochs,
        student_training=args.student_training,
        seqkd_num_samples=args.seqkd_num_samples,
        seqkd_generation_length=args.seqkd_generation_length,
        seq_len=args.seq_len,
        pretraining_tokens=args.pretraining_tokens,
    )
    hours = training_hours(flops.total, device, args.num_devices, args.mfu)
    setup = memory_setup(args, teacher, student)
    memory = {
        (sharding, ckpt): memory_plan(replace(setup, activation_checkpointing=ckpt), sharding, args.num_devices)
        for sharding in SHARDINGS
        for ckpt in (False, True)
    }
    usable = device.memory_gb * 1e9 - RESERVED_BYTES
    fixes = {sharding: fixes_for(setup, sharding, args.num_devices, usable) for sharding in SHARDINGS}
    storage = {}
    for mode, k in STORAGE_OPTIONS + ((args.mode, args.topk),) * (args.mode in OFFLINE_MODES):
        label = f"top-k k={k}" if mode == "offline_topk" else "sampled (24 draws)"
        per_token = offline_bytes_per_token(mode, teacher.vocab, k=k or 0, distinct=args.sampled_distinct)
        storage[label] = per_token * args.tokens
    return DistillationEstimate(
        args, teacher, student, device, flops, hours, cost_usd(args.num_devices, hours, device.price_per_hour),
        memory, fixes, storage,
    )  # fmt: skip


def _gb(value: float) -> str:
    return f"{value / 1e9:9.2f} GB"


def format_estimate(est: DistillationEstimate, with_cost: bool = True) -> str:
    """A plain-text report: FLOPs, time and cost (unless ``with_cost`` is False), memory per device by sharding,
    offline storage."""
    a, f = est.args, est.flops
    lines = [
        f"Distillation estimate: teacher {est.teacher.name} ({est.teacher.params:.3g} params) -> student "
        f"{est.student.name} ({est.student.params:.3g} params), mode {a.mode}",
        f"{a.tokens:.3g} tokens x {a.epochs} epoch(s), seq_len {a.seq_len}, micro-batch {a.micro_batch_size}, "
        f"teacher {a.teacher_dtype}, student {a.student_dtype} {a.student_training}",
        "",
        "FLOPs (2P per token forward, 6P forward + backward; attention's seq_len term left out)",
        f"  teacher forward during training  {f.teacher:10.3e}",
        f"  offline precompute (once)        {f.precompute:10.3e}   ({f.precompute_per_epoch(a.epochs):.3e} per epoch)"
        if f.precompute
        else None,
        f"  SeqKD generation (once)          {f.generation:10.3e}" if f.generation else None,
        f"  student training                 {f.student:10.3e}",
        f"  total                            {f.total:10.3e}",
        f"  pretraining the student on {a.pretraining_tokens:.3g} tokens: {f.pretraining:.3e} "
        f"-> this run is {f.ratio_to_pretraining:.1%} of it",
        "" if with_cost else None,
        f"Time and cost on {a.num_devices} x {est.device.name} ({est.device.peak_tflops:g} TFLOPS peak, "
        f"MFU {a.mfu:g}, ${est.device.price_per_hour:g}/device-hour): {est.hours:,.1f} h, ${est.cost:,.0f}"
        if with_cost
        else None,
        "",
        f"Memory per device ({est.device.memory_gb:g} GB, {RESERVED_BYTES / 1e9:g} GB kept free for the runtime)",
    ]
    for sharding in ("none", "zero3", "fsdp"):
        plan = est.memory[(sharding, a.activation_checkpointing)]
        other = est.memory[(sharding, not a.activation_checkpointing)]
        title = {"none": "no sharding (DDP: every device holds everything)", "zero3": "DeepSpeed ZeRO-3",
                 "fsdp": "FSDP full shard"}[sharding]  # fmt: skip
        lines.append(f"  {title} over {a.num_devices} device(s):")
        lines += [f"    {name:52s}{_gb(value)}" for name, value in plan.static.items()]
        for phase, parts in plan.phases.items():
            marker = "  <- peak" if phase == plan.peak_phase else ""
            lines.append(f"    [{phase}]{marker}")
            lines += [f"      {name:50s}{_gb(value)}" for name, value in parts.items()]
        ckpt = "on" if a.activation_checkpointing else "off"
        lines.append(f"    peak with activation checkpointing {ckpt:3s}             {_gb(plan.peak)}")
        lines.append(f"    peak with activation checkpointing {'off' if ckpt == 'on' else 'on':3s}             "
                     f"{_gb(other.peak)}")  # fmt: skip
        if plan.naive_loss_bytes is not None:
            lines.append(f"    (a naive full-logits KD loss would hold {plan.naive_loss_bytes / 1e9:.2f} GB instead "
                         "of the chunked loss's buffers)")  # fmt: skip
        lines += [f"    note: {note}" for note in plan.notes]
        if est.fits(sharding):
            lines.append("    fits" if plan.naive_loss_bytes is not None else "    fits as far as known")
        else:
            fixes = est.fixes[sharding]
            lines.append(
                "    DOES NOT FIT. "
                + (
                    "Any one of these would make it fit: " + "; ".join(fixes)
                    if fixes
                    else "No single change tried here makes it fit (combine several, or more devices)."
                )
            )
    lines += ["", f"Offline teacher columns for {a.tokens:.3g} tokens (Arrow bytes per token as in BENCHMARKS.md)"]
    lines += [f"  {label:22s}{_gb(value)}" for label, value in est.storage.items()]
    return "\n".join(line for line in lines if line is not None)
