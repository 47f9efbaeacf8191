"""Fixtures of the chart tests: the chart loaded once, each scenario rendered once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import helm_python
import pytest

from tests.chart.chart_support import (
    CHART_DIR,
    Manifest,
    copy_parent_chart,
    render,
    scenario_values,
)


@pytest.fixture(scope="session")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART_DIR) as loaded:
        yield loaded


class Renders:
    """Each ci/<scenario>.yaml rendered once (renders are pure, so sharing them is safe)."""

    def __init__(self, chart: helm_python.Chart) -> None:
        self._chart = chart
        self._cache: dict[str, list[Manifest]] = {}

    def __call__(self, scenario: str) -> list[Manifest]:
        if scenario not in self._cache:
            self._cache[scenario] = render(self._chart, scenario_values(scenario))
        return self._cache[scenario]


@pytest.fixture(scope="session")
def renders(chart: helm_python.Chart) -> Renders:
    return Renders(chart)


@pytest.fixture(scope="session")
def parent_chart_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_parent_chart(tmp_path_factory.mktemp("parent"))


@pytest.fixture(scope="session")
def parent_chart(parent_chart_dir: Path) -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(parent_chart_dir) as loaded:
        yield loaded
