"""One SGD step of KDTrainer on tiny models; writes the parameter update to a file (rank 0).

Run under `accelerate launch --num_processes N --cpu` to compare N processes with one process on the same
global batch.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import kd_args, make_text_dataset, make_tiny_llama, make_word_tokenizer  # noqa: E402

from hf_distill import KDTrainer  # noqa: E402


def main(output_file: str, per_device_batch: int) -> None:
    student, teacher = make_tiny_llama(seed=0), make_tiny_llama(seed=1)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    args = kd_args(
        Path(output_file).parent / "run",
        max_steps=1,
        per_device_train_batch_size=per_device_batch,
        optim="sgd",
        learning_rate=1.0,
        max_grad_norm=0.0,
    )
    dataset = make_text_dataset(num_rows=8, min_len=2, max_len=14, seed=5)
    trainer = KDTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=dataset, processing_class=make_word_tokenizer()
    )
    trainer.train()
    if trainer.accelerator.is_main_process:
        delta = {k: v - before[k] for k, v in trainer.accelerator.unwrap_model(trainer.model).state_dict().items()}
        loss = [e["loss"] for e in trainer.state.log_history if "loss" in e][0]
        torch.save({"delta": delta, "loss": loss, "world": trainer.accelerator.num_processes}, output_file)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
