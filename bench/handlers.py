"""Handler cost in-process: memoized, evaluated and cold answers, wall clock and instructions.

    python bench/handlers.py                              # wall clock, this checkout
    python bench/handlers.py --callgrind                  # + instructions per call (valgrind)
    python bench/handlers.py --callgrind --baseline-tree /tmp/base   # + the same for another tree

No gRPC and no network: the servicer's handler is awaited directly, so what is timed is
validation, the hot-cache lookup, and then either the memo lookup or the evaluation,
conversion and serialization. Methods: GetEntitlementsStateV2 (20 entitlements),
GetMeteredEntitlement (the 6 metered features, ``requested_usage = 1``) and GetEntitlement
(all 20 features), over ``--customers`` customers of ``_fixture.py``'s plan.

Modes, each on a fresh service and servicer:

* ``memoized``: the servicer as shipped, memo warm (every question asked once before);
* ``after-usage``: as shipped, but before each call (untimed) a usage change for the asked
  feature (the list: one of the customer's metered features) replaces the snapshot, as a
  usage report's write-back does: the read after a usage report;
* ``evaluated``: memoization off (``MAX_VIEWS = 0``): every call evaluates, converts and
  serializes; caches keyed by the entitlement state (which a usage change keeps) stay warm;
* ``cold``: as ``evaluated`` with those caches off too (``MAX_PLANS = 0`` where the tree has
  them): the first read of a state just fetched.

Wall clock: every call is timed on its own (``perf_counter_ns``); the median over all calls of
all rounds is reported (robust against other jobs on the host). ``--callgrind`` runs the same
modes once more per tree in one process under ``valgrind --tool=callgrind``: the counters are
zeroed right before and dumped right after each mode's calls (markers: ``os.getppid`` and
``os.getpgrp``), so setup and imports are excluded; ``after-usage`` subtracts a region applying
the same number of usage changes alone. Instruction counts are repeatable under load, wall clock
is not. ``--baseline-tree DIR`` measures another checkout (e.g. ``git archive main | tar -x -C
DIR``) with this same script, in the same run; ratios are this tree / the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent

METHODS = ("GetEntitlementsStateV2", "GetMeteredEntitlement", "GetEntitlement")
MODES = ("memoized", "after-usage", "evaluated", "cold")
# after-usage applies to the answers a usage change can alter.
APPLIES = {
    "GetEntitlementsStateV2": MODES,
    "GetMeteredEntitlement": MODES,
    "GetEntitlement": ("memoized", "evaluated", "cold"),
}
TARGETS_US = {"GetEntitlementsStateV2": 60.0, "GetMeteredEntitlement": 10.0}


def _import_tree(tree: Path) -> None:
    """Import ``sidecar`` (and friends) from ``tree``, this script's fixture from bench/."""
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
    sys.path.insert(0, str(tree))
    sys.path.insert(1, str(BENCH_DIR))


class Setup:
    """One service and servicer over ``customers`` customers, in one mode."""

    def __init__(self, method: str, mode: str, customers: int) -> None:
        import _fixture as fx

        import sidecar.api.servicer as servicer_module
        import sidecar.service.entitlements as entitlements
        from sidecar.cache.hot_cache import HotCache
        from sidecar.observability import Metrics
        from sidecar.pb import sidecar_pb2 as pb
        from sidecar.service.entitlements import CacheEntry, EntitlementService
        from sidecar.source.base import Resync, UsageChanged
        from sidecar.source.memory import InMemorySource

        shipped = getattr(entitlements, "_SHIPPED_MAX_VIEWS", None)
        if shipped is None:
            entitlements._SHIPPED_MAX_VIEWS = shipped = entitlements.MAX_VIEWS  # type: ignore[attr-defined]
        entitlements.MAX_VIEWS = shipped if mode in ("memoized", "after-usage") else 0
        # Trees without per-state caches simply have no MAX_PLANS: cold == evaluated there.
        answers = sys.modules.get("sidecar.api.answers")
        if answers is not None:
            default = getattr(answers, "_SHIPPED_MAX_PLANS", None)
            if default is None:
                answers._SHIPPED_MAX_PLANS = default = answers.MAX_PLANS  # type: ignore[attr-defined]
            answers.MAX_PLANS = 0 if mode == "cold" else default  # type: ignore[attr-defined]

        source = InMemorySource()
        self.now = datetime.now(UTC)
        snapshots = [fx.build_snapshot(k, self.now) for k in range(customers)]
        for snapshot in snapshots:
            source.put(snapshot)
        metrics = Metrics()
        self.service = EntitlementService(
            source=source, cache=HotCache[CacheEntry](2**30), metrics=metrics
        )
        self.service.apply(Resync())  # the change stream is live: entries are trusted
        servicer = servicer_module.SidecarServicer(self.service, metrics, {})
        self.handler = getattr(servicer, method)
        self.requests: list[Any] = []
        # The usage change to apply before each request (after-usage), per request.
        self.touch: list[tuple[str, str]] = []
        for k in range(customers):
            cid = fx.customer_id(k)
            if method == "GetEntitlementsStateV2":
                self.requests.append(pb.GetEntitlementsStateV2Request(customer_id=cid))
                self.touch.append((cid, fx.METERED_IDS[k % len(fx.METERED_IDS)]))
            elif method == "GetMeteredEntitlement":
                for fid in fx.METERED_IDS:
                    options = pb.MeteredEntitlementOptions(requested_usage=1.0)
                    self.requests.append(
                        pb.GetMeteredEntitlementRequest(
                            customer_id=cid, feature_id=fid, options=options
                        )
                    )
                    self.touch.append((cid, fid))
            else:
                for fid in fx.ALL_FEATURE_IDS:
                    self.requests.append(pb.GetEntitlementRequest(customer_id=cid, feature_id=fid))
                    self.touch.append((cid, fid))
        self._records = {
            (fx.customer_id(k), fid): rec
            for k, s in enumerate(snapshots)
            for fid, rec in s.feature_usage.items()
        }
        self._version = 1000
        self._usage_changed = UsageChanged

    def changes(self, passes: int) -> list[Any]:
        """One usage change per request per pass, each newer than the last."""
        from dataclasses import replace

        out = []
        for _ in range(passes):
            for cid, fid in self.touch:
                self._version += 1
                record = replace(self._records[(cid, fid)], version=self._version)
                out.append(self._usage_changed(cid, None, fid, None, record))
        return out

    async def warm(self) -> None:
        for request in self.requests:  # fills the hot cache, and the memo when it is on
            await self.handler(request, None)


