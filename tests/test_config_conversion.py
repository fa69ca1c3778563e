"""One conversion into the three trainer configs keeps every field the source config has, token fields included."""

from __future__ import annotations

import dataclasses

import pytest
from trl import SFTConfig

from hf_distill import FeatureKDConfig, KDConfig, SeqKDConfig
from hf_distill.trainers.config_conversion import as_config

# Fields a config sets itself on purpose: SeqKD always trains on completion tokens only.
OWN_SETTINGS = {SeqKDConfig: {"completion_only_loss"}}


def _shared_fields(source, target_class):
    names = {f.name for f in dataclasses.fields(target_class) if f.init} - OWN_SETTINGS.get(target_class, set())
    return [f.name for f in dataclasses.fields(source) if f.init and f.name in names]


@pytest.mark.parametrize("target", [KDConfig, SeqKDConfig, FeatureKDConfig])
def test_plain_sft_config_keeps_every_field(tmp_path, target):
    source = SFTConfig(
        output_dir=str(tmp_path), use_cpu=True, report_to=[], seed=11, learning_rate=1.5e-4, max_length=77,
        eos_token="<|eot|>", hub_token="hf_secret", hub_model_id="me/student", gradient_accumulation_steps=3,
        logging_steps=7,
    )  # fmt: skip
    converted = as_config(target, source, model=None, suffix="X")
    assert type(converted) is target
    for name in _shared_fields(source, target):
        assert getattr(converted, name) == getattr(source, name), name
    # to_dict() would have replaced these with "<EOS_TOKEN>"-style placeholders.
    assert (converted.eos_token, converted.hub_token) == ("<|eot|>", "hf_secret")


@pytest.mark.parametrize("target", [SeqKDConfig, FeatureKDConfig])
def test_kd_settings_survive_into_the_subclass_configs(tmp_path, target):
    source = KDConfig(
        output_dir=str(tmp_path), use_cpu=True, report_to=[], temperature=3.0, alpha=0.25, divergence="jsd",
        jsd_beta=0.3, ema_decay=0.9, teacher_ensemble_weights=[1.0, 2.0], pad_token="<pad>",
    )  # fmt: skip
    converted = as_config(target, source, model=None, suffix="X")
    for name in _shared_fields(source, target):
        assert getattr(converted, name) == getattr(source, name), name


def test_no_config_gives_defaults_named_after_the_model(monkeypatch):
    import transformers.training_args as training_args

    # The defaults include bf16 autocast, which TrainingArguments refuses on a machine without bf16 support.
    monkeypatch.setattr(training_args, "is_torch_bf16_gpu_available", lambda: True, raising=False)
    converted = as_config(KDConfig, None, model="org/some-student", suffix="KD")
    assert converted.output_dir == "some-student-KD"
    assert as_config(KDConfig, converted, model=None, suffix="KD") is converted
