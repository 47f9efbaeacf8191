"""SVG charts of the benchmarks' JSON output, for docs/performance.md.

    python bench/plots.py [--results bench/results] [--out docs/performance]

Reads ``handlers.json`` (bench/handlers.py) and ``latency.json`` (bench/latency.py) when they
exist and writes one chart per file. Plain SVG written here rather than matplotlib: the charts
are a few bars, and matplotlib (with numpy and pillow) would enter the lock that every install
of the project resolves, for a picture in the docs.
"""

from __future__ import annotations

import argparse
import json
import math
from html import escape
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
COLORS = ("#4C78A8", "#F58518", "#54A24B", "#B279A2")
BAR_H, GAP, LEFT, RIGHT, TOP = 16, 10, 250, 120, 40


def bar_chart(
    title: str, unit: str, groups: list[tuple[str, list[tuple[str, float]]]], log: bool = False
) -> str:
    """Horizontal bars: one group per row label, one bar per series."""
    series = [name for name, _ in groups[0][1]] if groups else []
    values = [v for _, bars in groups for _, v in bars if v > 0]
    top = max(values, default=1.0)
    bottom = min(values, default=1.0)
    width = 760
    plot_w = width - LEFT - RIGHT
    row_h = len(series) * BAR_H + GAP
    height = TOP + len(groups) * row_h + 40

    def scale(v: float) -> float:
        if v <= 0:
            return 0.0
        if log:
            lo = math.log10(bottom) - 0.3
            return plot_w * (math.log10(v) - lo) / (math.log10(top) - lo)
        return plot_w * v / top

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="20" font-size="14" font-weight="bold">{escape(title)}</text>',
    ]
    y = TOP
    for label, bars in groups:
        out.append(
            f'<text x="{LEFT - 8}" y="{y + len(bars) * BAR_H / 2 + 4}" '
            f'text-anchor="end">{escape(label)}</text>'
        )
        for i, (_, value) in enumerate(bars):
            w = max(scale(value), 1.0)
            out.append(
                f'<rect x="{LEFT}" y="{y}" width="{w:.1f}" height="{BAR_H - 2}" '
                f'fill="{COLORS[i % len(COLORS)]}"/>'
            )
            out.append(
                f'<text x="{LEFT + w + 4:.1f}" y="{y + BAR_H - 5}">{value:,.1f} {escape(unit)}</text>'
            )
            y += BAR_H
        y += GAP
    for i, name in enumerate(series):
        x = LEFT + i * 150
        out.append(f'<rect x="{x}" y="{y + 8}" width="12" height="12" fill="{COLORS[i]}"/>')
        out.append(f'<text x="{x + 16}" y="{y + 18}">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def handlers_charts(report: dict[str, Any]) -> dict[str, str]:
    charts: dict[str, str] = {}
    trees = list(report["trees"])
    names = {"this": "this change", "baseline": "baseline"}
    groups_instr: list[tuple[str, list[tuple[str, float]]]] = []
    groups_wall: list[tuple[str, list[tuple[str, float]]]] = []
    for method, modes in report["wall"].get(trees[0], {}).items():
        for mode in modes:
            label = f"{method} {mode}"
            wall = [
                (names.get(t, t), report["wall"][t][method][mode]["median_us"]) for t in trees
            ]
            groups_wall.append((label, wall))
            if "callgrind" in report:
                instr = [
                    (names.get(t, t), report["callgrind"][t][method][mode]["instructions"] / 1000)
                    for t in trees
                ]
                groups_instr.append((label, instr))
    if groups_wall:
        charts["handlers-wall.svg"] = bar_chart(
            "Handler time per call, in-process (median, log scale)", "µs", groups_wall, log=True
        )
    if groups_instr:
        charts["handlers-instructions.svg"] = bar_chart(
            "Instructions per call (callgrind, log scale)", "k", groups_instr, log=True
        )
    return charts


def latency_charts(report: dict[str, Any]) -> dict[str, str]:
    """p50, p99 and p999 of each (method, concurrency): the sidecar beside the no-op server."""
    groups: list[tuple[str, list[tuple[str, float]]]] = []
    for cell in report.get("results", []):
        label = f"{cell['method']} c={cell['concurrency']}"
        for q in ("p50", "p99", "p999"):
            bars = [
                ("sidecar", cell["sidecar"][f"{q}_us"]),
                ("no-op baseline", cell["baseline"][f"{q}_us"]),
            ]
            groups.append((f"{label} {q}", bars))
    if not groups:
        return {}
    title = "gRPC latency percentiles, sidecar vs no-op server (log scale)"
    return {"latency.svg": bar_chart(title, "µs", groups, log=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--out", type=Path, default=BENCH_DIR.parent / "docs" / "performance")
    args = parser.parse_args()
    charts: dict[str, str] = {}
    handlers = args.results / "handlers.json"
    if handlers.exists():
        charts.update(handlers_charts(json.loads(handlers.read_text())))
    latency = args.results / "latency.json"
    if latency.exists():
        charts.update(latency_charts(json.loads(latency.read_text())))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, svg in charts.items():
        (args.out / name).write_text(svg)
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
