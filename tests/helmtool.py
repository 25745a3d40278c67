"""helm for the chart tests: built once from the Go module proxy (cached), run in isolation.

Test modules import the :func:`helm` fixture (``from tests.helmtool import helm``). The first
session on a machine builds helm (about five minutes on two cores); the build's progress is
printed even under pytest's output capture, so that a fresh CI run does not look hung.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv import helm as helm_build

__all__ = ["CHART", "ROOT", "Helm", "helm"]

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "promptloop"


@dataclass(frozen=True)
class Helm:
    """A helm binary with its own (temporary) config, cache and data directories."""

    path: Path
    home: Path

    def env(self) -> dict[str, str]:
        """A minimal environment: no user helm config, repositories or plugins leak in."""
        return {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.home),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }

    def run(
        self, *args: str, check: bool = True, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run helm; ``kubeconfig`` for commands that talk to a cluster."""
        env = self.env()
        if kubeconfig is not None:
            env["KUBECONFIG"] = str(kubeconfig)
        proc = subprocess.run(
            [str(self.path), *args], capture_output=True, text=True, env=env, timeout=120
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def template(
        self, *args: str, release: str = "promptloop", namespace: str = "promptloop-system"
    ) -> list[dict[str, Any]]:
        """``helm template`` of the chart, parsed into objects."""
        out = self.run("template", release, str(CHART), "--namespace", namespace, *args).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="session")
def helm(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Helm]:
    """helm, built on first use into ~/.cache/promptloop/tools (see devenv.helm)."""
    path = helm_build.helm_path()
    if not path.exists():
        capture = request.config.pluginmanager.getplugin("capturemanager")
        # A cold build takes minutes: show its progress lines instead of swallowing them.
        if capture is not None:
            with capture.global_and_fixture_disabled():
                path = helm_build.build()
        else:
            path = helm_build.build()
    yield Helm(path=path, home=tmp_path_factory.mktemp("helm-home"))
