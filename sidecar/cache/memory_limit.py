"""Discover how much memory the process may use, to size the hot cache.

Everything here is best effort: a sidecar must start even on hosts with odd or
restricted /sys and /proc layouts, so unreadable or unparsable inputs mean
"unknown" rather than an error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Final

__all__ = ["container_memory_limit", "default_cache_max_bytes", "physical_memory"]

DEFAULT_CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
DEFAULT_MEMINFO: Final = Path("/proc/meminfo")
DEFAULT_PROC_SELF_CGROUP: Final = Path("/proc/self/cgroup")

# cgroup v1 reports "no limit" as the largest page-aligned signed 64-bit value
# (9223372036854771712 on 4 KiB pages); the exact number varies with page size,
# so anything this large is treated as unlimited.
_V1_UNLIMITED_THRESHOLD: Final = 2**60


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    # A non-positive limit is not something we could size a cache from; treat
    # it as garbage rather than let it propagate as a zero-byte budget.
    if value <= 0 or value >= _V1_UNLIMITED_THRESHOLD:
        return None
    return value


def _own_cgroup_paths(proc_self_cgroup: Path) -> tuple[str | None, str | None]:
    """Return this process's (v2, v1-memory) cgroup paths, if listed."""
    try:
        text = proc_self_cgroup.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None, None
    v2: str | None = None
    v1: str | None = None
    for line in text.splitlines():
        # Format is "hierarchy-id:controller-list:path"; the path may itself
        # contain ':' so only split twice.
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy_id, controllers, cgroup_path = parts
        if hierarchy_id == "0" and controllers == "":
            v2 = cgroup_path
        elif "memory" in controllers.split(","):
            v1 = cgroup_path
    return v2, v1


def _candidate_dirs(base: Path, own_path: str | None) -> Iterator[Path]:
    """Yield the directories whose limits constrain us, innermost first.

    Limits are hierarchical, so the effective one is the smallest along the
    path from our own cgroup up to the mount root. Without a cgroup namespace
    /sys/fs/cgroup is the host's tree and our limit lives below it; with one,
    the mount root *is* our cgroup and /proc/self/cgroup just says "/".
    """
    if own_path is not None:
        rel = PurePosixPath(own_path)
        # ".." shows up when our cgroup lies outside the namespace's view; we
        # cannot map that onto the mounted tree, and it must not escape base.
        if rel.is_absolute() and ".." not in rel.parts:
            parts = rel.parts[1:]
            for depth in range(len(parts), 0, -1):
                yield base.joinpath(*parts[:depth])
    yield base


def container_memory_limit(
    cgroup_root: Path = DEFAULT_CGROUP_ROOT,
    *,
    proc_self_cgroup: Path = DEFAULT_PROC_SELF_CGROUP,
) -> int | None:
    """Return the cgroup memory limit in bytes, or None if unlimited/unknown.

    Both v2 and v1 files are consulted (hybrid hosts can expose either) and
    the smallest finite limit wins, since every one of them applies.
    """
    v2_path, v1_path = _own_cgroup_paths(proc_self_cgroup)
    limits: list[int] = []
    for directory in _candidate_dirs(cgroup_root, v2_path):
        limit = _read_limit(directory / "memory.max")
        if limit is not None:
            limits.append(limit)
    for directory in _candidate_dirs(cgroup_root / "memory", v1_path):
        limit = _read_limit(directory / "memory.limit_in_bytes")
        if limit is not None:
            limits.append(limit)
    return min(limits, default=None)


def physical_memory(meminfo: Path = DEFAULT_MEMINFO) -> int:
    """Return total physical memory in bytes."""
    try:
        text = meminfo.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        text = ""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            fields = line.split()
            # Expected "MemTotal: <n> kB"; anything else falls through to
            # sysconf rather than guessing at units.
            if len(fields) == 3 and fields[2] == "kB" and fields[1].isdigit():
                total = int(fields[1]) * 1024
                if total > 0:
                    return total
            break
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def default_cache_max_bytes(
    cgroup_root: Path = DEFAULT_CGROUP_ROOT,
    meminfo: Path = DEFAULT_MEMINFO,
    *,
    proc_self_cgroup: Path = DEFAULT_PROC_SELF_CGROUP,
) -> int:
    """Half of the memory we may actually use: the container limit if tighter
    than physical memory, otherwise physical memory.

    Half leaves room for the interpreter, gRPC buffers and the gap between the
    cache's charged bytes and its real footprint.
    """
    physical = physical_memory(meminfo)
    limit = container_memory_limit(cgroup_root, proc_self_cgroup=proc_self_cgroup)
    budget = limit if limit is not None and limit < physical else physical
    # HotCache rejects a zero budget; a 1-byte cache is useless but lets the
    # sidecar start and serve uncached rather than crash on a bizarre host.
    return max(budget // 2, 1)
