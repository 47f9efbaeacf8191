"""``WORKERS=N``: N whole sidecars sharing the ports, supervised as one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from sidecar.pb import sidecar_pb2 as pb
from sidecar.pb import sidecar_pb2_grpc as pb_grpc
from tests.redis_server import free_port

pytestmark = pytest.mark.timeout(120)
DEADLINE = 30.0


def listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(inode)
    return inodes


def socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[len("socket:[") : -1])
    return found


class Supervisor:
    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.log = tmp_path / "sidecar.log"
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sidecar.main"],
                env={**os.environ, "LOG_FORMAT": "json", **env},
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )

    def events(self, name: str) -> list[dict[str, object]]:
        found = []
        for line in self.log.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == name:
                found.append(event)
        return found

    def wait_for(self, name: str, count: int = 1) -> list[dict[str, object]]:
        deadline = time.monotonic() + DEADLINE
        while len(found := self.events(name)) < count:
            assert self.proc.poll() is None or name.endswith("stopped"), self.log.read_text()
            assert time.monotonic() < deadline, f"no {name} line:\n{self.log.read_text()}"
            time.sleep(0.02)
        return found

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_workers_share_both_ports_and_stop_together(tmp_path: Path) -> None:
    port, http_port = free_port(), free_port()
    sup = Supervisor(tmp_path, OFFLINE="1", WORKERS="2", PORT=str(port), HTTP_PORT=str(http_port))
    try:
        pids = sup.wait_for("workers_started")[0]["pids"]
        assert isinstance(pids, list) and len(pids) == 2
        ready = sup.wait_for("sidecar_ready", count=2)
        assert sorted(int(str(e["worker"])) for e in ready) == [0, 1]
        # Each worker holds a listening socket of its own on both ports (SO_REUSEPORT).
        for pid in pids:
            assert listening_inodes(port) & socket_inodes(int(pid)), f"worker {pid}: gRPC port"
            assert listening_inodes(http_port) & socket_inodes(int(pid)), f"worker {pid}: HTTP"
        for _ in range(20):  # new connections, spread by the kernel; every one is answered
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                answer = pb_grpc.SidecarServiceStub(channel).GetBooleanEntitlement(
                    pb.GetBooleanEntitlementRequest(customer_id="c", feature_id="f"), timeout=10
                )
                assert answer.is_fallback
        sup.proc.send_signal(signal.SIGTERM)
        assert sup.proc.wait(timeout=DEADLINE) == 0
        for pid in pids:
            assert (
                not Path(f"/proc/{pid}").exists()
                or "zombie" in Path(f"/proc/{pid}/status").read_text()
            )
    finally:
        sup.kill()


def test_a_worker_that_dies_takes_the_pod_down(tmp_path: Path) -> None:
    sup = Supervisor(
        tmp_path, OFFLINE="1", WORKERS="2", PORT=str(free_port()), HTTP_PORT=str(free_port())
    )
    try:
        pids = sup.wait_for("workers_started")[0]["pids"]
        assert isinstance(pids, list)
        sup.wait_for("sidecar_ready", count=2)
        os.kill(int(pids[0]), signal.SIGKILL)
        assert sup.proc.wait(timeout=DEADLINE) == 1
        exited = sup.events("worker_exited")
        assert exited and exited[0]["pid"] == pids[0]
    finally:
        sup.kill()


def test_workers_need_fixed_ports() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sidecar.main"],
        env={**os.environ, "OFFLINE": "1", "WORKERS": "2", "PORT": "0", "HTTP_PORT": "0"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "PORT: must be a fixed port with WORKERS > 1" in done.stderr
    assert "HTTP_PORT: must be a fixed port with WORKERS > 1" in done.stderr
