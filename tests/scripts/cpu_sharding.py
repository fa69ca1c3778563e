"""Test-only: let accelerate form FSDP and DeepSpeed runs on CPU processes (gloo), which it otherwise never does.

Why this is needed: `AcceleratorState` switches a run to `DistributedType.FSDP` only when the process group is
a GPU-type one (MULTI_GPU, MULTI_XPU, ...); `use_cpu` processes become MULTI_CPU and the FSDP plugin from the
config file is dropped silently, so `accelerate launch --config_file <fsdp config>` trains plain replicas.
PyTorch's FSDP2 (`fully_shard`) itself runs on CPU with gloo, so after the state is built the same switch is
made here for MULTI_CPU. Nothing in the library or the shipped GPU configs depends on this.
"""

from __future__ import annotations

import os

import accelerate.state
from accelerate.utils import DistributedType


def allow_fsdp_on_cpu() -> None:
    """Patch `AcceleratorState.__init__` so a CPU process group with an FSDP plugin runs as FSDP."""
    state_class = accelerate.state.AcceleratorState
    original = state_class.__init__
    if getattr(original, "_cpu_fsdp", False):
        return

    def init(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
            accelerate.state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    init._cpu_fsdp = True
    state_class.__init__ = init


def allow_deepspeed_on_cpu() -> None:
    """Patch `PartialState._prepare_backend` so a launched process without a GPU gets a gloo process group.

    Why: DeepSpeed needs `use_cpu` off (accelerate never starts DeepSpeed for `use_cpu` runs), and without a GPU
    accelerate then finds no backend and runs each process alone. DeepSpeed's own CPU accelerator
    (`DS_ACCELERATOR=cpu`) communicates over gloo, so gloo is what the process group gets here.
    """
    state_class = accelerate.state.PartialState
    original = state_class._prepare_backend
    if getattr(original, "_cpu_deepspeed", False):
        return

    def prepare_backend(self, cpu=False, sagemaker_dp=False, backend=None):
        chosen, kind = original(self, cpu, sagemaker_dp, backend)
        if chosen is None and int(os.environ.get("LOCAL_RANK", -1)) != -1:
            return "gloo", DistributedType.MULTI_CPU
        return chosen, kind

    prepare_backend._cpu_deepspeed = True
    state_class._prepare_backend = prepare_backend
