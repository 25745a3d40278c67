"""`make lint` enforces the layers (pyproject's ``[tool.importlinter]``): a copy of the package
with one forbidden import fails the same check, and names the broken contract."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # The pure core reaching up into the reconciler.
        ("rollout/advance.py", "import promptloop.reconciler", "handlers -> reconciler"),
        # The pure core doing I/O.
        ("render/challenger.py", "import httpx", "are pure: no I/O library"),
        # A handler talking to the API server without k8s/.
        ("handlers/rollouts.py", "import kubernetes_asyncio", "only k8s/ imports"),
    ],
)
def test_a_broken_layer_fails_lint(tmp_path: Path, module: str, line: str, contract: str) -> None:
    shutil.copytree(ROOT / "operator" / "promptloop", tmp_path / "promptloop")
    target = tmp_path / "promptloop" / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    result = subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout
