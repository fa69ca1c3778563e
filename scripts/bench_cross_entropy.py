"""Extra peak memory and time of `cross_entropy_sum` against autograd over chunks of logits.

The reference is what a chunked CE written with autograd does (and what the cross-tokenizer and SeqKD trainers
did before): `sum(cross_entropy(logits.index_select(0, chunk).float(), ...))` over chunks of rows, then
backward. Both take the same float32 (tokens x vocab) logits (the unfused case: a model's own output).
Each variant runs in a fresh process with a fixed glibc mmap threshold, so RSS follows live tensor memory.

    python scripts/bench_cross_entropy.py                       # N = 2048, V = 128256
    python scripts/bench_cross_entropy.py --tokens 512 --vocab 32000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _rss(peak: bool) -> int:
    if peak:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def run_one(kind: str, tokens: int, vocab: int, chunk: int) -> dict:
    import torch

    from hf_distill.losses import LogitSource, cross_entropy_sum

    torch.manual_seed(0)
    logits = torch.randn(tokens, vocab).requires_grad_(True)
    targets = torch.randint(0, vocab, (tokens,))

    def autograd_chunks() -> float:
        total = logits.new_zeros(())
        for rows in torch.arange(tokens).split(chunk):
            picked = logits.index_select(0, rows).float()
            total = total + torch.nn.functional.cross_entropy(picked, targets[rows], reduction="sum")
        total.backward()
        return total.item()

    def ours() -> float:
        total = cross_entropy_sum(LogitSource(logits), targets)
        total.backward()
        return total.item()

    fn = autograd_chunks if kind == "autograd" else ours
    baseline = max(_rss(False), _rss(True))
    start = time.perf_counter()
    value = fn()
    elapsed = time.perf_counter() - start
    return {"extra_peak": _rss(True) - baseline, "seconds": elapsed, "loss": value}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--chunk", type=int, default=130, help="rows per autograd chunk (64 MB at V = 128k)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.tokens, args.vocab, args.chunk)))
        return
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    results = {}
    for kind in ("autograd", "ours"):
        cmd = [sys.executable, __file__, "--child", kind, "--tokens", str(args.tokens), "--vocab", str(args.vocab)]
        cmd += ["--chunk", str(args.chunk)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
        results[kind] = json.loads(out.strip().splitlines()[-1])
    gib = float(1 << 30)
    auto, ours = results["autograd"], results["ours"]
    print(f"N={args.tokens} V={args.vocab} float32 logits given, forward + backward; autograd chunks of {args.chunk}")
    print(f"{'variant':>16} {'extra GiB':>10} {'seconds':>8}")
    for name, row in (("autograd chunks", auto), ("cross_entropy_sum", ours)):
        print(f"{name:>16} {row['extra_peak'] / gib:>10.3f} {row['seconds']:>8.2f}")
    rel = abs(auto["loss"] - ours["loss"]) / abs(auto["loss"])
    print(
        f"memory ratio {ours['extra_peak'] / auto['extra_peak']:.3f} | time ratio "
        f"{ours['seconds'] / auto['seconds']:.3f} | rel loss diff {rel:.1e}"
    )


if __name__ == "__main__":
    main()
