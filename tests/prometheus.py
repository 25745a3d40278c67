"""A real Prometheus server (Debian's ``prometheus`` package, installed by ``.ci/run``) for tests
that exercise the ``prometheus`` metrics provider end to end.

It listens on 127.0.0.1, scrapes the given targets every second, keeps its TSDB in a temporary
directory, and is stopped (SIGTERM, then SIGKILL) when the context ends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devenv.procs import free_port
from tests.integration.harness import wait_for

__all__ = ["PrometheusServer", "prometheus_server"]


@dataclass(frozen=True)
class PrometheusServer:
    """A running server."""

    url: str
    log: Path

    def query(self, promql: str) -> list[dict[str, object]]:
        """An instant query's result vector."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.loads(response.read())
        result: list[dict[str, object]] = body["data"]["result"]
        return result


@contextmanager
def prometheus_server(targets: list[str], workdir: Path) -> Iterator[PrometheusServer]:
    """Start Prometheus scraping ``targets`` (host:port, path /metrics) every second."""
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        raise AssertionError(
            "prometheus is not installed: `apt-get install --no-install-recommends prometheus` "
            "(.ci/run does this)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: agents\n    static_configs:\n"
        f"      - targets: {json.dumps(targets)}\n"
    )
    port = free_port()
    log = workdir / "prometheus.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = PrometheusServer(url=f"http://127.0.0.1:{port}", log=log)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=1) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_for(ready, timeout=60, what="Prometheus to be ready")
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
