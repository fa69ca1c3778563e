"""Peak resident memory of a few real KDTrainer / FeatureKDTrainer steps on tiny models, in a fresh process.

Usage: peak_memory_run.py SPEC_JSON. Prints one JSON line: {"baseline": bytes, "peak": bytes}. The baseline
is the resident memory after every import and before any model exists; the peak is the process's high-water
mark after the steps (run with a low glibc mmap threshold so large tensors are returned to the system when
freed and RSS follows live tensor memory). Steps >= 2, so the AdamW states exist during a backward.
"""

import importlib
import importlib.util
import json
import resource
import sys
from pathlib import Path

import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import kd_args, make_word_tokenizer  # noqa: E402

from hf_distill import KDTrainer  # noqa: E402
from hf_distill.teachers.precompute import load_teacher_signal  # noqa: E402
from hf_distill.trainers.feature_config import FeatureKDConfig  # noqa: E402
from hf_distill.trainers.feature_trainer import FeatureKDTrainer  # noqa: E402


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def build(config: dict, seed: int) -> LlamaForCausalLM:
    """A randomly initialised Llama: from a saved config (``config_dir``, with overrides) or from keywords."""
    torch.manual_seed(seed)
    config = dict(config)
    base = config.pop("config_dir", None)
    return LlamaForCausalLM(LlamaConfig.from_pretrained(base, **config) if base else LlamaConfig(**config))


def main(spec: dict) -> None:
    torch.set_num_threads(2)
    tokenizer = make_word_tokenizer(spec["student"]["vocab_size"])
    if spec["mode"] == "offline":
        train = load_teacher_signal(spec["signal_dir"])
    else:
        generator = torch.Generator().manual_seed(0)
        ids = torch.randint(3, spec["student"]["vocab_size"], (spec["rows"], spec["seq_len"]), generator=generator)
        train = Dataset.from_dict({"input_ids": ids.tolist()})
    # The Trainer imports DeepSpeed (about 20 MB of code) when it is installed: a library import, not memory the
    # estimate models, so it is loaded before the baseline.
    if importlib.util.find_spec("deepspeed") is not None:
        importlib.import_module("deepspeed")
    baseline = current_rss()
    student = build(spec["student"], 0)
    common = dict(
        max_steps=spec["steps"],
        per_device_train_batch_size=spec["batch"],
        max_length=spec["seq_len"],
        optim="adamw_torch",
        logging_steps=spec["steps"],
        gradient_checkpointing=spec.get("checkpointing", False),
        temperature=1.0,
    )
    if spec["mode"] == "feature":
        args = kd_args(spec["out"], config_class=FeatureKDConfig, feature_last_k=spec["feature_layers"],
                       feature_layer_map="last_k", **common)  # fmt: skip
        trainer_class = FeatureKDTrainer
    else:
        args = kd_args(spec["out"], **common)
        trainer_class = KDTrainer
    teacher = build(spec["teacher"], 1) if spec["mode"] != "offline" else None
    trainer = trainer_class(
        model=student, args=args, train_dataset=train, processing_class=tokenizer, teacher_model=teacher
    )
    del teacher
    trainer.train()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"baseline": baseline, "peak": peak}))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
