"""How much memory this process may still take, and one check before every large allocation.

    check_fits(images_bytes, "loading npz:big.npz", "use fewer images or a smaller --size")
    # GenlabError: loading npz:big.npz would take 12.9 GB; this machine has 8.1 GB available: use fewer ...

The budget is the smallest of: the machine's available memory (/proc/meminfo MemAvailable, which
counts reclaimable cache; elsewhere os.sysconf's free pages), the headroom under this process's
address-space limit (ulimit -v, RLIMIT_AS), and the headroom under a container's memory limit
(cgroup). Allocating past any of them ends in a MemoryError, a kill by the OOM killer, or a
machine that swaps until it stops answering; refusing first keeps the promise of one clear line.
Where none of them can be read (no /proc, no sysconf), nothing is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from genlab.errors import GenlabError

GIGABYTE = 10**9
NO_LIMIT = 1 << 60  # a cgroup or rlimit at or above this is "unlimited" (cgroup v1 writes 2**63 rounded to pages)
CGROUP = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Budget:
    """Bytes this process may still allocate, and the sentence that says where the bound comes from."""

    bytes: int
    source: str  # "this machine has {} available", with {} the amount

    def describe(self) -> str:
        return self.source.format(format_bytes(self.bytes))


def format_bytes(count: int | float) -> str:
    """`count` bytes in decimal units: "850 MB", "12.9 GB", "1,254.4 TB"."""
    if count < GIGABYTE:
        return f"{count / 10**6:,.0f} MB"
    if count < 1000 * GIGABYTE:
        return f"{count / GIGABYTE:,.1f} GB"
    return f"{count / (1000 * GIGABYTE):,.1f} TB"


def _meminfo_available() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (Linux), or None."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition(":")
        if key == "MemAvailable" and value.split() and value.split()[0].isdigit():
            return int(value.split()[0]) * 1024  # the kernel writes kB (KiB)
    return None


def _sysconf_available() -> int | None:
    """Free physical pages times the page size (POSIX systems that report them), or None."""
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows), or not this name (macOS)
        return None


def _address_space_headroom() -> int | None:
    """What RLIMIT_AS leaves beyond this process's current virtual size (VmSize), or None when unlimited."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, ValueError, OSError):  # no resource module (Windows)
        return None
    if soft == resource.RLIM_INFINITY or soft >= NO_LIMIT:
        return None
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return soft  # the limit itself bounds what is left
    for line in status.splitlines():
        if line.startswith("VmSize:") and line.split()[1].isdigit():
            return max(0, soft - int(line.split()[1]) * 1024)
    return soft


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (cgroup v2 without a limit) is not a number


def _cgroup_headroom() -> int | None:
    """What the container's memory limit leaves (limit - usage + inactive file cache, which the kernel reclaims),
    from cgroup v2 (memory.max) or v1 (memory/memory.limit_in_bytes) at the cgroup root this process sees."""
    for folder, limit_name, usage_name, cache_key in (
        (CGROUP, "memory.max", "memory.current", "inactive_file"),
        (CGROUP / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
    ):
        limit = _read_int(folder / limit_name)
        usage = _read_int(folder / usage_name)
        if limit is None or usage is None or limit >= NO_LIMIT:
            continue
        cache = 0
        try:
            for line in (folder / "memory.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == cache_key and value.strip().isdigit():
                    cache = int(value)
        except OSError:
            pass
        return max(0, limit - usage + cache)
    return None


def available_memory() -> Budget | None:
    """The tightest of the machine's available memory, the address-space limit and the container's limit;
    None where none of them can be read."""
    machine = _meminfo_available()
    if machine is None:
        machine = _sysconf_available()
    candidates = [
        (machine, "this machine has {} available"),
        (_address_space_headroom(), "this process's address-space limit (ulimit -v) leaves {}"),
        (_cgroup_headroom(), "this container's memory limit leaves {}"),
    ]
    known = [Budget(amount, source) for amount, source in candidates if amount is not None]
    return min(known, key=lambda budget: budget.bytes) if known else None


def check_fits(bytes_needed: int | float, what: str, hint: str) -> None:
    """Raise a GenlabError when `what` (e.g. "loading npz:big.npz") needs more memory than this process may
    still take; the message gives the estimate, the budget and `hint` (what to do)."""
    budget = available_memory()
    if budget is not None and bytes_needed > budget.bytes:
        raise GenlabError(f"{what} would take {format_bytes(bytes_needed)}; {budget.describe()}: {hint}")
