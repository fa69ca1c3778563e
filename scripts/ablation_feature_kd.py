"""Ablation of feature distillation on tiny models, CPU: CE only vs logits vs + hidden states vs + attention.

A small teacher Llama is first trained on Python standard-library source code (word-level tokens, an offline
corpus every install has). Students half its width and depth are then distilled from it for the same number
of steps, from the same initialisation and data order, in four variants:

* ``ce_only``: no teacher (alpha = 0), the reference;
* ``logits``: token-level KD (``KDTrainer``);
* ``+hidden``: ``FeatureKDTrainer`` with the hidden-state term (learned projections, uniform layer map);
* ``+hidden+attention``: plus attention-map KL (teacher heads grouped onto student heads).

Reported on held-out chunks: student cross-entropy (nats/token), KL(teacher || student) per token, top-1
agreement with the teacher, and seconds per training step. Mean +- std over seeds. Every finished run is
stored as JSON under ``--out-dir`` and skipped when the script is run again, so nothing is lost on interruption.

    python scripts/ablation_feature_kd.py                       # ~15 min on 2 shared CPU cores
    python scripts/ablation_feature_kd.py --student-steps 60 --seeds 0   # a quick look
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import re
import statistics
import sysconfig
import time

import torch
from tqdm import tqdm

STDLIB_FILES = (
    "textwrap.py", "string.py", "shlex.py", "csv.py", "fnmatch.py", "glob.py", "heapq.py", "bisect.py",
    "queue.py", "sched.py", "calendar.py", "difflib.py", "argparse.py", "dataclasses.py", "functools.py",
    "configparser.py", "pprint.py", "statistics.py", "fractions.py", "ipaddress.py",
)  # fmt: skip
TOKEN_RE = re.compile(r"\w+|[^\w\s]")
VARIANTS = ("ce_only", "logits", "+hidden", "+hidden+attention")


def load_corpus(seq_len: int, vocab_size: int) -> tuple[list[str], list[str], list[str]]:
    """Word-level chunks of stdlib source: (train texts, held-out texts, vocabulary)."""
    stdlib = sysconfig.get_paths()["stdlib"]
    words: list[str] = []
    for name in STDLIB_FILES:
        path = os.path.join(stdlib, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                words.extend(TOKEN_RE.findall(handle.read()))
    counts = collections.Counter(words)
    vocab = [w for w, _ in counts.most_common(vocab_size - 4)]
    known = set(vocab)
    words = [w if w in known else "<unk>" for w in words]
    chunks = [" ".join(words[i : i + seq_len]) for i in range(0, len(words) - seq_len, seq_len)]
    held_out = chunks[::10]
    train = [c for i, c in enumerate(chunks) if i % 10]
    return train, held_out, vocab


def make_tokenizer(vocab: list[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    table = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    table.update({w: i + 4 for i, w in enumerate(vocab)})
    backend = Tokenizer(models.WordLevel(vocab=table, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def make_llama(vocab_size: int, hidden: int, layers: int, heads: int, kv_heads: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def common_args(output_dir: str, steps: int, lr: float, seed: int) -> dict:
    return dict(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=8,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps // 20),
        logging_steps=max(1, steps // 5),
        report_to=[],
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        save_strategy="no",
        dataloader_num_workers=0,
        seed=seed,
        data_seed=0,
        disable_tqdm=True,
        max_length=128,
    )


def train_teacher(out_dir: str, train_texts: list[str], tokenizer, steps: int):
    """Train (or reload) the teacher; cached in ``out_dir/teacher``."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    path = os.path.join(out_dir, "teacher")
    if os.path.isfile(os.path.join(path, "config.json")):
        return AutoModelForCausalLM.from_pretrained(path)
    teacher = make_llama(len(tokenizer), hidden=128, layers=4, heads=8, kv_heads=4, seed=1234)
    trainer = SFTTrainer(
        model=teacher,
        args=SFTConfig(**common_args(os.path.join(out_dir, "teacher_run"), steps, 3e-3, seed=1234)),
        train_dataset=Dataset.from_dict({"text": train_texts}),
        processing_class=tokenizer,
    )
    print(f"Training the teacher ({steps} steps)...")
    trainer.train()
    trainer.save_model(path)
    return AutoModelForCausalLM.from_pretrained(path)


def distill(variant: str, seed: int, teacher, train_texts: list[str], tokenizer, steps: int, args_in) -> tuple:
    """Train one student variant; returns (student, seconds per step)."""
    from datasets import Dataset

    from hf_distill.trainers.feature_config import FeatureKDConfig
    from hf_distill.trainers.feature_trainer import FeatureKDTrainer
    from hf_distill.trainers.kd_config import KDConfig
    from hf_distill.trainers.kd_trainer import KDTrainer

    student = make_llama(len(tokenizer), hidden=64, layers=2, heads=4, kv_heads=2, seed=seed)
    base = common_args(os.path.join(args_in.out_dir, "runs", f"{variant}-{seed}"), steps, 3e-3, seed)
    base.update(temperature=args_in.temperature, alpha=0.0 if variant == "ce_only" else args_in.alpha)
    dataset = Dataset.from_dict({"text": train_texts})
    if variant in ("ce_only", "logits"):
        trainer = KDTrainer(
            model=student, teacher_model=teacher, args=KDConfig(**base), train_dataset=dataset,
            processing_class=tokenizer,
        )  # fmt: skip
    else:
        config = FeatureKDConfig(
            **base,
            hidden_loss_weight=args_in.hidden_weight,
            hidden_loss_type=args_in.hidden_loss_type,
            attention_loss_weight=args_in.attention_weight if variant == "+hidden+attention" else 0.0,
        )
        trainer = FeatureKDTrainer(
            model=student, teacher_model=teacher, args=config, train_dataset=dataset, processing_class=tokenizer
        )
    start = time.perf_counter()
    trainer.train()
    seconds_per_step = (time.perf_counter() - start) / steps
    if hasattr(teacher, "set_attn_implementation"):
        teacher.set_attn_implementation("sdpa")  # a feature run may have switched the shared teacher to eager
    return trainer.model, seconds_per_step


