"""What the tests need to know of the machine they run on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


def cpu_vendor() -> str:
    """The CPU's vendor id from /proc/cpuinfo (``GenuineIntel``, ``AuthenticAMD``), or ``unknown``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def machine_types() -> list[str]:
    """The names under which a result trained by torch on this machine may be pinned, most precise first.

    Training's float sums follow the vector width torch picks for the CPU, and the vendor alone does
    not say it: the older AMD EPYC machines run torch's AVX2 kernels, the Zen 5 ones its AVX512 kernels
    (and train the demo to other bits than either the older EPYC or the Intel Xeon machines). So a pin
    is looked up as ``"<vendor> <torch capability>"`` (``AuthenticAMD AVX512``), then as the vendor alone.
    """
    import torch

    vendor = cpu_vendor()
    return [f"{vendor} {torch.backends.cpu.get_cpu_capability()}", vendor]


def pinned_for_this_machine(pins: Mapping[str, T]) -> T | None:
    """The pin ``pins`` holds for the first of :func:`machine_types` it names, or ``None``."""
    for name in machine_types():
        if name in pins:
            return pins[name]
    return None
