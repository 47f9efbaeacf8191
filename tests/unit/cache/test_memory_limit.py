from __future__ import annotations

import os
from pathlib import Path

import pytest

from sidecar.cache.memory_limit import (
    container_memory_limit,
    default_cache_max_bytes,
    physical_memory,
)

GiB = 1024**3
V1_UNLIMITED = "9223372036854771712"  # what a v1 kernel reports with no limit on 4 KiB pages


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def no_proc(tmp_path: Path) -> Path:
    """A /proc/self/cgroup that does not exist, so the host's real cgroup
    membership never leaks into a test."""
    return tmp_path / "proc-self-cgroup-absent"


def v2_tree(root: Path, memory_max: str) -> Path:
    write(root / "cgroup.controllers", "cpu io memory pids\n")
    write(root / "memory.max", memory_max)
    return root


def v1_tree(root: Path, limit: str) -> Path:
    write(root / "memory" / "memory.limit_in_bytes", limit)
    return root


def meminfo(tmp_path: Path, total_kb: int) -> Path:
    return write(
        tmp_path / "meminfo",
        f"MemTotal:       {total_kb} kB\nMemFree:         1234 kB\nMemAvailable:    5678 kB\n",
    )


# --- container_memory_limit ------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("536870912\n", 512 * 1024**2),
        ("536870912", 512 * 1024**2),  # no trailing newline
        ("max\n", None),
        ("", None),
        ("lots\n", None),
        ("12.5\n", None),
        ("0\n", None),
        ("-1\n", None),
        (str(2**60), None),
    ],
)
def test_cgroup_v2(tmp_path: Path, no_proc: Path, content: str, expected: int | None) -> None:
    root = v2_tree(tmp_path / "cg", content)
    assert container_memory_limit(root, proc_self_cgroup=no_proc) == expected


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("1073741824\n", GiB),
        (V1_UNLIMITED + "\n", None),
        (str(2**60 - 1), 2**60 - 1),  # just below the "unlimited" threshold is a real limit
        (str(2**63 - 1), None),
        ("garbage", None),
        ("", None),
    ],
)
def test_cgroup_v1(tmp_path: Path, no_proc: Path, content: str, expected: int | None) -> None:
    root = v1_tree(tmp_path / "cg", content)
    assert container_memory_limit(root, proc_self_cgroup=no_proc) == expected


def test_missing_tree(tmp_path: Path, no_proc: Path) -> None:
    assert container_memory_limit(tmp_path / "nope", proc_self_cgroup=no_proc) is None


def test_empty_tree(tmp_path: Path, no_proc: Path) -> None:
    root = tmp_path / "cg"
    root.mkdir()
    assert container_memory_limit(root, proc_self_cgroup=no_proc) is None


def test_unreadable_limit_file(tmp_path: Path, no_proc: Path) -> None:
    root = tmp_path / "cg"
    # A directory where the file should be: read_text raises IsADirectoryError
    # regardless of the uid the tests run as (root ignores chmod).
    (root / "memory.max").mkdir(parents=True)
    assert container_memory_limit(root, proc_self_cgroup=no_proc) is None


def test_non_ascii_garbage(tmp_path: Path, no_proc: Path) -> None:
    root = tmp_path / "cg"
    root.mkdir()
    (root / "memory.max").write_bytes(b"\xff\xfe1024")
    assert container_memory_limit(root, proc_self_cgroup=no_proc) is None


def test_hybrid_takes_smallest_finite_limit(tmp_path: Path, no_proc: Path) -> None:
    root = v2_tree(tmp_path / "cg", "max\n")
    v1_tree(root, str(3 * GiB))
    assert container_memory_limit(root, proc_self_cgroup=no_proc) == 3 * GiB
    write(root / "memory.max", str(2 * GiB))
    assert container_memory_limit(root, proc_self_cgroup=no_proc) == 2 * GiB


def test_v2_own_cgroup_from_proc_self(tmp_path: Path) -> None:
    # Host cgroup namespace: the mount shows the whole tree and our limit sits
    # below it, with an even tighter one on an ancestor.
    root = v2_tree(tmp_path / "cg", "max\n")
    write(root / "kubepods" / "memory.max", str(4 * GiB))
    write(root / "kubepods" / "pod1" / "memory.max", str(3 * GiB))
    write(root / "kubepods" / "pod1" / "ctr" / "memory.max", "max\n")
    proc = write(tmp_path / "proc-cgroup", "0::/kubepods/pod1/ctr\n")
    assert container_memory_limit(root, proc_self_cgroup=proc) == 3 * GiB


