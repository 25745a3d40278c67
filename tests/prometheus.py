"""A real Prometheus server for tests (devenv.prometheus; Debian's package, installed by
``.ci/run``), as a context manager with an instant-query helper."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devenv.prometheus import PrometheusError, start_prometheus

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
    """Prometheus scraping ``targets`` (host:port, path /metrics) every second."""
    try:
        server = start_prometheus(workdir, targets=targets)
    except PrometheusError as error:
        raise AssertionError(f"{error} (.ci/run installs it)") from None
    try:
        yield PrometheusServer(url=server.url, log=server.log)
    finally:
        server.stop()
