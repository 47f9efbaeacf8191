"""Evaluated answers of a plan with a credit wallet and a credit-backed feature, in-process.

What ``sidecar.api.answers.Answers`` costs, plans warm, on ``tests.builders.demo_snapshot``
(six features, one of them credit-backed, and a wallet with currency metadata): the V2 and v1
lists, and ``GetMeteredEntitlement``'s answer for the credit-backed feature as the servicer
builds it (``Answers.metered``, or the reference path when that returns None). Each figure is
the median, over ``--batches`` batches, of a batch's mean per call (``--calls`` calls), in µs.

    python bench/credit_answers.py
    git archive <rev> | (mkdir -p /tmp/base && tar -x -C /tmp/base)
    python bench/credit_answers.py --tree /tmp/base     # the same answers on another tree

``--only NAME --count N`` makes N calls of one answer and nothing else, for an instruction
count (run it twice, with N and with 0, under ``valgrind --tool=cachegrind --cache-sim=no``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def answers() -> dict[str, Callable[[], bytes]]:
    from sidecar.api import convert
    from sidecar.api.answers import Answers
    from sidecar.evaluation.getters import Kind, typed_entitlement
    from sidecar.pb import sidecar_pb2 as pb
    from tests.builders import NOW, demo_snapshot

    snapshot = demo_snapshot("c")
    assert snapshot.state.credits
    assert any(e.credit_rate is not None for e in snapshot.state.features.values())
    made = Answers()

    def metered() -> bytes:
        fast = made.metered(snapshot, "ai-tokens", NOW, 1.0)
        if fast is not None:
            return fast[0]
        # What the servicer does when the fast path declines (sidecar/api/servicer.py).
        result = typed_entitlement(
            snapshot, Kind.METERED, "ai-tokens", NOW, requested_usage=1.0, global_fallbacks={}
        )
        message = pb.GetMeteredEntitlementResponse(
            **convert.header(result), requested_usage=1.0, entitlement=convert.metered(result)
        )
        return message.SerializeToString()

    found: dict[str, Callable[[], bytes]] = {
        "list_v2": lambda: made.entitlement_list(snapshot, NOW, v2=True),
        "list_v1": lambda: made.entitlement_list(snapshot, NOW, v2=False),
        "metered_credit_backed": metered,
    }
    for call in found.values():
        call()  # plans warm
    return found


def median_us(call: Callable[[], bytes], calls: int, batches: int) -> float:
    means = []
    for _ in range(batches):
        started = time.perf_counter_ns()
        for _ in range(calls):
            call()
        means.append((time.perf_counter_ns() - started) / calls / 1000)
    return statistics.median(means)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=BENCH_DIR.parent, help="the tree to measure")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--only", help="one answer's name: count calls, print nothing")
    parser.add_argument("--count", type=int, default=0)
    args = parser.parse_args()
    tree = args.tree.resolve()
    sys.path[:0] = [str(tree)]
    found = answers()
    import sidecar.api.answers as module

    assert Path(module.__file__).resolve().is_relative_to(tree), module.__file__
    if args.only:
        call = found[args.only]
        for _ in range(args.count):
            call()
        return
    print(f"tree {tree}: medians of {args.batches} batches of {args.calls} calls, µs per call")
    for name, call in found.items():
        print(f"{name:24} {median_us(call, args.calls, args.batches):8.2f}")


if __name__ == "__main__":
    main()