@torch.no_grad()
def evaluate(student, teacher, held_out: list[str], tokenizer, batch_size: int = 32) -> dict:
    """Held-out CE of the student, KL(teacher || student) and top-1 agreement, per predicted token."""
    student.eval()
    teacher.eval()
    ce_sum = kl_sum = agree = tokens = 0.0
    for start in range(0, len(held_out), batch_size):
        ids = tokenizer(held_out[start : start + batch_size], return_tensors="pt", padding=True)["input_ids"]
        s_logits = student(input_ids=ids).logits[:, :-1].float()
        t_logits = teacher(input_ids=ids).logits[:, :-1].float()
        targets = ids[:, 1:]
        log_q = torch.log_softmax(s_logits, -1)
        log_p = torch.log_softmax(t_logits, -1)
        ce_sum += -log_q.gather(-1, targets.unsqueeze(-1)).sum().item()
        kl_sum += (log_p.exp() * (log_p - log_q)).sum().item()
        agree += (s_logits.argmax(-1) == t_logits.argmax(-1)).sum().item()
        tokens += targets.numel()
    return {"ce": ce_sum / tokens, "kl": kl_sum / tokens, "agree": agree / tokens}


def teacher_ce(teacher, held_out: list[str], tokenizer) -> float:
    return evaluate(teacher, teacher, held_out, tokenizer)["ce"]


def format_table(results: dict, seeds: list[int], teacher_loss: float) -> str:
    def cell(values: list[float], digits: int) -> str:
        if len(values) == 1:
            return f"{values[0]:.{digits}f}"
        return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"

    lines = [
        f"Teacher held-out CE: {teacher_loss:.3f} nats",
        "| variant | held-out CE (nats) | KL(teacher‖student) | top-1 agree | s/step |",
        "|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        runs = [results[(variant, seed)] for seed in seeds if (variant, seed) in results]
        if not runs:
            continue
        lines.append(
            f"| {variant} | {cell([r['ce'] for r in runs], 3)} | {cell([r['kl'] for r in runs], 3)} | "
            f"{cell([r['agree'] for r in runs], 3)} | {cell([r['seconds_per_step'] for r in runs], 3)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default="runs/ablation_feature_kd")
    parser.add_argument("--teacher-steps", type=int, default=600)
    parser.add_argument("--student-steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--vocab-size", type=int, default=1000)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--hidden-weight", type=float, default=1.0)
    parser.add_argument("--hidden-loss-type", default="normalized_mse")
    parser.add_argument("--attention-weight", type=float, default=1.0)
    args = parser.parse_args()

    torch.set_num_threads(1)  # tiny models gain nothing from more; spinning threads hurt on a busy machine
    os.makedirs(os.path.join(args.out_dir, "results"), exist_ok=True)
    train_texts, held_out, vocab = load_corpus(args.seq_len, args.vocab_size)
    tokenizer = make_tokenizer(vocab)
    print(f"Corpus: {len(train_texts)} train / {len(held_out)} held-out chunks of {args.seq_len} words.")
    teacher = train_teacher(args.out_dir, train_texts, tokenizer, args.teacher_steps)
    for param in teacher.parameters():
        param.requires_grad_(False)
    teacher_loss = teacher_ce(teacher, held_out, tokenizer)

    results: dict = {}
    jobs = [(variant, seed) for seed in args.seeds for variant in VARIANTS]
    for variant, seed in tqdm(jobs, desc="student runs"):
        path = os.path.join(args.out_dir, "results", f"{variant}-{seed}-{args.student_steps}.json")
        if os.path.isfile(path):
            with open(path) as handle:
                results[(variant, seed)] = json.load(handle)
            continue
        student, seconds = distill(variant, seed, teacher, train_texts, tokenizer, args.student_steps, args)
        metrics = evaluate(student, teacher, held_out, tokenizer)
        metrics["seconds_per_step"] = seconds
        results[(variant, seed)] = metrics
        with open(path, "w") as handle:
            json.dump(metrics, handle)
        tqdm.write(f"{variant:>18} seed {seed}: CE {metrics['ce']:.3f}  KL {metrics['kl']:.3f}  ({seconds:.3f} s/step)")

    print()
    print(
        f"Feature-KD ablation: teacher 4x128 (8 heads, 4 KV), student 2x64 (4 heads, 2 KV), "
        f"{args.student_steps} steps x 8 seqs x {args.seq_len} words, T={args.temperature}, alpha={args.alpha}, "
        f"hidden={args.hidden_loss_type} w={args.hidden_weight}, attention w={args.attention_weight}, "
        f"seeds {args.seeds}"
    )
    print(format_table(results, args.seeds, teacher_loss))
    print(f"(uniform-vocabulary CE would be {math.log(len(tokenizer)):.3f} nats)")


if __name__ == "__main__":
    main()
