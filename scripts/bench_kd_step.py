"""KDTrainer step time against a plain `Trainer` step and an `SFTTrainer` step on the same student, and the FLOP bound.

A KD step adds one teacher forward (about 2 * P_teacher FLOPs per token) to the student's training step
(about 6 * P_student), so the best possible ratio is 1 + 2 * P_teacher / (6 * P_student). P counts the
parameters that take part in matmuls (everything except the input embedding table).

The plain `Trainer` (causal-LM collator, pre-tokenized rows) is the reference the FLOP bound is about; TRL's
`SFTTrainer` is shown too because `KDTrainer` subclasses it. Trainers alternate in rounds so background load hits
all alike; each reports the median step time of
its steps after the first (warm-up).

    python scripts/bench_kd_step.py
    python scripts/bench_kd_step.py --rounds 5 --steps 10
    python scripts/bench_kd_step.py --diagnostics-overhead   # KD step with diagnostics on every step vs off
    python scripts/bench_kd_step.py --diagnostics-overhead --threads 1 --cpu-time   # the same, robust to load
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time

import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    DataCollatorForLanguageModeling,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from trl import SFTConfig, SFTTrainer

from hf_distill import KDConfig, KDTrainer


class StepTimer(TrainerCallback):
    """Wall-clock seconds per step, or the process's CPU seconds (``cpu=True``: with one thread, other jobs on a
    shared machine slow the wall clock but hardly the CPU time a step needs)."""

    def __init__(self, cpu: bool = False) -> None:
        self.times: list[float] = []
        self._clock = time.process_time if cpu else time.perf_counter
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = self._clock()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(self._clock() - self._start)


def llama(hidden: int, layers: int, vocab: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
        num_attention_heads=max(hidden // 64, 1), max_position_embeddings=1024, pad_token_id=0, bos_token_id=1,
        eos_token_id=2,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def matmul_params(model: LlamaForCausalLM) -> int:
    return sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()


def tokenizer(vocab: int) -> PreTrainedTokenizerFast:
    table = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, vocab)}}
    backend = Tokenizer(models.WordLevel(vocab=table, unk_token="w3"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--student", type=int, nargs=2, default=[256, 4], metavar=("HIDDEN", "LAYERS"))
    parser.add_argument("--teacher", type=int, nargs=2, default=[512, 6], metavar=("HIDDEN", "LAYERS"))
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--diagnostics-overhead", action="store_true", help="KD steps with diagnostics on every step vs off"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--cpu-time", action="store_true", help="time steps in process CPU seconds (use with --threads 1)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rng = random.Random(0)
    texts = [" ".join(f"w{rng.randint(3, args.vocab - 1)}" for _ in range(args.seq_len)) for _ in range(256)]
    data = Dataset.from_dict({"text": texts})
    tok = tokenizer(args.vocab)
    teacher = llama(*args.teacher, args.vocab, seed=1)
    p_student = matmul_params(llama(*args.student, args.vocab, seed=0))
    p_teacher = matmul_params(teacher)
    common = dict(
        max_steps=args.steps, per_device_train_batch_size=args.batch, report_to=[], use_cpu=True, bf16=False,
        activation_checkpointing=False, save_strategy="no", logging_steps=1000, disable_tqdm=True,
        max_length=args.seq_len + 2,
    )  # fmt: skip

    # The plain Trainer gets the same token rows SFTTrainer builds: the text plus EOS.
    tokenized = data.map(
        lambda batch: {"input_ids": [ids + [tok.eos_token_id] for ids in tok(batch["text"])["input_ids"]]},
        batched=True,
        remove_columns=["text"],
    )
    plain_common = {k: v for k, v in common.items() if k not in ("activation_checkpointing", "max_length")}
    if args.diagnostics_overhead:
        diagnostics_overhead(args, data, tok, teacher, common)
        return

    timings: dict[str, list[float]] = {"plain": [], "sft": [], "kd": []}
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.rounds):
            for kind in ("plain", "sft", "kd"):
                timer = StepTimer()
                student = llama(*args.student, args.vocab, seed=0)
                if kind == "plain":
                    trainer = Trainer(
                        model=student,
                        args=TrainingArguments(output_dir=out, **plain_common),
                        train_dataset=tokenized,
                        data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
                        callbacks=[timer],
                    )
                elif kind == "sft":
                    trainer = SFTTrainer(model=student, args=SFTConfig(output_dir=out, **common), train_dataset=data,
                                         processing_class=tok, callbacks=[timer])  # fmt: skip
                else:
                    trainer = KDTrainer(model=student, teacher_model=teacher, args=KDConfig(output_dir=out, **common),
                                        train_dataset=data, processing_class=tok, callbacks=[timer])  # fmt: skip
                trainer.train()
                timings[kind].extend(timer.times[1:])

    plain, sft, kd = (statistics.median(timings[kind]) for kind in ("plain", "sft", "kd"))
    bound = 1 + 2 * p_teacher / (6 * p_student)
    print(f"student {p_student / 1e6:.2f}M matmul params, teacher {p_teacher / 1e6:.2f}M, vocab {args.vocab}, "
          f"batch {args.batch} x {args.seq_len} tokens, {torch.get_num_threads()} threads")  # fmt: skip
    print(f"Trainer step {plain * 1000:.0f} ms | SFTTrainer step {sft * 1000:.0f} ms | KD step {kd * 1000:.0f} ms")
    print(f"FLOP bound {bound:.3f} | KD/Trainer {kd / plain:.3f} ({kd / plain / bound:.3f} of the bound) | "
          f"KD/SFTTrainer {kd / sft:.3f} ({kd / sft / bound:.3f} of the bound)")  # fmt: skip


def diagnostics_overhead(args, data, tok, teacher, common) -> None:
    """KD steps with `diagnostics_positions` 0 and 256, both logging every step, alternating in rounds."""
    timings: dict[int, list[float]] = {0: [], 256: []}
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.rounds):
            for positions in timings:
                timer = StepTimer(cpu=args.cpu_time)
                config = KDConfig(output_dir=out, **{**common, "logging_steps": 1}, diagnostics_positions=positions)
                trainer = KDTrainer(model=llama(*args.student, args.vocab, seed=0), teacher_model=teacher, args=config,
                                    train_dataset=data, processing_class=tok, callbacks=[timer])  # fmt: skip
                trainer.train()
                timings[positions].extend(timer.times[1:])
    off, on = (statistics.median(timings[positions]) for positions in timings)
    print(f"vocab {args.vocab}, batch {args.batch} x {args.seq_len} tokens, {torch.get_num_threads()} threads")
    clock = "CPU time" if args.cpu_time else "wall clock"
    print(f"KD step ({clock}, median of {len(timings[0])}), diagnostics off {off * 1000:.0f} ms | on (256 positions, "
          f"every step) {on * 1000:.0f} ms | overhead {100 * (on / off - 1):+.1f}%")  # fmt: skip
    for positions, times in timings.items():
        print(f"  {positions} positions, each step (ms): {' '.join(f'{1000 * t:.0f}' for t in times)}")


if __name__ == "__main__":
    main()
