"""Time `sampled_diagnostic_sums` alone on the bench_kd_step.py shapes (see BENCHMARKS.md)."""

import time

import torch

from hf_distill.diagnostics import sampled_diagnostic_sums
from hf_distill.losses.token_kd import LogitSource

torch.manual_seed(0)
tokens, hidden, vocab = 8 * 257, 256, 8192
s = LogitSource(torch.randn(tokens, hidden, requires_grad=True), torch.randn(vocab, hidden))
t = LogitSource(torch.randn(tokens, 512), torch.randn(vocab, 512))
targets = torch.randint(0, vocab, (tokens,))
g = torch.Generator().manual_seed(0)
for _ in range(3):
    sampled_diagnostic_sums(s, t, targets, 256, g)
times = []
for _ in range(20):
    start = time.perf_counter()
    sampled_diagnostic_sums(s, t, targets, 256, g)
    times.append(time.perf_counter() - start)
times.sort()
print(
    f"sampled_diagnostic_sums 256 positions, vocab {vocab}: median {times[10] * 1000:.1f} ms, "
    f"min {times[0] * 1000:.1f} ms, {torch.get_num_threads()} threads"
)
