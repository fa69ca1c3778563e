"""Two SGD steps of a co-trained trainer on tiny models; every process writes every model's update to a file.

Run under `accelerate launch --multi_gpu --num_processes N` with `use_cpu` to compare N processes with one
process on the same global batch. Usage: cotrained_one_step.py OUTPUT_FILE PER_DEVICE_BATCH mutual|online|mtp
(the co-trained models and the MTP heads sit outside DDP, so their trainers average and clip their gradients).
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's hf_distill, not an installed one
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import kd_args, make_text_dataset, make_tiny_llama, make_word_tokenizer  # noqa: E402
from process_group import end_process_group  # noqa: E402

from hf_distill import MTPConfig, MTPTrainer, MutualKDConfig, MutualKDTrainer, OnlineKDConfig, OnlineKDTrainer  # noqa: E402


def main(output_file: str, per_device_batch: int, kind: str) -> None:
    run_dir = Path(output_file).parent / "run"
    # max_grad_norm = 0.1 is small enough to bite, so each model's clipping after the cross-process average counts.
    common = dict(max_steps=2, per_device_train_batch_size=per_device_batch, optim="sgd", learning_rate=0.5)
    common["max_grad_norm"] = 0.1
    student = make_tiny_llama(seed=0)
    dataset = make_text_dataset(num_rows=16, min_len=2, max_len=14, seed=5)
    extra = dict(train_dataset=dataset, processing_class=make_word_tokenizer())
    if kind == "mutual":
        peers = [make_tiny_llama(seed=1), make_tiny_llama(seed=2, num_layers=1)]
        args = kd_args(run_dir, config_class=MutualKDConfig, peer_learning_rates=[0.2, 0.3], **common)
        trainer = MutualKDTrainer(model=student, peers=peers, args=args, **extra)
        others = {peer.name: peer.module for peer in trainer.peers}
    elif kind == "online":
        teacher = make_tiny_llama(seed=1, hidden_size=48)
        args = kd_args(run_dir, config_class=OnlineKDConfig, teacher_learning_rate=0.2, **common)
        trainer = OnlineKDTrainer(model=student, teacher_model=teacher, args=args, **extra)
        others = {"teacher": trainer.peers[0].module}
    else:
        args = kd_args(run_dir, config_class=MTPConfig, mtp_num_heads=2, **common)
        trainer = MTPTrainer(model=student, args=args, **extra)
        others = {"mtp": trainer.mtp_heads}
    models = {"student": student, **others}
    before = {f"{m}.{k}": v.clone() for m, module in models.items() for k, v in module.state_dict().items()}
    trainer.train()
    after = {f"{m}.{k}": v for m, module in models.items() for k, v in module.state_dict().items()}
    delta = {k: (v - before[k]).detach().cpu() for k, v in after.items()}
    logged = [e for e in trainer.state.log_history if "loss" in e][0]
    result = {"delta": delta, "loss": logged["loss"], "world": trainer.accelerator.num_processes}
    torch.save(result, f"{output_file}.rank{trainer.accelerator.process_index}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
    end_process_group()  # after main returned: the trainer and its DDP wrapper are gone (see process_group.py)
