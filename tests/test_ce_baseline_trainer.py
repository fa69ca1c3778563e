"""The CE-only baseline trained by a plain `transformers.Trainer` (``ce_baseline_trainer: trainer``).

SFTTrainer is the reference: on the same pre-tokenized rows, init and seed both minimise the token-mean
cross-entropy, so the two baselines must take the same steps to float32 rounding.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_llama
from datasets import Dataset
from test_generation_tokenizer import char_tokenizer
from transformers import Trainer
from trl import SFTTrainer

from hf_distill.recipe.arguments import RecipeArguments
from hf_distill.recipe.ce_collator import IGNORE_INDEX, PaddedCausalLMCollator, check_pretokenized
from hf_distill.recipe.parsing import parse_recipe_args
from hf_distill.recipe.runner import build_trainer, train_ce_baseline


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ce_baseline")
    make_tiny_llama(num_layers=4, seed=5).save_pretrained(root)
    char_tokenizer().save_pretrained(root)
    return root


def _train_baseline(teacher_dir, output_dir, kind: str, **extra) -> Trainer:
    values = {
        "mode": "logit",
        "model_name_or_path": teacher_dir,
        "teacher_model_name_or_path": teacher_dir,
        "student_init": "layer_subset",
        "student_num_layers": 2,
        "dataset_name": "stdlib",
        "num_eval_files": 2,
        "eval_chars_per_file": 200,
        "max_length": 32,
        "max_steps": 4,
        "per_device_train_batch_size": 3,
        "learning_rate": 1e-2,
        "lr_scheduler_type": "constant",
        "use_cpu": "true",
        "bf16": "false",
        "dtype": "float32",
        "teacher_dtype": "float32",
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": "true",
        "logging_steps": 1,
        "seed": 0,
        "ce_baseline": "true",
        "ce_baseline_trainer": kind,
        "output_dir": output_dir,
        **extra,
    }
    argv = [token for key, value in values.items() for token in (f"--{key}", str(value))]
    recipe, args, model_args = parse_recipe_args(argv)
    run = build_trainer(recipe, args, model_args)
    return train_ce_baseline(
        run, args, trainer_kind=recipe.ce_baseline_trainer, learning_rate=recipe.ce_baseline_learning_rate
    )


def test_plain_trainer_baseline_takes_the_sft_baselines_steps(teacher_dir, tmp_path):
    plain = _train_baseline(teacher_dir, tmp_path / "plain", "trainer")
    sft = _train_baseline(teacher_dir, tmp_path / "sft", "sft")
    assert isinstance(sft, SFTTrainer) and not isinstance(plain, SFTTrainer)
    plain_losses = [entry["loss"] for entry in plain.state.log_history if "loss" in entry]
    sft_losses = [entry["loss"] for entry in sft.state.log_history if "loss" in entry]
    assert len(plain_losses) == len(sft_losses) == 4
    assert plain_losses == pytest.approx(sft_losses, rel=1e-4)
    assert plain_losses[-1] < plain_losses[0]  # the rate is high enough that the steps do something
    sft_weights = dict(sft.model.named_parameters())
    for name, weight in plain.model.named_parameters():
        torch.testing.assert_close(weight, sft_weights[name], rtol=1e-4, atol=1e-5, msg=name)


def test_the_baseline_can_have_its_own_learning_rate(teacher_dir, tmp_path):
    trainer = _train_baseline(teacher_dir, tmp_path / "own_rate", "trainer", ce_baseline_learning_rate=3e-3)
    rates = [entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry]
    assert rates == pytest.approx([3e-3] * 4)  # constant schedule at the baseline's rate, not the KD student's 1e-2
    with pytest.raises(ValueError, match="ce_baseline_learning_rate"):
        RecipeArguments(ce_baseline_learning_rate=0.0)


def test_collator_masks_padding_by_position_not_by_id():
    eos = 2
    batch = PaddedCausalLMCollator(pad_token_id=eos)([{"input_ids": [5, 6, eos]}, {"input_ids": [7, eos]}])
    assert batch["input_ids"].tolist() == [[5, 6, eos], [7, eos, eos]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    # The real end-of-text tokens stay in the loss even though the pad id is the EOS id.
    assert batch["labels"].tolist() == [[5, 6, eos], [7, eos, IGNORE_INDEX]]


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="pad token"):
        PaddedCausalLMCollator(pad_token_id=None)
    with pytest.raises(ValueError, match="empty"):
        PaddedCausalLMCollator(pad_token_id=0)([{"input_ids": []}])
    with pytest.raises(ValueError, match="ce_baseline_trainer=sft"):
        check_pretokenized(Dataset.from_dict({"text": ["def f(): pass"]}))
    with pytest.raises(ValueError, match=r"loss masks \['completion_mask'\]"):
        check_pretokenized(Dataset.from_dict({"input_ids": [[5, 6]], "completion_mask": [[0, 1]]}))
    with pytest.warns(UserWarning, match="ce_baseline is off"):
        RecipeArguments(ce_baseline=False, ce_baseline_trainer="trainer")
    with pytest.warns(UserWarning, match="ce_baseline is off"):
        RecipeArguments(ce_baseline=False, ce_baseline_learning_rate=1e-3)
    with pytest.raises(ValueError, match="ce_baseline_trainer"):
        RecipeArguments(ce_baseline_trainer="keras")
