"""One SGD step of KDTrainer (or FeatureKDTrainer) on tiny models; writes the parameter update to a file (rank 0).

Run under `accelerate launch --multi_gpu --num_processes N` with `use_cpu` to compare N processes with one
process on the same global batch. Usage: kd_one_step.py OUTPUT_FILE PER_DEVICE_BATCH [kd|feature|nf4|ema]
(nf4: the teacher is loaded by path in NF4 through bitsandbytes, as a cluster run would; ema: the student's own
EMA is the teacher, over three steps, and the EMA is written out too).
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import kd_args, make_text_dataset, make_tiny_llama, make_word_tokenizer  # noqa: E402
from process_group import end_process_group  # noqa: E402

from hf_distill import KDTrainer  # noqa: E402
from hf_distill.trainers.feature_config import FeatureKDConfig  # noqa: E402
from hf_distill.trainers.feature_trainer import FeatureKDTrainer  # noqa: E402


def main(output_file: str, per_device_batch: int, kind: str = "kd") -> None:
    common = dict(max_steps=1, per_device_train_batch_size=per_device_batch, optim="sgd", learning_rate=1.0)
    if kind == "feature":
        # Different widths, so learned projections (outside the DDP-wrapped student) take part in the step.
        student = make_tiny_llama(seed=0, num_layers=3, hidden_size=32, num_heads=4)
        teacher = make_tiny_llama(seed=1, num_layers=4, hidden_size=48, num_heads=8, num_kv_heads=4)
        args = kd_args(
            Path(output_file).parent / "run", config_class=FeatureKDConfig, attention_loss_weight=1.0,
            max_grad_norm=0.1, **common,
        )  # fmt: skip
        trainer_class = FeatureKDTrainer
    else:
        student, teacher = make_tiny_llama(seed=0), make_tiny_llama(seed=1)
        extra = {}
        if kind == "ema":
            teacher, extra = "ema", {"ema_decay": 0.5}
            common["max_steps"] = 3
        if kind == "nf4":
            # bitsandbytes' CPU NF4 kernels need in_features >= the quantization block size (64).
            teacher = make_tiny_llama(seed=1, hidden_size=64, num_heads=4)
            teacher_dir = Path(output_file).parent / "teacher"
            teacher.save_pretrained(teacher_dir)
            make_word_tokenizer().save_pretrained(teacher_dir)
            teacher, extra = str(teacher_dir), {"teacher_load_in_4bit": True, "teacher_dtype": "float32"}
        args = kd_args(Path(output_file).parent / "run", max_grad_norm=0.0, **common, **extra)
        trainer_class = KDTrainer
    before = {k: v.clone() for k, v in student.state_dict().items()}
    dataset = make_text_dataset(num_rows=8, min_len=2, max_len=14, seed=5)
    trainer = trainer_class(
        model=student, teacher_model=teacher, args=args, train_dataset=dataset, processing_class=make_word_tokenizer()
    )
    if kind == "nf4":
        assert any(type(m).__name__ == "Linear4bit" for m in trainer.teacher_model.modules())
    projections = getattr(trainer, "feature_projections", None)
    before_proj = {} if projections is None else {k: v.clone() for k, v in projections.state_dict().items()}
    trainer.train()
    if kind == "ema":  # every process's EMA, to check they all hold the same one
        shadow = {k: v.cpu() for k, v in trainer.teacher_source.ema.shadow.items()}
        torch.save(shadow, f"{output_file}.ema{trainer.accelerator.process_index}")
    if trainer.accelerator.is_main_process:
        delta = {k: v - before[k] for k, v in trainer.accelerator.unwrap_model(trainer.model).state_dict().items()}
        if projections is not None:
            delta.update({f"projection.{k}": v - before_proj[k] for k, v in projections.state_dict().items()})
        logged = [e for e in trainer.state.log_history if "loss" in e][0]
        result = {"delta": delta, "loss": logged["loss"], "grad_norm": logged.get("grad_norm")}
        torch.save({**result, "world": trainer.accelerator.num_processes}, output_file)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:])
    end_process_group()  # after main returned: the trainer and its DDP wrapper are gone (see process_group.py)
