"""``WORKERS=N``: N sidecar processes on the same ports, for the standalone deployment.

One grpc.aio process serves from one core: its event loop, evaluation and protobuf work all
hold the GIL. The standalone deployment, on a node with cores to spare, runs N whole sidecars
instead, each binding the same gRPC and HTTP ports with SO_REUSEPORT so the kernel spreads
connections across them. They share nothing in the process (each has its own hot cache, its own
change stream or Redis subscription, its own spool directory), so each stays coherent on its
own, exactly as N pods would.

The supervisor is deliberately thin: it starts the workers as fresh interpreters (no fork: gRPC
and event loops do not survive one), forwards SIGTERM/SIGINT, and when a worker dies unasked
it stops the others and exits non-zero, so the orchestrator restarts the pod as a whole rather
than leave it serving at reduced capacity without anyone noticing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from types import FrameType

import structlog

from sidecar.settings import Settings

log = structlog.get_logger("sidecar.workers")

#: Set in a worker's environment: it then serves alone, sharing the ports.
WORKER_ENV = "ENTITLEMENT_SIDECAR_WORKER"


def worker_index(env: Mapping[str, str]) -> int | None:
    """This process's worker number, or None when it is not a supervised worker."""
    raw = env.get(WORKER_ENV)
    return int(raw) if raw is not None and raw.isdigit() else None


def worker_spool_dir(spool_dir: str, index: int) -> str:
    # One spool per worker: a spool belongs to one process at a time (it is locked).
    return f"{spool_dir.rstrip('/')}/worker-{index}" if spool_dir else ""


def supervise(settings: Settings) -> int:
    """Run ``settings.workers`` workers until a signal stops them; the exit status to use."""
    stopping = threading.Event()
    workers: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        stopping.set()
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    for index in range(settings.workers):
        if stopping.is_set():
            break
        env = {**os.environ, WORKER_ENV: str(index)}
        workers.append(subprocess.Popen([sys.executable, "-m", "sidecar.main"], env=env))
    log.info("workers_started", workers=len(workers), pids=[w.pid for w in workers])
    failed = _wait_for_any(workers, stopping)
    if failed is not None and not stopping.is_set():
        log.error("worker_exited", pid=failed.pid, status=failed.returncode)
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
    statuses = [worker.wait() for worker in workers]
    log.info("workers_stopped", statuses=statuses)
    if failed is not None and not stopping.is_set():
        return 1
    return 0 if all(status == 0 for status in statuses) else 1


def _wait_for_any(
    workers: list[subprocess.Popen[bytes]], stopping: threading.Event
) -> subprocess.Popen[bytes] | None:
    """The first worker to exit (None if a signal came first and all have exited since)."""
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return None
        except InterruptedError:  # pragma: no cover - PEP 475 retries os.wait itself
            continue
        for worker in workers:
            if worker.pid == pid:
                worker.returncode = os.waitstatus_to_exitcode(status)
                return worker
        if stopping.is_set() and all(w.returncode is not None for w in workers):
            return None
