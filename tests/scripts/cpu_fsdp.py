"""Test-only: let accelerate form an FSDP run on CPU processes (gloo), which it otherwise never does.

Why this is needed: `AcceleratorState` switches a run to `DistributedType.FSDP` only when the process group is
a GPU-type one (MULTI_GPU, MULTI_XPU, ...); `use_cpu` processes become MULTI_CPU and the FSDP plugin from the
config file is dropped silently, so `accelerate launch --config_file <fsdp config>` trains plain replicas.
PyTorch's FSDP2 (`fully_shard`) itself runs on CPU with gloo, so after the state is built the same switch is
made here for MULTI_CPU. Nothing in the library or the shipped GPU configs depends on this.
"""

from __future__ import annotations

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
