"""LiveTensorPeak: bytes of live tensors counted by hand (views, in-place updates, out= growth, autograd)."""

from __future__ import annotations

import torch

from hf_distill.estimate.live_tensors import LiveTensorPeak, module_bytes, storage_bytes


def test_counts_new_storages_once_and_subtracts_freed_ones():
    weight = torch.zeros(1000)  # existed before: never counted by the mode
    with LiveTensorPeak("cpu") as live:
        a = torch.ones(1000)  # +4000
        view = a.view(10, 100)  # a view shares the storage: +0
        doubled = a * 2  # +4000 -> 8000
        del doubled  # -> 4000
        weight.add_(1)  # in place on an older storage: +0
        grown = torch.empty(0)
        torch.mul(a, 3, out=grown)  # an out= tensor grown by its operator: +4000 -> 8000
        assert (live.current, live.peak) == (8000, 8000)
        del a, view
        assert (live.current, live.peak) == (4000, 8000)
        x = torch.randn(100, 100, requires_grad=True)  # +40000
        (x @ x).sum().backward()  # the product and the sum are freed; the 40000-byte grad stays
        assert live.current == 4000 + 40000 + 40000
        assert live.peak >= 4000 + 40000 + 40000 + 40000  # x, x @ x, the grad and `grown` alive together
    del grown


def test_other_devices_are_left_out_and_weights_counted_once():
    with LiveTensorPeak("cuda") as live:
        kept = torch.ones(100)
    assert live.peak == 0 and kept.sum() == 100
    shared = torch.ones(10)
    assert storage_bytes([shared, shared[:5], torch.ones(3)]) == 40 + 12
    tied = torch.nn.Linear(4, 4, bias=False)
    model = torch.nn.ModuleDict({"a": tied, "b": tied})
    assert module_bytes(model) == 4 * 4 * 4
