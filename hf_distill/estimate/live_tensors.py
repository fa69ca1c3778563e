"""The high-water mark of the bytes held by live tensors, measured by watching every operator's outputs.

Why not resident memory: a process's RSS also holds the framework's own allocations (allocator caches, imported
libraries, thread pools), which move by tens of MB with the installed versions and with what ran before, while
a memory estimate counts tensors. This counts tensors: every storage an operator returns while the mode is active
is added once (views share their storage) and subtracted when the storage is freed (a weak reference's callback).

Not seen: storages that existed before the mode was entered (the models' weights: add them with `storage_bytes`)
and scratch buffers a kernel allocates and frees inside one operator without returning them.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakIdKeyDictionary


class LiveTensorPeak(TorchDispatchMode):
    """While active, ``current`` is the bytes of tensor storages created since entering and still alive, and
    ``peak`` its maximum. Only tensors on ``device_type`` count (default: every device).

        with LiveTensorPeak("cpu") as live:
            trainer.train()
        peak = storage_bytes(model.parameters()) + live.peak
    """

    def __init__(self, device_type: str | None = None) -> None:
        super().__init__()
        probe = torch.empty(1)
        if probe.untyped_storage() is not probe.untyped_storage():
            raise RuntimeError(
                f"LiveTensorPeak needs a PyTorch that keeps one Python object per storage (torch {torch.__version__} "
                "does not): freed storages could not be told apart."
            )
        self.device_type = device_type
        self.current = 0
        self.peak = 0
        # storage -> [bytes counted] (the list is shared with the storage's weak-reference callback), or None for a
        # storage that existed before the mode.
        self._counted: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._refs: set[weakref.ref] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        # A storage an operator receives before this mode has counted it existed before the mode (a weight an
        # optimizer updates in place): it must not be counted as new when the operator returns it.
        for leaf in pytree.tree_leaves((args, kwargs)):
            if isinstance(leaf, Tensor) and leaf.layout == torch.strided and leaf.device.type != "meta":
                storage = leaf.untyped_storage()
                if storage not in self._counted:
                    self._counted[storage] = None
        out = func(*args, **kwargs)
        for leaf in pytree.tree_leaves(out):
            if isinstance(leaf, Tensor):
                self._track(leaf)
        return out

    def _track(self, tensor: Tensor) -> None:
        if tensor.layout != torch.strided or tensor.device.type == "meta":
            return
        if self.device_type is not None and tensor.device.type != self.device_type:
            return
        storage = tensor.untyped_storage()
        nbytes = storage.nbytes()
        if storage in self._counted and self._counted[storage] is None:
            return  # existed before the mode
        cell = self._counted.get(storage)
        if cell is None:
            cell = [0]
            self._counted[storage] = cell
            self._refs.add(weakref.ref(storage, self._on_free(cell)))
        if nbytes != cell[0]:  # new, or resized in place (an out= tensor grown by its operator)
            self.current += nbytes - cell[0]
            cell[0] = nbytes
            self.peak = max(self.peak, self.current)

    def _on_free(self, cell: list[int]):
        def freed(ref: weakref.ref) -> None:
            self.current -= cell[0]
            self._refs.discard(ref)

        return freed


def storage_bytes(tensors: Iterable[Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (tied or shared weights counted once)."""
    seen: dict[tuple[str, int], int] = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        seen[(str(tensor.device), storage.data_ptr())] = storage.nbytes()
    return sum(seen.values())


def module_bytes(*modules: nn.Module) -> int:
    """Bytes of the parameters and buffers of ``modules`` (shared storages counted once)."""
    return storage_bytes(t for module in modules for t in (*module.parameters(), *module.buffers()))
