"""End a gloo process group at the end of a test script without the teardown deadlock seen on CPU.

Root cause (a gdb stack of a hung two-process run): gloo's worker thread destroys each finished work object at the
end of its loop, and a work that held tensors created in Python needs the GIL to release them. A barrier keeps the
collectives still in flight when it was issued (e.g. the Trainer's last all_gather) until it is itself destroyed.
The process group's destructor joins the worker threads, and it runs wherever the last reference to the group is
dropped: in the old script, when `main` returned and the DDP reducer that holds the group was freed, after
`destroy_process_group()` had only unregistered it. That thread holds the GIL while it joins, the worker waits for
the GIL to free the barrier's all_gather tensors: a deadlock (the hang). At interpreter finalization the same
destruction cannot take the GIL at all and the process aborts ("terminate called without an active exception").

So: free the wrappers first (return from the training function), synchronise, let the worker threads finish with
the GIL released, and only then drop the group's last reference with `destroy_process_group()`.
"""

from __future__ import annotations

import gc
import time

import torch.distributed as dist

# Time the main thread sleeps (GIL released) so gloo's worker threads can destroy their last work objects.
DRAIN_SECONDS = 0.2


def end_process_group() -> None:
    """Barrier, drain gloo's worker threads, then destroy the default group (call after the trainers are gone)."""
    if not dist.is_initialized():
        return
    gc.collect()  # wrappers in reference cycles (DDP reducer, FSDP meshes) drop their hold on the group now
    dist.barrier()
    time.sleep(DRAIN_SECONDS)
    dist.destroy_process_group()
