"""A small table of common accelerators (memory, dense bf16 peak, an hourly price) and time/cost from FLOPs.

The prices are rough on-demand cloud list prices per device-hour (late 2025); they vary by provider and
region by 2x or more, so every entry can be overridden (``--price-per-hour``, ``--peak-tflops``,
``--device-memory-gb``). Peak TFLOPS are the vendors' dense (no sparsity) bf16 tensor figures.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Accelerator:
    name: str
    memory_gb: float
    peak_tflops: float
    price_per_hour: float


ACCELERATORS: dict[str, Accelerator] = {
    a.name: a
    for a in (
        Accelerator("a100-40gb", 40, 312, 1.5),
        Accelerator("a100-80gb", 80, 312, 2.0),
        Accelerator("h100-80gb", 80, 989, 3.0),
        Accelerator("h200-141gb", 141, 989, 4.0),
        Accelerator("l4-24gb", 24, 121, 0.8),
        Accelerator("a10g-24gb", 24, 70, 1.0),
        Accelerator("rtx4090-24gb", 24, 165, 0.5),
    )
}


def accelerator(
    name: str,
    memory_gb: float | None = None,
    peak_tflops: float | None = None,
    price_per_hour: float | None = None,
) -> Accelerator:
    """A table entry with any overrides applied; a name outside the table needs all three values."""
    key = name.lower()
    if key in ACCELERATORS:
        base = ACCELERATORS[key]
    elif None in (memory_gb, peak_tflops, price_per_hour):
        raise ValueError(
            f"Unknown accelerator {name!r}: choose one of {', '.join(ACCELERATORS)}, or give device_memory_gb, "
            "peak_tflops and price_per_hour for it."
        )
    else:
        base = Accelerator(name, memory_gb, peak_tflops, price_per_hour)
    overrides = {"memory_gb": memory_gb, "peak_tflops": peak_tflops, "price_per_hour": price_per_hour}
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def training_hours(flops: float, device: Accelerator, num_devices: int, mfu: float) -> float:
    """Wall-clock hours for ``flops`` on ``num_devices`` devices running at ``mfu`` of their peak."""
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu (model FLOPs utilisation) must be in (0, 1], got {mfu}")
    if num_devices < 1:
        raise ValueError(f"num_devices must be >= 1, got {num_devices}")
    return flops / (num_devices * device.peak_tflops * 1e12 * mfu) / 3600.0


def cost_usd(num_devices: int, hours: float, price_per_hour: float) -> float:
    """Devices x hours x price per device-hour."""
    return num_devices * hours * price_per_hour
