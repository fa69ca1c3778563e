"""Configuration of `KDTrainer`: TRL's `SFTConfig` plus the distillation fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trl import SFTConfig

from ..losses.cross_vocab import CrossVocabLossSpec
from ..losses.divergences import DIVERGENCES
from ..losses.precision import LOSS_PRECISIONS
from ..losses.settings import require_in_range, require_positive
from ..losses.teacher_mixture import COMBINE_MODES, check_mixture_weights
from ..losses.token_kd import KDLossSpec
from .loss_schedules import WeightSchedule, parse_weight_schedules
from .schedules import scheduled_temperature


@dataclass
class KDConfig(SFTConfig):
    r"""
    Configuration for [`KDTrainer`]. Everything [`trl.SFTConfig`] (and so `transformers.TrainingArguments`)
    accepts works unchanged; the fields below add knowledge distillation.

    Parameters:
        > Distillation loss

        temperature (`float`, defaults to `1.0`):
            Divides teacher and student logits before the softmax; the soft term is multiplied by `T^2` so its
            gradient scale does not depend on `T`. Must be > 0.
        alpha (`float`, defaults to `0.5`):
            Weight of the soft (teacher) term; `1 - alpha` weights the cross-entropy on the labels. In [0, 1].
        divergence (`str`, defaults to `"forward_kl"`):
            One of `forward_kl` (KL(teacher||student)), `reverse_kl`, `jsd` (generalized, see `jsd_beta`), `tvd`,
            `skew_forward_kl`, `skew_reverse_kl` (see `skew_lambda`), `mse` (between probabilities) and
            `cosine` (between logits). A teacher logit of `-inf` (a masked vocabulary) is probability 0; every
            divergence except `reverse_kl`, `jsd` with `jsd_beta=1`, `skew_reverse_kl` with `skew_lambda=0` and
            `cosine` handles it (those have no finite value there and raise a clear error).
        temperature_schedule (`str`, defaults to `"constant"`):
            `constant`, `linear` or `cosine`: move the temperature from `temperature` to `temperature_end` over
            the training steps (soft targets early, sharper ones late).
        temperature_end (`float`, *optional*):
            Final temperature of a non-constant schedule. Must be > 0.
        loss_weight_schedules (`dict[str, str]`, *optional*):
            Curricula for the loss weights, e.g. `{"alpha": "linear:0.9", "hidden_loss_weight": "step:200:1.0"}`:
            `constant`, `linear:END`, `cosine:END` (from the configured value to END over training) or
            `step:K:VALUE` (the configured value for the first K optimizer steps, then VALUE). Schedulable:
            `alpha` (and `hidden_loss_weight`, `attention_loss_weight` in `FeatureKDConfig`). The current values
            are logged each step; see docs/staged_distillation.md.
        jsd_beta (`float`, defaults to `0.5`):
            Generalized JSD interpolation: 0 is forward KL, 1 reverse KL, 0.5 the symmetric JSD.
        skew_lambda (`float`, defaults to `0.1`):
            Mixing weight of the skew KL variants, in [0, 1).
        loss_chunk_size (`int`, *optional*):
            Token positions whose logits the loss projects at once. Default: chosen from the vocabulary size so
            that the projected float32 (chunk x vocab) logits take about 256 MB; the elementwise work then runs
            in cache-sized blocks of those rows.
        loss_precision (`str`, defaults to `"auto"`):
            dtype of the loss's `lm_head` products (projections, hidden-state and weight gradients): `auto` uses
            the run's compute dtype (bf16 under `bf16=True`, else the `lm_head` weight's dtype), while softmax,
            divergence and sums stay float32; `float32` runs the products in float32 too (slower under bf16; for
            checking that a result does not depend on the loss's rounding). See README "Numerics".
        fused_lm_head (`bool`, *optional*):
            Compute the loss from hidden states and the `lm_head` weight so full logits are never built. Default:
            on, except under DeepSpeed ZeRO-3 and FSDP (whose sharded `lm_head` is only whole inside the module's
            own forward) and for models that post-process logits (soft-capping, logit scaling).

        > Diagnostics (see docs/diagnostics.md)

        diagnostics_positions (`int`, defaults to `256`):
            Target positions sampled per micro-batch, in the steps that end on a log (every `logging_steps`) and
            in evaluation, to log KL, top-1 agreement, top-5 overlap, probability correlation, entropies and
            calibration errors (`diag_*` keys). `0` turns them off. Needs a teacher with full logits (live,
            ensemble, EMA); other teachers log none.
        diagnostics_watch (`bool`, defaults to `True`):
            Add a `DiagnosticsWatch` callback that warns once per symptom (KL rising, agreement flat,
            correlation low, student entropy collapsing), with the numbers.

        > Teacher

        teacher_model_name_or_path (`str`, *optional*):
            Teacher to load when `KDTrainer` gets no `teacher_model` object (a Hub id or a local directory).
        teacher_model_init_kwargs (`dict`, *optional*):
            Keyword arguments for the teacher's `AutoModelForCausalLM.from_pretrained`.
        teacher_dtype (`str`, *optional*, defaults to `"auto"`):
            Dtype the teacher is loaded in: `auto`, `bfloat16`, `float16` or `float32`.
        teacher_load_in_4bit (`bool`, defaults to `False`):
            Load the teacher quantized to NF4 with bitsandbytes (double quantization, compute in `teacher_dtype`
            or bf16). Roughly quarters the teacher's weight memory.
        teacher_micro_batch_size (`int`, *optional*):
            Run the teacher over the batch in slices of this many sequences to cap its activation memory.
        check_teacher_context (`bool`, defaults to `True`):
            Refuse batches longer than the teacher's `max_position_embeddings` instead of silently degrading.

        > Self-distillation and ensembles (see docs/teachers.md)

        ema_decay (`float`, defaults to `0.999`):
            With `teacher_model="ema"` (or `teacher_model_name_or_path="ema"`), the teacher is an exponential moving
            average of the student's trainable parameters: `ema = decay * ema + (1 - decay) * param`. In [0, 1).
        ema_update_every (`int`, defaults to `1`):
            Update the EMA every this many optimizer steps.
        ema_start_step (`int`, defaults to `0`):
            Until this optimizer step the EMA copies the student exactly; averaging starts after it.
        teacher_ensemble (`list[str]`, *optional*):
            Names or paths of several teachers (same tokenizer as the student) to distil from at once; the same as
            passing a list as `teacher_model`. Loaded with the teacher settings above (e.g. NF4).
        teacher_ensemble_weights (`list[float]`, *optional*):
            Weight of each ensemble teacher (normalised to sum to 1). Default: equal weights.
        teacher_ensemble_combine (`str`, defaults to `"probability"`):
            `probability`: the teachers' probabilities are averaged (a mixture); `log_probability`: their
            log-probabilities are averaged and renormalised (a geometric mean).

        > Cross-tokenizer distillation (teacher and student tokenizers differ; see docs/cross_tokenizer.md)

        cross_tokenizer (`bool`, defaults to `False`):
            Align the two tokenizations of the completion text and use a tokenizer-agnostic soft loss (ULD +
            exact match on identical-text tokens) instead of `divergence`. Needs `teacher_processing_class`.
        uld_weight (`float`, defaults to `1.0`):
            Weight of the Universal Logit Distillation term (L1 between sorted probabilities).
        exact_match_weight (`float`, defaults to `0.0`):
            Weight of the KL term on tokens whose text is identical in both vocabularies (hybrid ULD).
        uld_top_k (`int`, *optional*):
            Compare only the top-k ranks in ULD (much faster with large vocabularies). Default: all ranks.
    """

    _VALID_DICT_FIELDS = SFTConfig._VALID_DICT_FIELDS + ["teacher_model_init_kwargs", "loss_weight_schedules"]

    temperature: float = field(default=1.0, metadata={"help": "Softmax temperature for teacher and student (> 0)."})
    alpha: float = field(default=0.5, metadata={"help": "Weight of the soft term; 1 - alpha weights the CE term."})
    divergence: str = field(
        default="forward_kl", metadata={"help": "Divergence of the soft term.", "choices": list(DIVERGENCES)}
    )
    temperature_schedule: str = field(
        default="constant",
        metadata={"help": "Temperature schedule.", "choices": ["constant", "linear", "cosine"]},
    )
    temperature_end: float | None = field(default=None, metadata={"help": "Final temperature of the schedule."})
    loss_weight_schedules: dict[str, str] | str | None = field(
        default=None,
        metadata={"help": 'Loss-weight curricula, e.g. \'{"alpha": "linear:0.9"}\' (constant, linear:END, ...).'},
    )
    jsd_beta: float = field(default=0.5, metadata={"help": "Generalized JSD beta (0 forward KL, 1 reverse KL)."})
    skew_lambda: float = field(default=0.1, metadata={"help": "Mixing weight of the skew KL divergences."})
    loss_chunk_size: int | None = field(default=None, metadata={"help": "Token positions per loss chunk."})
    loss_precision: str = field(
        default="auto",
        metadata={"help": "dtype of the loss's lm_head products.", "choices": list(LOSS_PRECISIONS)},
    )
    fused_lm_head: bool | None = field(
        default=None, metadata={"help": "Loss from hidden states + lm_head weight (default: automatic)."}
    )
    diagnostics_positions: int = field(
        default=256, metadata={"help": "Positions sampled per micro-batch for the diag_* logs (0: off)."}
    )
    diagnostics_watch: bool = field(default=True, metadata={"help": "Warn when the diagnostics look wrong."})
    teacher_model_name_or_path: str | None = field(default=None, metadata={"help": "Teacher Hub id or local path."})
    teacher_model_init_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Keyword arguments for the teacher's from_pretrained."}
    )
    teacher_dtype: str = field(
        default="auto",
        metadata={"help": "Teacher dtype.", "choices": ["auto", "bfloat16", "float16", "float32"]},
    )
    teacher_load_in_4bit: bool = field(default=False, metadata={"help": "Load the teacher in NF4 (bitsandbytes)."})
    teacher_micro_batch_size: int | None = field(
        default=None, metadata={"help": "Sequences per teacher forward (default: the whole batch)."}
    )
    check_teacher_context: bool = field(
        default=True, metadata={"help": "Error on sequences longer than the teacher's context."}
    )
    ema_decay: float = field(default=0.999, metadata={"help": "EMA self-teacher decay, in [0, 1)."})
    ema_update_every: int = field(default=1, metadata={"help": "Optimizer steps between EMA updates."})
    ema_start_step: int = field(default=0, metadata={"help": "The EMA copies the student until this step."})
    teacher_ensemble: list[str] | None = field(
        default=None, metadata={"help": "Names/paths of several teachers to mix (same tokenizer)."}
    )
    teacher_ensemble_weights: list[float] | None = field(
        default=None, metadata={"help": "Weights of the ensemble teachers (default: equal)."}
    )
    teacher_ensemble_combine: str = field(
        default="probability",
        metadata={"help": "How teachers are mixed.", "choices": ["probability", "log_probability"]},
    )
    cross_tokenizer: bool = field(
        default=False, metadata={"help": "Distill across different tokenizers (aligned ULD + exact-match loss)."}
    )
    uld_weight: float = field(default=1.0, metadata={"help": "Weight of the ULD term (cross_tokenizer)."})
    exact_match_weight: float = field(
        default=0.0, metadata={"help": "Weight of the identical-token KL term (cross_tokenizer)."}
    )
    uld_top_k: int | None = field(default=None, metadata={"help": "ULD over the top-k ranks only (default: all)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_loss_settings()
        if self.diagnostics_positions < 0:
            raise ValueError(f"diagnostics_positions must be >= 0, got {self.diagnostics_positions}.")
        if self.teacher_micro_batch_size is not None and self.teacher_micro_batch_size < 1:
            raise ValueError(f"teacher_micro_batch_size must be >= 1, got {self.teacher_micro_batch_size}.")
        if self.cross_tokenizer:
            self.cross_vocab_spec()
        self._check_teacher_kind_settings()

    def check_loss_settings(self) -> None:
        """Validate every loss setting; run again when a search trial sets fields after construction."""
        # Validation lives in KDLossSpec so the loss functions and the config can never disagree.
        self.loss_spec()
        scheduled_temperature(self.temperature_schedule, self.temperature, self.temperature_end, 0, 1)
        if self.temperature_end is not None:
            require_positive("temperature_end", self.temperature_end)
        self.weight_schedules()

    def schedulable_weights(self) -> dict[str, Any]:
        """Loss weights that `loss_weight_schedules` may name, each with its range check."""
        return {"alpha": lambda name, value: require_in_range(name, value, 0.0, 1.0)}

    def weight_schedules(self) -> dict[str, WeightSchedule]:
        """`loss_weight_schedules`, parsed and validated (every value a weight reaches is in its range)."""
        schedules = self.loss_weight_schedules
        if schedules is not None and not isinstance(schedules, dict):
            raise ValueError(f"loss_weight_schedules must be a mapping of weight name to schedule, got {schedules!r}.")
        return parse_weight_schedules(schedules, self.schedulable_weights(), self)

    def _check_teacher_kind_settings(self) -> None:
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}.")
        if self.ema_update_every < 1 or self.ema_start_step < 0:
            raise ValueError(
                f"ema_update_every must be >= 1 and ema_start_step >= 0, got {self.ema_update_every} and "
                f"{self.ema_start_step}."
            )
        if self.teacher_ensemble_combine not in COMBINE_MODES:
            raise ValueError(
                f"teacher_ensemble_combine must be one of {COMBINE_MODES}, got {self.teacher_ensemble_combine!r}."
            )
        if self.teacher_ensemble_weights is not None:
            check_mixture_weights(self.teacher_ensemble_weights)
        if self.teacher_ensemble and self.teacher_model_name_or_path:
            raise ValueError("Set either teacher_model_name_or_path or teacher_ensemble, not both.")

    def cross_vocab_spec(self, temperature: float | None = None) -> CrossVocabLossSpec:
        """The cross-tokenizer soft-loss settings of this config, validated."""
        return CrossVocabLossSpec(
            temperature=self.temperature if temperature is None else temperature,
            uld_weight=self.uld_weight,
            exact_weight=self.exact_match_weight,
            top_k=self.uld_top_k,
            chunk_size=self.loss_chunk_size,
            precision=self.loss_precision,
        )

    def loss_spec(self, temperature: float | None = None, alpha: float | None = None) -> KDLossSpec:
        """The loss settings of this config (at `temperature` and `alpha`, default the configured ones), validated."""
        return KDLossSpec(
            divergence=self.divergence,
            temperature=self.temperature if temperature is None else temperature,
            alpha=self.alpha if alpha is None else alpha,
            beta=self.jsd_beta,
            skew=self.skew_lambda,
            chunk_size=self.loss_chunk_size,
            precision=self.loss_precision,
        )
