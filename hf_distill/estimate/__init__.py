"""Know before you spend: FLOPs, memory, time, cost and storage of a planned run; teacher inspection."""

from .accelerators import ACCELERATORS, Accelerator, accelerator, cost_usd, training_hours
from .arguments import EstimateArguments
from .flops import FlopBudget, distillation_flops
from .memory import MemoryPlan, MemorySetup, memory_plan
from .model_shape import ModelShape, resolve_model_shape
from .plan import DistillationEstimate, estimate_distillation, format_estimate
from .storage import offline_bytes_per_token

__all__ = [
    "ACCELERATORS",
    "Accelerator",
    "DistillationEstimate",
    "EstimateArguments",
    "FlopBudget",
    "MemoryPlan",
    "MemorySetup",
    "ModelShape",
    "accelerator",
    "cost_usd",
    "distillation_flops",
    "estimate_distillation",
    "format_estimate",
    "memory_plan",
    "offline_bytes_per_token",
    "resolve_model_shape",
    "training_hours",
]
