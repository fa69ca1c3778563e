"""Train tiny students with every trainer kind and record what a sharded run must reproduce.

Run once as a plain process and once under `accelerate launch --config_file tests/scripts/fsdp_cpu.yaml`
(two gloo processes, FSDP2); tests/test_fsdp_sharded.py compares the two. Usage: sharded_run.py OUTPUT_DIR.
Both runs see the same global batch: PER_PROCESS_ROWS rows per optimizer step split over the processes.

Per case, under OUTPUT_DIR/<case>/: `final/` (trainer.save_model: a plain transformers checkpoint), `logs.json`
(rank 0's log history) and `shards<rank>.json` (each parameter's local and global shape on that rank). The `kd`
case also saves a checkpoint after step 1 and resumes from it in a fresh trainer (`resumed/`).
"""

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS / "scripts"))
from conftest import kd_args, make_text_dataset, make_tiny_llama, make_word_tokenizer  # noqa: E402
from cpu_sharding import allow_deepspeed_on_cpu, allow_fsdp_on_cpu  # noqa: E402
from process_group import end_process_group  # noqa: E402
from test_generation_tokenizer import char_tokenizer  # noqa: E402
from test_offline_precompute import token_rows  # noqa: E402

from hf_distill import KDTrainer  # noqa: E402
from hf_distill.teachers.precompute import PrecomputeConfig, precompute_teacher_signal  # noqa: E402
from hf_distill.trainers.feature_config import FeatureKDConfig  # noqa: E402
from hf_distill.trainers.feature_trainer import FeatureKDTrainer  # noqa: E402
from hf_distill.trainers.seqkd_config import SeqKDConfig  # noqa: E402
from hf_distill.trainers.seqkd_trainer import SeqKDTrainer  # noqa: E402

GLOBAL_BATCH = 8


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    """This process's rank, known from the launcher before any process group is formed."""
    return int(os.environ.get("RANK", 0))


def shard_shapes(module: torch.nn.Module) -> dict:
    """name -> [local shape, global shape, how it is sharded] for every parameter of a (possibly sharded) module:
    "dtensor" (FSDP2: the local piece of a DTensor), "zero3" (DeepSpeed: this process's flat partition) or None."""
    from torch.distributed.tensor import DTensor

    out = {}
    for name, param in module.named_parameters():
        if isinstance(param, DTensor):
            out[name] = [list(param.to_local().shape), list(param.shape), "dtensor"]
        elif hasattr(param, "ds_tensor"):
            out[name] = [list(param.ds_tensor.shape), list(param.ds_shape), "zero3"]
        else:
            out[name] = [list(param.shape), list(param.shape), None]
    return out


def kd_args_here(output: Path, **values):
    """kd_args for this launch: DeepSpeed runs need `use_cpu` off (accelerate starts DeepSpeed only then)."""
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    return kd_args(output, use_cpu=not deepspeed, **values)


def record(trainer, folder: Path, save_final: bool = True) -> None:
    shapes = {"student": shard_shapes(trainer.model), "fused_head": trainer.use_fused_head}
    if trainer.teacher_model is not None:
        shapes["teacher"] = shard_shapes(trainer.teacher_model)
    (folder / f"shards{rank()}.json").write_text(json.dumps(shapes))
    if save_final:
        trainer.save_model(str(folder / "final"))  # collective: every process takes part
    if trainer.accelerator.is_main_process:
        (folder / "logs.json").write_text(json.dumps(trainer.state.log_history))


