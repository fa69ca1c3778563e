"""Model cards: the rendered content, and that saving and push_to_hub write/upload the card."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import yaml

from hf_distill import KDTrainer
from hf_distill.model_card import ModelCardInfo, render_model_card

EVAL_TABLE = "| model | perplexity |\n| --- | ---: |\n| teacher | 2.5 |\n| KD student | 3.1 |\n"


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def _info(**overrides) -> ModelCardInfo:
    values = dict(
        model_name="smol-student",
        base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
        teacher="deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
        student_init="layers [0, 3, 6] of the teacher",
        data="Python files of the standard library; 8 held out.",
        evaluation=EVAL_TABLE,
        datasets=["codeparrot/codeparrot-clean-valid"],
        license="apache-2.0",
    )
    values.update(overrides)
    return ModelCardInfo(**values)


def test_card_lists_models_method_hyperparameters_data_evaluation_and_limits(tmp_path):
    from conftest import kd_args

    args = kd_args(tmp_path, alpha=0.7, temperature=2.0, learning_rate=3e-4, max_steps=40, divergence="jsd")
    card = render_model_card(_info(), args, repo_id="me/smol-student", tags=["code"])

    meta = _front_matter(card)
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert meta["datasets"] == ["codeparrot/codeparrot-clean-valid"]
    assert meta["license"] == "apache-2.0"
    assert {"hf_distill", "knowledge-distillation", "code"} <= set(meta["tags"])
    assert "# smol-student" in card
    assert "| Teacher | `deepseek-ai/DeepSeek-R1-Distill-Llama-8B` |" in card
    assert "| Student initialisation | layers [0, 3, 6] of the teacher |" in card
    assert "jsd(teacher || student)" in card and "alpha = 0.7" in card and "temperature T = 2.0" in card
    for row in (
        "| learning_rate | 0.0003 |",
        "| max_steps | 40 |",
        "| alpha | 0.7 |",
        "| temperature | 2.0 |",
        "| divergence | jsd |",
        "| per_device_train_batch_size | 4 |",
    ):
        assert row in card
    assert "| num_train_epochs |" not in card  # max_steps decides the length of training
    assert "| jsd_beta | 0.5 |" in card and "skew_lambda" not in card  # only the chosen divergence's knobs
    assert "## Data\n\nPython files of the standard library; 8 held out." in card
    assert "## Evaluation\n\n" + EVAL_TABLE in card
    assert "## Intended use" in card and "## Limitations" in card and "inherits the teacher's errors" in card
    assert 'AutoModelForCausalLM.from_pretrained("me/smol-student")' in card


def test_ce_only_run_is_described_as_such(tmp_path):
    from conftest import kd_args

    card = render_model_card(_info(), kd_args(tmp_path, alpha=0.0))
    assert "cross-entropy on the labels only (alpha = 0" in card


def test_local_base_model_path_is_not_written_as_hub_base_model(tmp_path):
    card = render_model_card(_info(base_model=str(tmp_path)))
    assert "base_model" not in _front_matter(card)
    card = render_model_card(_info(base_model="org/model (from a PyPI package)"))
    assert "base_model" not in _front_matter(card)


def _trainer(tmp_path, **overrides):
    from conftest import kd_args, make_text_dataset, make_tiny_llama, make_word_tokenizer

    args = kd_args(tmp_path / "out", **overrides)
    trainer = KDTrainer(
        model=make_tiny_llama(seed=1),
        teacher_model=make_tiny_llama(seed=2),
        args=args,
        train_dataset=make_text_dataset(8),
        processing_class=make_word_tokenizer(),
    )
    trainer.model_card_info = _info(evaluation=EVAL_TABLE)
    return trainer


def test_save_model_writes_the_card_next_to_the_weights(tmp_path):
    trainer = _trainer(tmp_path)
    trainer.save_model()
    out = Path(trainer.args.output_dir)
    assert (out / "model.safetensors").is_file()
    card = (out / "README.md").read_text()
    assert "deepseek-ai/DeepSeek-R1-Distill-Llama-8B" in card and EVAL_TABLE in card
    assert "| alpha | 0.5 |" in card and "| temperature | 2.0 |" in card


def test_push_to_hub_uploads_the_folder_holding_the_card(tmp_path):
    trainer = _trainer(tmp_path, hub_model_id="someone/smol-student")
    uploaded = {}

    def fake_upload(**kwargs):
        folder = Path(kwargs["folder_path"])
        uploaded["repo_id"] = kwargs["repo_id"]
        uploaded["files"] = sorted(p.name for p in folder.iterdir())
        uploaded["card"] = (folder / "README.md").read_text()
        return "commit-url"

    api = mock.MagicMock()
    api.create_repo.return_value = mock.MagicMock(repo_id="someone/smol-student")
    api.upload_folder.side_effect = fake_upload
    with mock.patch("transformers.trainer.hf_api", return_value=api):
        trainer.push_to_hub()

    api.upload_folder.assert_called_once()
    assert uploaded["repo_id"] == "someone/smol-student"
    assert "README.md" in uploaded["files"] and "model.safetensors" in uploaded["files"]
    assert "# smol-student" in uploaded["card"]
    assert 'from_pretrained("someone/smol-student")' in uploaded["card"]
    assert EVAL_TABLE in uploaded["card"] and "## Limitations" in uploaded["card"]
