"""hf_distill: knowledge distillation that drops into transformers/TRL training code.

Everything a user is meant to rely on is importable from here (``from hf_distill import KDTrainer``);
deeper module paths may move between versions. Names are loaded on first use, so ``import hf_distill``
itself stays cheap (no torch/transformers import until a trainer, loss or metric is touched).
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

# Public name -> module (relative to this package) that defines it.
_EXPORTS: dict[str, str] = {
    # Trainers and their configs.
    **dict.fromkeys(
        ("FeatureKDConfig", "FeatureKDTrainer", "KDConfig", "KDTrainer", "SeqKDConfig", "SeqKDTrainer"), "trainers"
    ),
    # Co-trained regimes: mutual learning, online distillation, multi-token-prediction self-distillation.
    **dict.fromkeys(
        ("MTPConfig", "MTPTrainer", "MutualKDConfig", "MutualKDTrainer", "OnlineKDConfig", "OnlineKDTrainer"),
        "trainers",
    ),
    "MTPHeads": "cotrained.mtp_heads",
    **dict.fromkeys(("MTPLossSpec", "mtp_depth_terms"), "losses.mtp"),
    "peer_kd_terms": "losses.peer_kd",
    # Loss functions: pure tensors in, named loss terms out.
    **dict.fromkeys(
        ("KDLossSpec", "KDLossTerms", "LogitSource", "causal_targets", "token_kd_loss", "token_kd_loss_from_logits"),
        "losses.token_kd",
    ),
    "DIVERGENCES": "losses.divergences",
    "cross_entropy_sum": "losses.cross_entropy",
    **dict.fromkeys(
        ("SparseTeacherSignal", "sampled_signal", "sparse_kd_loss", "sparse_kd_loss_from_logits", "topk_signal"),
        "losses.sparse_kd",
    ),
    **dict.fromkeys(("CrossVocabLossSpec", "cross_vocab_loss"), "losses.cross_vocab"),
    "hidden_state_loss": "losses.feature",
    "attention_kl_loss": "losses.attention",
    # Teacher sources: where the teacher signal comes from (live, precomputed, cross-tokenizer, EMA, ensemble).
    **dict.fromkeys(
        (
            "Capabilities",
            "CrossTokenizerTeacher",
            "EMATeacher",
            "LiveTeacher",
            "PrecomputedTeacher",
            "TeacherCompatibilityError",
            "TeacherEnsemble",
            "TeacherNeeds",
            "TeacherRequest",
            "TeacherSource",
            "register_teacher_source",
        ),
        "teachers.sources",
    ),
    "TeacherMixture": "losses.teacher_mixture",
    # Teacher signal ahead of training: precomputed columns (offline KD) and generated completions (SeqKD).
    **dict.fromkeys(("PrecomputeConfig", "load_teacher_signal", "precompute_teacher_signal"), "teachers.precompute"),
    "TeacherSignalError": "teachers.columns",
    "load_sharded": "teachers.resumable",
    **dict.fromkeys(
        ("TeacherGenerationConfig", "UnitTestExecutionCheck", "generate_teacher_completions"), "teachers.generation"
    ),
    # Choosing settings: held-out KD loss per temperature, without training.
    **dict.fromkeys(("TemperatureScore", "TemperatureSearch", "find_temperature"), "search"),
    # Progressive chains: each stage's saved student teaches the next (docs/progressive.md).
    **dict.fromkeys(("ChainSpec", "ChainSpecError", "load_chain_spec", "parse_chain_spec"), "progressive.spec"),
    **dict.fromkeys(("ChainResult", "run_chain"), "progressive.runner"),
    "StopRules": "progressive.stopping",
    # Layer maps for feature distillation.
    **dict.fromkeys(
        (
            "LayerMap",
            "build_layer_map",
            "format_layer_map",
            "last_k_map",
            "print_layer_map",
            "top_heavy_map",
            "uniform_map",
        ),
        "features.layer_maps",
    ),
    # Cross-tokenizer alignment.
    **dict.fromkeys(("align_tokens", "tokenize_with_spans"), "crosstok"),
    # Evaluation metrics and the before/after report.
    **dict.fromkeys(
        (
            "METRIC_FILES",
            "HeldOutPerplexity",
            "NextLineCompletion",
            "PassAtK",
            "TeacherStudentAgreement",
            "build_next_line_pairs",
            "compute_agreement",
            "compute_perplexity",
            "evaluate_humaneval",
            "evaluate_next_line_completion",
            "pass_at_k",
            "write_report",
        ),
        "evaluation",
    ),
    # Before a run: cost/memory/storage estimate and teacher inspection.
    **dict.fromkeys(
        (
            "DistillationEstimate",
            "EstimateArguments",
            "MemorySetup",
            "ModelShape",
            "distillation_flops",
            "estimate_distillation",
            "format_estimate",
            "memory_plan",
            "resolve_model_shape",
        ),
        "estimate",
    ),
    **dict.fromkeys(("TeacherInspection", "inspect_teacher"), "estimate.teacher_inspection"),
    # Model cards.
    **dict.fromkeys(("ModelCardInfo", "render_model_card", "write_model_card"), "model_card"),
    # Small real models that ship on PyPI (offline demos and tests).
    **dict.fromkeys(("gemma3_270m_dir", "smollm2_135m_instruct_dir"), "pypi_models"),
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (and any submodule, as ``hf_distill.losses``)."""
    module_path = _EXPORTS.get(name)
    if module_path is not None:
        value = getattr(importlib.import_module(f".{module_path}", __name__), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
