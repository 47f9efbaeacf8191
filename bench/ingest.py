"""Ingest rates: upstream's usage and event ingestion next to SQLite's own insert rate, and the
sidecar's event spool (append throughput, ReportEvents acknowledgement latency vs offline mode).

    python bench/ingest.py [--quick]

Everything is measured in this one run on this machine, on fresh files in a temporary directory
(the same file system for all of them):

* **SQLite insert** (the floor under everything else): ~150-byte rows into a plain table, WAL,
  ``synchronous=FULL`` (upstream's and the spool's settings), one row per transaction and 1,000
  rows per transaction.
* **Upstream usage**: ``Metering.report_usage`` (what ``POST /v1/usage`` calls) over 50
  customers, one report per call (one transaction each) and 100 per call (one transaction per
  batch), each with an idempotency key. **Upstream events**: ``Metering.report_events`` (what
  ``POST /v1/events`` calls), 1 and 1,000 events per call, events matching a COUNT meter.
  No HTTP: the rates are upstream's own work (``bench/upstream.py`` measures the HTTP path).
* **Spool append**: ``EventSpool.append`` of 1 event sequentially (one fsync each), of 100
  events sequentially, and of 1 event from 64 concurrent callers (group commit).
* **ReportEvents acknowledgement latency** through gRPC, 10 events per call, with the spool
  (upstream down, so every call is acknowledged from disk) and in offline mode (events
  dropped, nothing written), interleaved, same process, sync gRPC client threads.

``--baseline-ref REF`` also measures the upstream rows with ``upstream/metering.py`` as it is at
git ``REF`` (loaded next to the current one, same process, rounds interleaved), so a change to
upstream's ingestion is compared with its baseline in one run.

Prints a markdown table; writes JSON to ``bench/results/ingest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from entitlements.errors import SourceUnavailable  # noqa: E402
from sidecar.app import Sidecar  # noqa: E402
from sidecar.model.usage import RawEvent  # noqa: E402
from sidecar.pb import sidecar_pb2 as pb  # noqa: E402
from sidecar.pb import sidecar_pb2_grpc as pb_grpc  # noqa: E402
from sidecar.settings import Settings  # noqa: E402
from sidecar.source.memory import InMemorySource  # noqa: E402
from sidecar.spool.store import EventSpool  # noqa: E402
from upstream.catalog import DEMO_CATALOG  # noqa: E402
from upstream.catalog.loader import load_catalog  # noqa: E402
from upstream.metering import EventItem, Metering, UsageItem  # noqa: E402
from upstream.service import SubscriptionRequest, Upstream  # noqa: E402
from upstream.store.sqlite import Store  # noqa: E402

CUSTOMERS = 50


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


# ------------------------------------------------------------------------ SQLite


def sqlite_inserts(path: Path, rows: int, per_tx: int) -> float:
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, payload BLOB)")
    payload = b"x" * 150

    def run() -> None:
        for start in range(0, rows, per_tx):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO t(k, payload) VALUES(?, ?)",
                [(f"k-{i}", payload) for i in range(start, min(start + per_tx, rows))],
            )
            conn.execute("COMMIT")

    seconds = timed(run)
    conn.close()
    return rate(rows, seconds)


# ---------------------------------------------------------------------- upstream


def make_upstream(path: Path, metering: type[Metering] = Metering) -> Metering:
    up = Upstream(Store(str(path)), load_catalog(DEMO_CATALOG))
    for i in range(CUSTOMERS):
        up.provision_customer(f"c{i}", subscription=SubscriptionRequest(f"c{i}", "free"))
    return metering(up)


def metering_at(ref: str, directory: Path) -> type[Metering]:
    """``Metering`` as ``upstream/metering.py`` defines it at git ``ref``."""
    source = subprocess.run(
        ["git", "show", f"{ref}:upstream/metering.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = directory / "metering_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("metering_baseline", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    baseline: type[Metering] = module.Metering
    return baseline


def upstream_rates(
    database: Path, scale: int, metering: type[Metering], label: str
) -> dict[str, float]:
    """Batched ingest over 50 customers, and over one customer (every item one counter)."""
    m = make_upstream(database, metering)
    return {
        f"upstream usage, 100 reports per transaction{label}": usage_rate(
            m, 5000 * scale, 100, "u100"
        ),
        f"upstream events, 1,000 events per transaction{label}": events_rate(
            m, 10_000 * scale, 1000, "e1000"
        ),
        f"upstream usage, 100 reports per transaction, 1 customer{label}": usage_rate(
            m, 5000 * scale, 100, "u100one", customers=1
        ),
        f"upstream events, 1,000 events per transaction, 1 customer{label}": events_rate(
            m, 10_000 * scale, 1000, "e1000one", customers=1
        ),
    }


def usage_rate(
    metering: Metering, reports: int, per_call: int, tag: str, customers: int = CUSTOMERS
) -> float:
    items = [
        UsageItem(f"c{i % customers}", "api-calls", 1, idempotency_key=f"{tag}-{i}")
        for i in range(reports)
    ]
    seconds = timed(
        lambda: [
            metering.report_usage(items[i : i + per_call]) for i in range(0, reports, per_call)
        ]
    )
    return rate(reports, seconds)


def events_rate(
    metering: Metering, events: int, per_call: int, tag: str, customers: int = CUSTOMERS
) -> float:
    items = [
        EventItem("api_request", f"c{i % customers}", f"{tag}-{i}", dimensions={"billable": True})
        for i in range(events)
    ]
    seconds = timed(
        lambda: [
            metering.report_events(items[i : i + per_call]) for i in range(0, events, per_call)
        ]
    )
    return rate(events, seconds)


# ------------------------------------------------------------------------- spool


def raw(i: int) -> RawEvent:
    return RawEvent("api_request", f"c{i % CUSTOMERS}", f"k-{i}", dimensions={"billable": True})


async def spool_rates(directory: Path, n: int) -> dict[str, float]:
    out: dict[str, float] = {}
    spool = EventSpool(directory, 1 << 34)
    await spool.open()
    try:
        started = time.perf_counter()
        for i in range(n):
            await spool.append([raw(i)])
        out["spool append, 1 event per call, sequential"] = rate(n, time.perf_counter() - started)

        started = time.perf_counter()
        for i in range(0, n * 10, 100):
            await spool.append([raw(j) for j in range(i, i + 100)])
        out["spool append, 100 events per call, sequential"] = rate(
            n * 10, time.perf_counter() - started
        )

        queue = list(range(n * 4))

        async def caller() -> None:
            while queue:
                await spool.append([raw(queue.pop())])

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(64)))
        out["spool append, 1 event per call, 64 concurrent"] = rate(
            n * 4, time.perf_counter() - started
        )
    finally:
        await spool.close()
    return out


# ------------------------------------------------------------ ReportEvents latency


def latencies(port: int, calls: int, concurrency: int) -> list[float]:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.SidecarServiceStub(channel)
    lock = threading.Lock()
    counter = iter(range(calls))
    samples: list[float] = []

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            request = pb.ReportEventsRequest(
                events=[
                    pb.Event(event_name="api_request", customer_id="c", idempotency_key=f"{i}-{j}")
                    for j in range(10)
                ]
            )
            started = time.perf_counter()
            stub.ReportEvents(request, timeout=10)
            elapsed = time.perf_counter() - started
            with lock:
                samples.append(elapsed)

    with ThreadPoolExecutor(concurrency) as pool:
        for _ in range(concurrency):
            pool.submit(worker)
    channel.close()
    return samples


def p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000


async def ack_latency(directory: Path, calls: int) -> dict[str, dict[str, float]]:
    base = Settings(port=0, http_port=0, http_bind_address="127.0.0.1")
    down = InMemorySource()
    down.failure = SourceUnavailable("upstream down")  # every call is acknowledged from disk
    spooled = Sidecar(
        replace(base, api_key="k", spool_dir=str(directory), spool_max_bytes=1 << 34), down
    )
    offline = Sidecar(replace(base, offline=True), None)
    pooled: dict[str, list[float]] = {}
    async with spooled, offline:
        for concurrency in (1, 16):
            for round_ in range(2):  # interleaved, so drift lands on both
                order = [("spool", spooled), ("offline", offline)]
                for name, sidecar in order if round_ == 0 else order[::-1]:
                    samples = await asyncio.to_thread(
                        latencies, sidecar.grpc_port, calls, concurrency
                    )
                    key = f"ReportEvents (10 events) {name}, c={concurrency}"
                    pooled.setdefault(key, []).extend(samples)
    results: dict[str, dict[str, float]] = {}
    for key, samples in pooled.items():
        results[key] = {
            "samples": float(len(samples)),
            "p50_ms": p(samples, 0.50),
            "p99_ms": p(samples, 0.99),
            "mean_ms": statistics.fmean(samples) * 1000,
        }
    return results


# -------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows and calls (~20 s)")
    parser.add_argument(
        "--baseline-ref",
        metavar="REF",
        help="also measure upstream's batched ingest with upstream/metering.py at git REF",
    )
    args = parser.parse_args()
    scale = 1 if args.quick else 4
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        rates["SQLite insert, 1 row per transaction"] = sqlite_inserts(d / "a.db", 500 * scale, 1)
        rates["SQLite insert, 1,000 rows per transaction"] = sqlite_inserts(
            d / "b.db", 50_000 * scale, 1000
        )
        metering = make_upstream(d / "up.db")
        rates["upstream usage, 1 report per transaction"] = usage_rate(
            metering, 500 * scale, 1, "u1"
        )
        rates["upstream events, 1 event per transaction"] = events_rate(
            metering, 500 * scale, 1, "e1"
        )
        if args.baseline_ref:
            baseline = metering_at(args.baseline_ref, d)
            for round_ in range(2):  # interleaved, so drift lands on both
                runs = [(Metering, ""), (baseline, f" [{args.baseline_ref}]")]
                for i, (cls, label) in enumerate(runs if round_ == 0 else runs[::-1]):
                    database = d / f"batched-{round_}-{i}.db"
                    for name, value in upstream_rates(database, scale, cls, label).items():
                        # The better of the rounds: noise only ever slows a run down.
                        rates[name] = max(rates.get(name, 0.0), value)
        else:
            rates.update(upstream_rates(d / "batched.db", scale, Metering, ""))
        rates.update(asyncio.run(spool_rates(d / "spool", 500 * scale)))
        latency = asyncio.run(ack_latency(d / "spool-rpc", 1000 * scale))

    print("| what | per second |\n|---|---|")
    for name, value in rates.items():
        print(f"| {name} | {value:,.0f} |")
    print("\n| RPC | calls | p50 ms | p99 ms | mean ms |\n|---|---|---|---|---|")
    for name, entry in latency.items():
        print(
            f"| {name} | {entry['samples']:.0f} | {entry['p50_ms']:.3f} | "
            f"{entry['p99_ms']:.3f} | {entry['mean_ms']:.3f} |"
        )
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "ingest.json").write_text(
        json.dumps({"command": sys.argv, "rates": rates, "latency": latency}, indent=2)
    )


if __name__ == "__main__":
    main()