def test_v1_own_cgroup_from_proc_self(tmp_path: Path) -> None:
    root = v1_tree(tmp_path / "cg", V1_UNLIMITED)
    write(root / "memory" / "docker" / "abc" / "memory.limit_in_bytes", str(GiB))
    proc = write(
        tmp_path / "proc-cgroup",
        "12:cpu,cpuacct:/docker/abc\n11:memory:/docker/abc\n1:name=systemd:/docker/abc\n",
    )
    assert container_memory_limit(root, proc_self_cgroup=proc) == GiB


def test_namespaced_cgroup_root_path(tmp_path: Path) -> None:
    root = v2_tree(tmp_path / "cg", str(GiB))
    proc = write(tmp_path / "proc-cgroup", "0::/\n")
    assert container_memory_limit(root, proc_self_cgroup=proc) == GiB


@pytest.mark.parametrize(
    "proc_content",
    [
        "0::/../escape\n",  # outside our namespace: not mappable onto the mount
        "0::relative/path\n",
        "garbage without colons\n",
        "",
    ],
)
def test_unusable_proc_self_cgroup_falls_back_to_root(tmp_path: Path, proc_content: str) -> None:
    root = v2_tree(tmp_path / "cg", str(GiB))
    # Plant a smaller limit where a naive join of the escaping path would land.
    write(tmp_path / "escape" / "memory.max", "1024")
    proc = write(tmp_path / "proc-cgroup", proc_content)
    assert container_memory_limit(root, proc_self_cgroup=proc) == GiB


# --- physical_memory -------------------------------------------------------------------


def sysconf_total() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_physical_memory_from_meminfo(tmp_path: Path) -> None:
    assert physical_memory(meminfo(tmp_path, 16 * 1024 * 1024)) == 16 * GiB


@pytest.mark.parametrize(
    "content",
    [
        "",
        "MemFree: 1234 kB\n",
        "MemTotal: lots kB\n",
        "MemTotal: 1234 MB\n",
        "MemTotal: 0 kB\n",
        "MemTotal:\n",
    ],
)
def test_physical_memory_garbage_falls_back_to_sysconf(tmp_path: Path, content: str) -> None:
    assert physical_memory(write(tmp_path / "meminfo", content)) == sysconf_total()


def test_physical_memory_missing_falls_back_to_sysconf(tmp_path: Path) -> None:
    assert physical_memory(tmp_path / "absent") == sysconf_total()


# --- default_cache_max_bytes ----------------------------------------------------------


def test_default_uses_half_of_container_limit(tmp_path: Path, no_proc: Path) -> None:
    root = v2_tree(tmp_path / "cg", str(2 * GiB))
    assert (
        default_cache_max_bytes(root, meminfo(tmp_path, 16 * 1024 * 1024), proc_self_cgroup=no_proc)
        == GiB
    )


@pytest.mark.parametrize("memory_max", ["max\n", "garbage\n"])
def test_default_without_limit_uses_half_of_physical(
    tmp_path: Path, no_proc: Path, memory_max: str
) -> None:
    root = v2_tree(tmp_path / "cg", memory_max)
    assert (
        default_cache_max_bytes(root, meminfo(tmp_path, 8 * 1024 * 1024), proc_self_cgroup=no_proc)
        == 4 * GiB
    )


def test_default_v1_unlimited_uses_half_of_physical(tmp_path: Path, no_proc: Path) -> None:
    root = v1_tree(tmp_path / "cg", V1_UNLIMITED)
    assert (
        default_cache_max_bytes(root, meminfo(tmp_path, 8 * 1024 * 1024), proc_self_cgroup=no_proc)
        == 4 * GiB
    )


def test_default_ignores_limit_larger_than_physical(tmp_path: Path, no_proc: Path) -> None:
    root = v1_tree(tmp_path / "cg", str(64 * GiB))
    assert (
        default_cache_max_bytes(root, meminfo(tmp_path, 8 * 1024 * 1024), proc_self_cgroup=no_proc)
        == 4 * GiB
    )


def test_default_missing_everything_uses_sysconf(tmp_path: Path, no_proc: Path) -> None:
    got = default_cache_max_bytes(
        tmp_path / "no-cg", tmp_path / "no-meminfo", proc_self_cgroup=no_proc
    )
    assert got == sysconf_total() // 2


def test_default_never_zero(tmp_path: Path, no_proc: Path) -> None:
    # A 1-byte limit is absurd, but must not yield a budget HotCache rejects.
    root = v2_tree(tmp_path / "cg", "1\n")
    assert default_cache_max_bytes(root, meminfo(tmp_path, 1024), proc_self_cgroup=no_proc) == 1


def test_default_with_real_host_files_is_positive() -> None:
    # Smoke test against whatever host runs the suite: no exact value, but
    # the real /sys and /proc must never make startup fail.
    assert default_cache_max_bytes() > 0
