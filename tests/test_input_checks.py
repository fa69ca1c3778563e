"""Inputs that used to train silently (or fail later, blaming something else) are refused or handled."""

from __future__ import annotations

import math

import pytest
from conftest import kd_args

from hf_distill.losses.cross_vocab import CrossVocabLossSpec
from hf_distill.losses.token_kd import KDLossSpec

INF, NAN = math.inf, math.nan


# ---- 1. non-finite float settings are refused at construction ------------------------------------------------


@pytest.mark.parametrize(
    "overrides, setting",
    [
        ({"temperature": INF}, "temperature"),
        ({"temperature": NAN}, "temperature"),
        ({"temperature": -INF}, "temperature"),
        ({"temperature_schedule": "linear", "temperature_end": INF}, "temperature_end"),
        ({"temperature_schedule": "cosine", "temperature_end": NAN}, "temperature_end"),
        ({"alpha": NAN}, "alpha"),
        ({"alpha": INF}, "alpha"),
        ({"jsd_beta": NAN, "divergence": "jsd"}, "beta"),
        ({"skew_lambda": NAN}, "skew"),
        ({"cross_tokenizer": True, "uld_weight": NAN}, "uld_weight"),
        ({"cross_tokenizer": True, "exact_match_weight": INF}, "exact_match_weight"),
    ],
)
def test_kd_config_refuses_non_finite_settings(tmp_path, overrides, setting):
    with pytest.raises(ValueError, match=setting):
        kd_args(tmp_path, **overrides)


@pytest.mark.parametrize("field", ["hidden_loss_weight", "attention_loss_weight"])
@pytest.mark.parametrize("value", [NAN, INF, -1.0])
def test_feature_config_refuses_bad_weights(tmp_path, field, value):
    from hf_distill import FeatureKDConfig

    with pytest.raises(ValueError, match=field):
        kd_args(tmp_path, config_class=FeatureKDConfig, **{field: value})


def test_seqkd_config_refuses_nan_beta(tmp_path):
    from hf_distill import SeqKDConfig

    with pytest.raises(ValueError, match="beta"):
        kd_args(tmp_path, config_class=SeqKDConfig, beta=NAN, ground_truth_column="reference")


@pytest.mark.parametrize("temperature", [INF, NAN, 0.0])
def test_loss_specs_refuse_non_finite_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        KDLossSpec(temperature=temperature)
    with pytest.raises(ValueError, match="temperature"):
        CrossVocabLossSpec(temperature=temperature)


def test_finite_settings_still_accepted(tmp_path):
    config = kd_args(tmp_path, temperature=1e6, temperature_schedule="linear", temperature_end=0.5, alpha=0.0)
    assert (config.temperature, config.temperature_end, config.alpha) == (1e6, 0.5, 0.0)
