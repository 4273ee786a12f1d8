"""What the tests need to know of the machine they run on."""

from __future__ import annotations


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