async def _wall(setup: Setup, mode: str, passes: int) -> list[int]:
    handler, requests, apply = setup.handler, setup.requests, setup.service.apply
    changes = iter(setup.changes(passes)) if mode == "after-usage" else None
    perf = time.perf_counter_ns
    samples: list[int] = []
    for _ in range(passes):
        for request in requests:
            if changes is not None:
                apply(next(changes))
            started = perf()
            await handler(request, None)
            samples.append(perf() - started)
    return samples


def wall_clock(tree: Path, customers: int, passes: int, rounds: int) -> dict[str, dict[str, Any]]:
    _import_tree(tree)
    from entitlements.logs import configure_logging

    configure_logging("warn", "json", service="bench-handlers")
    out: dict[str, dict[str, Any]] = {}
    for method in METHODS:
        samples: dict[str, list[int]] = {mode: [] for mode in APPLIES[method]}
        for round_ in range(rounds):
            order = list(APPLIES[method])
            if round_ % 2:
                order.reverse()  # drift lands on every mode alike
            for mode in order:
                setup = Setup(method, mode, customers)

                async def run(setup: Setup = setup, mode: str = mode) -> list[int]:
                    await setup.warm()
                    return await _wall(setup, mode, passes)

                samples[mode] += asyncio.run(run())
        out[method] = {
            mode: {
                "median_us": statistics.median(values) / 1000,
                "mean_us": statistics.fmean(values) / 1000,
                "calls": len(values),
            }
            for mode, values in samples.items()
        }
    return out


# ------------------------------------------------------------------- callgrind


def _region(body: Callable[[], None]) -> None:
    # callgrind runs with --zero-before=os_getppid --dump-before=os_getpgrp: one dump per region.
    os.getppid()
    body()
    os.getpgrp()


def _regions_of(setup: Setup, method: str, mode: str, passes: int) -> list[dict[str, Any]]:
    """Run one mode's measured region(s); what each region was, in dump order."""
    loop = asyncio.new_event_loop()
    loop.run_until_complete(setup.warm())
    handler, requests, apply = setup.handler, setup.requests, setup.service.apply
    calls = passes * len(requests)
    changes = iter(setup.changes(passes)) if mode == "after-usage" else None

    async def run() -> None:
        for _ in range(passes):
            for request in requests:
                if changes is not None:
                    apply(next(changes))
                await handler(request, None)

    _region(lambda: loop.run_until_complete(run()))
    regions = [{"method": method, "mode": mode, "part": "total", "calls": calls}]
    if mode == "after-usage":
        spare = setup.changes(passes)  # newer still: applying them alone does the same work

        def apply_all() -> None:
            for change in spare:
                apply(change)

        _region(apply_all)
        regions.append({"method": method, "mode": mode, "part": "apply", "calls": calls})
    loop.close()
    return regions


def callgrind_child(tree: Path, customers: int, passes: int, plan_path: Path) -> None:
    """Runs under valgrind: one region per (method, mode); writes which region is which."""
    _import_tree(tree)
    from entitlements.logs import configure_logging

    configure_logging("warn", "json", service="bench-handlers")
    regions: list[dict[str, Any]] = []
    for method in METHODS:
        for mode in APPLIES[method]:
            regions += _regions_of(Setup(method, mode, customers), method, mode, passes)
    plan_path.write_text(json.dumps(regions))


