"""Refuse sizes that cannot fit before anything is allocated.

A request such as ``latent_dim=10**12`` or ``sample -n 10**12`` would otherwise end in a
``RuntimeError: can't allocate memory`` deep inside torch. Callers compute what a request
needs and call ``require_memory`` first; the message names the size and what to do.
"""

from __future__ import annotations

import os

__all__ = ["physical_memory", "require_memory", "format_bytes"]


def physical_memory() -> int:
    """Bytes of RAM on this machine (a large fallback where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
        return 2**40


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"  # pragma: no cover


def require_memory(n_bytes: float, what: str, hint: str = "use a smaller value") -> None:
    """Raise ``ValueError`` when ``n_bytes`` (what ``what`` needs) exceeds this machine's RAM."""
    limit = physical_memory()
    if n_bytes > limit:
        raise ValueError(
            f"{what} needs about {format_bytes(n_bytes)}, more than this machine's "
            f"{format_bytes(limit)} of memory; {hint}"
        )
