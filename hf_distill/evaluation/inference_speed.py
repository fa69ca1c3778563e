"""What a student buys at inference, measured on the machine the evaluation runs on: prefill and decode tokens per
second, time to first token, the peak memory of generation and the model's size (seed 004's comparison).

Each measurement is one greedy `generate` call with a KV cache on one prompt (batch 1: the latency case) that
produces exactly ``new_tokens`` tokens (EOS does not stop it). A streamer timestamps every token `generate` emits:
the first new token arrives after the prefill (time to first token; prefill speed = prompt tokens / that time),
the others are decode steps. Warm-up calls run first, then the medians over prompts and repeats are reported.
Peak memory = the parameters and buffers + the high-water mark of the tensors generation creates (CUDA:
``max_memory_allocated``; CPU: `LiveTensorPeak`, in a separate, untimed call because watching every operator
slows it down).
"""

from __future__ import annotations

import platform
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import torch
from transformers.generation.streamers import BaseStreamer

from ..estimate.live_tensors import LiveTensorPeak, module_bytes, storage_bytes

MB = 1e6
SPEED_METRICS = ("prefill_tok_per_s", "decode_tok_per_s", "ttft_ms", "peak_memory_mb", "model_size_mb")


@dataclass(frozen=True)
class InferenceSpeed:
    """Medians over the measured calls; sizes in bytes."""

    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    time_to_first_token_s: float
    peak_memory_bytes: int
    model_bytes: int
    prompt_tokens: int
    new_tokens: int

    def report_row(self) -> dict[str, float]:
        """The report's columns (`SPEED_METRICS`)."""
        return dict(
            zip(
                SPEED_METRICS,
                (
                    self.prefill_tokens_per_s,
                    self.decode_tokens_per_s,
                    1000 * self.time_to_first_token_s,
                    self.peak_memory_bytes / MB,
                    self.model_bytes / MB,
                ),
            )
        )


@dataclass(frozen=True)
class GenerationTiming:
    """One greedy generation: when it started, when each emitted token arrived, how many tokens came."""

    start: float
    token_times: list[float]
    new_tokens: int

    @property
    def time_to_first_token(self) -> float:
        return self.token_times[0] - self.start

    @property
    def decode_time(self) -> float:
        return self.token_times[-1] - self.token_times[0]


class _TokenClock(BaseStreamer):
    """`generate` calls `put` once with the prompt, then once per new token (batch 1)."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, int]] = []

    def put(self, value: torch.Tensor) -> None:
        self.calls.append((perf_counter(), int(value.numel())))

    def end(self) -> None:
        pass


def parameter_bytes(model: torch.nn.Module) -> int:
    """The model's size: bytes of its distinct parameter storages (tied weights once; packed 4-bit as stored)."""
    return storage_bytes(model.parameters())


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def time_generation(model: torch.nn.Module, prompt: Sequence[int], new_tokens: int) -> GenerationTiming:
    """One greedy generation of exactly ``new_tokens`` tokens after ``prompt`` (token ids), timed per token."""
    if new_tokens < 1:
        raise ValueError(f"new_tokens must be >= 1, got {new_tokens}")
    if len(prompt) < 1:
        raise ValueError("the prompt must hold at least one token")
    device = _model_device(model)
    input_ids = torch.tensor([list(prompt)], device=device)
    clock = _TokenClock()
    pad = model.generation_config.pad_token_id
    if pad is None:
        pad = model.generation_config.eos_token_id
    if isinstance(pad, (list, tuple)):
        pad = pad[0]
    _synchronize(device)
    start = perf_counter()
    model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        num_beams=1,
        use_cache=True,
        streamer=clock,
        pad_token_id=pad,
        temperature=None,
        top_p=None,
        top_k=None,
    )
    _synchronize(device)
    # The first call carries the prompt; each later one is a new token.
    token_calls = clock.calls[1:]
    return GenerationTiming(start, [t for t, _ in token_calls], sum(n for _, n in token_calls))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def generation_peak_bytes(model: torch.nn.Module, prompt: Sequence[int], new_tokens: int) -> int:
    """Parameters and buffers + the high-water mark of the tensors one generation creates on the model's device."""
    device = _model_device(model)
    weights = module_bytes(model)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        time_generation(model, prompt, new_tokens)
        return weights + torch.cuda.max_memory_allocated(device) - before
    with LiveTensorPeak(device.type) as live:
        time_generation(model, prompt, new_tokens)
    return weights + live.peak


def measure_inference_speed(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    new_tokens: int = 32,
    repeats: int = 1,
    warmup: int = 1,
) -> InferenceSpeed:
    """Medians of prefill and decode speed and time to first token over ``prompts`` x ``repeats`` greedy
    generations (after ``warmup`` untimed ones), the peak memory of one generation, and the model's size."""
    if not prompts:
        raise ValueError("measure_inference_speed needs at least one prompt")
    if new_tokens < 2:
        raise ValueError(f"new_tokens must be >= 2 to time a decode step, got {new_tokens}")
    was_training = model.training
    model.eval()
    try:
        for _ in range(warmup):
            time_generation(model, prompts[0], new_tokens)
        prefill, decode, first = [], [], []
        for _ in range(repeats):
            for prompt in prompts:
                timing = time_generation(model, prompt, new_tokens)
                if timing.new_tokens != new_tokens:
                    raise RuntimeError(f"generate produced {timing.new_tokens} tokens, {new_tokens} were asked for")
                first.append(timing.time_to_first_token)
                prefill.append(len(prompt) / timing.time_to_first_token)
                decode.append((new_tokens - 1) / timing.decode_time)
        peak = generation_peak_bytes(model, prompts[0], new_tokens)
    finally:
        model.train(was_training)
    return InferenceSpeed(
        prefill_tokens_per_s=statistics.median(prefill),
        decode_tokens_per_s=statistics.median(decode),
        time_to_first_token_s=statistics.median(first),
        peak_memory_bytes=peak,
        model_bytes=parameter_bytes(model),
        prompt_tokens=round(statistics.median(len(p) for p in prompts)),
        new_tokens=new_tokens,
    )


def prompt_windows(tokenizer: Any, texts: Sequence[str], count: int, prompt_tokens: int) -> list[list[int]]:
    """The first ``prompt_tokens`` tokens of up to ``count`` texts (those long enough; else the longest ones)."""
    encoded = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    encoded.sort(key=len, reverse=True)
    return [ids[:prompt_tokens] for ids in encoded[:count] if ids]


def inference_speed_rows(
    models: Mapping[str, torch.nn.Module], prompts: Sequence[Sequence[int]], new_tokens: int
) -> dict[str, dict[str, float]]:
    """{model name: the report's speed columns}, each model measured on the same prompts."""
    return {name: measure_inference_speed(model, prompts, new_tokens=new_tokens).report_row() for name, model in
            models.items()}  # fmt: skip


def machine_description() -> str:
    """Where the speed columns were measured: the accelerator, or the CPU and torch's thread count."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA)"
    threads = torch.get_num_threads()
    return f"{platform.processor() or platform.machine()} CPU, {threads} torch thread{'s' if threads != 1 else ''}"