def callgrind(tree: Path, customers: int, passes: int) -> dict[str, dict[str, Any]]:
    """Instructions per call of every (method, mode), measured on ``tree``."""
    with tempfile.TemporaryDirectory(prefix="bench-handlers-") as tmp:
        out_file = Path(tmp) / "cg.out"
        plan = Path(tmp) / "regions.json"
        command = [
            "valgrind",
            "--tool=callgrind",
            "--zero-before=os_getppid",
            "--dump-before=os_getpgrp",
            f"--callgrind-out-file={out_file}",
            sys.executable,
            str(Path(__file__).resolve()),
            "--callgrind-child",
            str(tree),
            "--customers",
            str(customers),
            "--passes",
            str(passes),
            "--regions",
            str(plan),
        ]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        regions = json.loads(plan.read_text())
        totals = []
        for part in range(1, len(regions) + 1):
            text = Path(f"{out_file}.{part}").read_text()
            match = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
            assert match, f"no totals in dump {part}"
            totals.append(int(match.group(1)))
    out: dict[str, dict[str, Any]] = {}
    for region, instructions in zip(regions, totals, strict=True):
        cell = out.setdefault(region["method"], {}).setdefault(region["mode"], {})
        cell[region["part"]] = instructions / region["calls"]
    for cells in out.values():
        for cell in cells.values():
            cell["instructions"] = cell["total"] - cell.get("apply", 0.0)
    return out


# ---------------------------------------------------------------------- report


def render(report: dict[str, Any]) -> str:
    trees = report["trees"]
    lines = []
    for method in METHODS:
        lines.append(f"\n{method}")
        header = "| mode | " + " | ".join(
            f"{name} µs (median) | {name} instructions" for name in trees
        )
        if len(trees) == 2:
            header += " | µs ratio | instructions ratio"
        lines.append(header + " |")
        lines.append("|" + "---|" * (header.count("|")))
        for mode in APPLIES[method]:
            cells = [mode]
            values = []
            for name in trees:
                wall = (
                    report["wall"]
                    .get(name, {})
                    .get(method, {})
                    .get(mode, {})
                    .get("median_us", float("nan"))
                )
                instr = report.get("callgrind", {}).get(name, {}).get(method, {}).get(mode, {})
                n = instr.get("instructions")
                values.append((wall, n))
                cells += [f"{wall:.1f}", f"{n / 1000:,.0f} k" if n else "-"]
            if len(trees) == 2:
                (w_new, n_new), (w_old, n_old) = values
                cells.append(f"{w_new / w_old:.2f}" if w_old == w_old else "-")
                cells.append(f"{n_new / n_old:.2f}" if n_new and n_old else "-")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--callgrind", action="store_true", help="also count instructions")
    parser.add_argument("--callgrind-customers", type=int, default=20)
    parser.add_argument("--baseline-tree", type=Path, help="another checkout to measure alike")
    parser.add_argument("--skip-wall", action="store_true")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "handlers.json")
    parser.add_argument("--callgrind-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--regions", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--wall-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.callgrind_child:
        callgrind_child(args.callgrind_child, args.customers, args.passes, args.regions)
        return
    if args.wall_child:
        result = wall_clock(args.wall_child, args.customers, args.passes, args.rounds)
        print(json.dumps(result))
        return
    trees = {"this": ROOT}
    if args.baseline_tree:
        trees["baseline"] = args.baseline_tree.resolve()
    report: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "trees": {name: str(path) for name, path in trees.items()},
        "customers": args.customers,
        "wall": {},
    }
    if not args.skip_wall:
        # Each tree in its own interpreter (they are different versions of the same packages),
        # one round at a time, trees alternating, so drift on the host lands on all of them;
        # reported: the median over rounds of each round's median call.
        per_round: dict[str, list[dict[str, dict[str, Any]]]] = {name: [] for name in trees}
        for round_ in range(args.rounds):
            names = list(trees) if round_ % 2 == 0 else list(reversed(trees))
            for name in names:
                child = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--wall-child",
                    str(trees[name]),
                    "--customers",
                    str(args.customers),
                    "--passes",
                    str(args.passes),
                    "--rounds",
                    "1",
                ]
                done = subprocess.run(child, check=True, capture_output=True, text=True)
                per_round[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
        for name, rounds in per_round.items():
            report["wall"][name] = {
                method: {
                    mode: {
                        "median_us": statistics.median(
                            r[method][mode]["median_us"] for r in rounds
                        ),
                        "per_round_median_us": [r[method][mode]["median_us"] for r in rounds],
                        "mean_us": statistics.median(r[method][mode]["mean_us"] for r in rounds),
                    }
                    for mode in APPLIES[method]
                }
                for method in METHODS
            }
    if args.callgrind:
        report["callgrind"] = {
            name: callgrind(path, args.callgrind_customers, 1) for name, path in trees.items()
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(render(report))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