def common_args(folder: Path, config_class=None, **overrides):
    values = dict(max_steps=1, per_device_train_batch_size=GLOBAL_BATCH // world_size(), optim="sgd", learning_rate=1.0)
    values.update(overrides)
    return kd_args_here(folder / "run", config_class=config_class, **values)


def run_kd(folder: Path) -> None:
    """Live teacher, 2 steps of AdamW with 2 accumulated micro-batches; checkpoint at step 1, then resume.

    Each step is one epoch over the same GLOBAL_BATCH rows, so the step's rows do not depend on how the sampler
    orders and splits them over processes (one process and two draw different permutations).
    """
    batch = GLOBAL_BATCH // world_size() // 2
    settings = dict(
        max_steps=2, per_device_train_batch_size=batch, gradient_accumulation_steps=2, optim="adamw_torch",
        learning_rate=1e-2, max_grad_norm=1.0, save_strategy="steps", save_steps=1,
    )  # fmt: skip
    dataset = make_text_dataset(num_rows=GLOBAL_BATCH, min_len=2, max_len=14, seed=5)

    def trainer(output: Path) -> KDTrainer:
        return KDTrainer(
            model=make_tiny_llama(seed=0),
            teacher_model=make_tiny_llama(seed=1),
            args=kd_args_here(output, **settings),
            train_dataset=dataset,
            processing_class=make_word_tokenizer(),
        )

    full = trainer(folder / "run")
    full.train()
    record(full, folder)
    resumed = trainer(folder / "resume_run")
    resumed.train(resume_from_checkpoint=str(folder / "run" / "checkpoint-1"))
    resumed.save_model(str(folder / "resumed"))


def run_seqkd(folder: Path) -> None:
    """SeqKD on prompt/completion rows with a shared-vocabulary teacher (token-level KD term on)."""
    from datasets import Dataset

    rng = torch.Generator().manual_seed(3)
    letters = "abcdefghijklmnopqrstuvwxyz"
    rows = []
    for _ in range(GLOBAL_BATCH):
        picks = torch.randint(0, len(letters), (9,), generator=rng).tolist()
        rows.append(
            {"prompt": "".join(letters[i] for i in picks[:4]), "completion": "".join(letters[i] for i in picks[4:])}
        )
    tok = char_tokenizer()
    trainer = SeqKDTrainer(
        make_tiny_llama(seed=0),
        common_args(folder, config_class=SeqKDConfig),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        teacher_model=make_tiny_llama(seed=1),
        teacher_processing_class=tok,
    )
    trainer.train()
    record(trainer, folder)


def run_feature(folder: Path) -> None:
    """Feature KD between different widths: learned projections (outside the sharded student) take part."""
    args = common_args(
        folder, config_class=FeatureKDConfig, attention_loss_weight=1.0, max_grad_norm=0.1,
        feature_export_projections=True,
    )  # fmt: skip
    trainer = FeatureKDTrainer(
        model=make_tiny_llama(seed=0, num_layers=3, hidden_size=32, num_heads=4),
        teacher_model=make_tiny_llama(seed=1, num_layers=4, hidden_size=48, num_heads=8, num_kv_heads=4),
        args=args,
        train_dataset=make_text_dataset(num_rows=GLOBAL_BATCH, min_len=2, max_len=14, seed=5),
        processing_class=make_word_tokenizer(),
    )
    trainer.train()
    record(trainer, folder)


def run_feature_refused(folder: Path) -> None:
    """Under ZeRO-3 the projections cannot join DeepSpeed's optimizer: construction must say so."""
    try:
        run_feature(folder)
    except ValueError as err:
        (folder / "refused.txt").write_text(str(err))
    else:
        raise AssertionError("FeatureKDTrainer with projections was not refused under ZeRO-3")


def run_offline(folder: Path) -> None:
    """No teacher model: top-k columns precomputed from the teacher (each process writes its own copy)."""
    signal = precompute_teacher_signal(
        make_tiny_llama(seed=1), make_word_tokenizer(), token_rows(GLOBAL_BATCH, seed=2),
        folder / f"signal{rank()}", PrecomputeConfig(mode="topk", k=8, temperature=2.0), progress=False,
    )  # fmt: skip
    trainer = KDTrainer(
        model=make_tiny_llama(seed=0),
        args=common_args(folder),
        train_dataset=signal,
        processing_class=make_word_tokenizer(),
    )
    trainer.train()
    record(trainer, folder)


def run_nf4(folder: Path) -> None:
    """An NF4 teacher loaded by path: under FSDP every process holds it whole, next to the sharded student."""
    directory = folder / "teacher"
    if rank() == 0:  # NF4 blocks need >= 64 inputs
        make_tiny_llama(seed=1, hidden_size=64, num_heads=4).save_pretrained(directory)
        make_word_tokenizer().save_pretrained(directory)
    if dist.is_initialized():
        dist.barrier()
    trainer = KDTrainer(
        model=make_tiny_llama(seed=0),
        teacher_model=str(directory),
        args=common_args(folder, teacher_load_in_4bit=True, teacher_dtype="float32"),
        train_dataset=make_text_dataset(num_rows=GLOBAL_BATCH, min_len=2, max_len=14, seed=5),
        processing_class=make_word_tokenizer(),
    )
    assert any(type(m).__name__ == "Linear4bit" for m in trainer.teacher_model.modules())
    trainer.train()
    record(trainer, folder)


CASES = {
    "kd": run_kd,
    "seqkd": run_seqkd,
    "feature": run_feature,
    "offline": run_offline,
    "nf4": run_nf4,
    "feature_refused": run_feature_refused,
}

DEFAULT_CASES = ["kd", "seqkd", "feature", "offline", "nf4"]


def main(output_dir: str, *cases: str) -> None:
    allow_fsdp_on_cpu()
    allow_deepspeed_on_cpu()
    for case in cases or DEFAULT_CASES:
        folder = Path(output_dir) / case
        folder.mkdir(parents=True, exist_ok=True)
        CASES[case](folder)


if __name__ == "__main__":
    main(*sys.argv[1:])
    end_process_group()
