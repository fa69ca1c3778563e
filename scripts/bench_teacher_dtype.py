"""On the CPU main job's models: the cost of the teacher forward in float32 and bfloat16 against a student CE step.

A KD step is a CE step plus one teacher forward (plus the loss); this prints the median seconds of each piece,
measured in alternating rounds in one process so that background load hits them alike, and the implied KD/CE step
ratios. SmolLM2-135M-Instruct teacher (30 layers), its 10-layer subset as student, 4 x 128-token batches of random
token ids (the speed does not depend on the text).

    PYTHONPATH=. .venv/bin/python scripts/bench_teacher_dtype.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch


def timed(fn) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from hf_distill.recipe.layer_subset import layer_subset_student, spaced_layer_indices
    from hf_distill.recipe.model_sources import load_causal_lm, resolve_model_source

    teacher = load_causal_lm(resolve_model_source("pypi:smollm2-135m-instruct"), "teacher", dtype=torch.float32)
    student = layer_subset_student(teacher, spaced_layer_indices(30, 10)).train()
    teacher_bf16 = copy.deepcopy(teacher).to(torch.bfloat16).eval()
    teacher.eval()
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5)
    ids = torch.randint(0, teacher.config.vocab_size, (args.batch, args.seq_len))

    def ce_step() -> None:
        student(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def forward(model) -> None:
        model(input_ids=ids).logits.float()

    pieces = {"student CE step": ce_step, "teacher fwd fp32": lambda: forward(teacher)}
    pieces["teacher fwd bf16"] = lambda: forward(teacher_bf16)
    for fn in pieces.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in pieces}
    for _ in range(args.rounds):
        for name, fn in pieces.items():
            times[name].append(timed(fn))
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"load average {os.getloadavg()[0]:.1f}, {args.threads} threads, {args.rounds} rounds")
    for name, value in medians.items():
        print(f"{name:18s} {value:7.3f} s")
    ce = medians["student CE step"]
    for dtype in ("fp32", "bf16"):
        print(f"(CE step + teacher fwd {dtype}) / CE step = {(ce + medians[f'teacher fwd {dtype}']) / ce:.2f}")


if __name__ == "__main__":
    main()
