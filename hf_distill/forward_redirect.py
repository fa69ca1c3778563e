"""Run an arbitrary function *inside* a wrapped model's forward.

DDP only syncs gradients it prepared for in its own `forward`, and FSDP / DeepSpeed ZeRO-3 only gather a
sharded module's parameters while that forward runs. Computing the loss from hidden states and the
`lm_head` weight happens outside the model's own `forward`, so we temporarily swap the inner module's
`forward` for our function and call the wrapper: the wrapper does its setup, then runs our code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn


def call_inside_forward(wrapper: nn.Module, inner: nn.Module, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Return `fn(*args, **kwargs)`, executed as the forward of `inner` reached through `wrapper`."""
    if wrapper is inner:
        return fn(*args, **kwargs)
    had_instance_forward = "forward" in inner.__dict__
    saved_forward = inner.__dict__.get("forward")

    def restore() -> None:
        if had_instance_forward:
            inner.forward = saved_forward
        else:
            inner.__dict__.pop("forward", None)

    def redirected(*_args: Any, **_kwargs: Any) -> Any:
        restore()  # `fn` may itself call the real forward (e.g. the logits path)
        return fn(*_args, **_kwargs)

    inner.forward = redirected
    try:
        return wrapper(*args, **kwargs)
    finally:
        restore()
