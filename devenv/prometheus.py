"""A local Prometheus server (Debian's ``prometheus`` package) for the demo and the e2e tests.

It listens on 127.0.0.1, scrapes every second, keeps its TSDB under the given directory, and
finds its targets either in a fixed list or in a ``file_sd`` JSON file that the process kubelet
rewrites as agent processes come and go (Prometheus watches the file). ``.ci/run`` installs the
package; the package's own service is never used.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from devenv.procs import free_port

__all__ = [
    "PrometheusError",
    "PrometheusServer",
    "prometheus_binary",
    "start_prometheus",
    "write_targets",
]


class PrometheusError(RuntimeError):
    """Prometheus is not installed, or did not become ready."""


@dataclass
class PrometheusServer:
    """A running server; :meth:`stop` ends it."""

    url: str
    pid: int
    log: Path
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period."""
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def prometheus_binary() -> str | None:
    """The installed ``prometheus``, if any."""
    return shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )


def write_targets(path: Path, targets: list[str]) -> None:
    """Write a ``file_sd`` file atomically (Prometheus never reads half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps([{"targets": sorted(targets), "labels": {}}]))
    temporary.replace(path)


def start_prometheus(
    workdir: Path,
    *,
    targets: list[str] | None = None,
    targets_file: Path | None = None,
    timeout: float = 60.0,
) -> PrometheusServer:
    """Start Prometheus scraping ``targets`` and/or those listed in ``targets_file``.

    Raises
    ------
    PrometheusError
        When the binary is missing or the server is not ready within ``timeout`` seconds.
    """
    binary = prometheus_binary()
    if binary is None:
        raise PrometheusError(
            "prometheus is not installed (`apt-get install --no-install-recommends prometheus`)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    scrape = ["scrape_configs:", "  - job_name: agents"]
    if targets:
        scrape += ["    static_configs:", f"      - targets: {json.dumps(targets)}"]
    if targets_file is not None:
        if not targets_file.exists():
            write_targets(targets_file, [])
        scrape += [
            "    file_sd_configs:",
            f"      - files: [{json.dumps(str(targets_file))}]",
            "        refresh_interval: 5s",
        ]
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n" + "\n".join(scrape) + "\n"
    )
    port = free_port()
    log = workdir / "prometheus.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=2h",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = PrometheusServer(
        url=f"http://127.0.0.1:{port}", pid=process.pid, log=log, process=process
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PrometheusError(f"prometheus exited:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=1) as response:
                if response.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.2)
    server.stop()
    raise PrometheusError(f"prometheus was not ready within {timeout:g}s (log: {log})")
