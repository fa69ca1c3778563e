"""Extra peak memory and time of the distillation loss with an ensemble of K fused teachers.

Each teacher arrives as hidden states plus its `lm_head` weight (what the trainer passes when the fused head is
on); the mixture is formed a chunk of rows at a time. The claim to check: the loss's extra memory does not grow
with K (no tokens x vocab tensor per teacher), only the inputs grow, by each teacher's hidden states (and weight).

Each K runs in a fresh subprocess; "extra peak" is the process's peak resident memory during forward + backward
minus the resident memory right after the inputs were allocated (the method of bench_kd_loss.py).

    python scripts/bench_ensemble_memory.py                       # N = 2048, V = 128256, H = 1024, K = 1, 2, 4
    python scripts/bench_ensemble_memory.py --tokens 256 --vocab 32000 --teachers 1 2   # a quick run
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def run_one(teachers: int, tokens: int, vocab: int, hidden: int) -> dict:
    import torch

    from hf_distill import KDLossSpec, LogitSource, TeacherMixture, token_kd_loss

    torch.manual_seed(0)
    h = torch.randn(tokens, hidden).mul_(0.5).requires_grad_(True)
    w = torch.randn(vocab, hidden).mul_(0.05).requires_grad_(True)
    members = [LogitSource(torch.randn(tokens, hidden), torch.randn(vocab, hidden).mul_(0.05)) for _ in range(teachers)]
    teacher = members[0] if teachers == 1 else TeacherMixture(members, tuple(1.0 for _ in members))
    targets = torch.randint(0, vocab, (tokens,))
    spec = KDLossSpec(temperature=2.0, alpha=0.5)
    baseline = max(_current_rss_bytes(), _peak_rss_bytes())
    start = time.perf_counter()
    terms = token_kd_loss(LogitSource(h, w), teacher, targets, spec)
    terms.loss.backward()
    seconds = time.perf_counter() - start
    return {"extra_peak": _peak_rss_bytes() - baseline, "seconds": seconds, "loss": terms.loss.item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--teachers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(run_one(args.child, args.tokens, args.vocab, args.hidden)))
        return
    per_teacher_logits = args.tokens * args.vocab * 4
    print(f"N = {args.tokens}, V = {args.vocab}, H = {args.hidden}, float32, forward + backward")
    print(f"one float32 (N x V) tensor: {per_teacher_logits / 2**20:.0f} MiB")
    print(f"{'teachers':>8} {'extra peak MiB':>15} {'vs K=1':>7} {'time s':>7} {'loss':>10}")
    first = None
    for k in args.teachers:
        command = [sys.executable, __file__, "--child", str(k), "--tokens", str(args.tokens)]
        command += ["--vocab", str(args.vocab), "--hidden", str(args.hidden)]
        result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        first = first or result["extra_peak"]
        print(
            f"{k:>8} {result['extra_peak'] / 2**20:>15.0f} {result['extra_peak'] / first:>7.2f} "
            f"{result['seconds']:>7.2f} {result['loss']:>10.4f}"
        )


if __name__ == "__main__":
    main()
