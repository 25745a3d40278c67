"""The ``prometheus`` metrics provider: two PromQL instant queries per version.

``spec.metrics.prometheus.totalQuery`` and ``failedQuery`` hold a ``{{ version }}`` placeholder,
normally inside a label matcher such as ``sum(agent_requests_total{version="{{ version }}"})``;
the version is escaped for a double-quoted PromQL string. Both queries go to
``GET {url}/api/v1/query`` with the same evaluation ``time``, so total and failed describe the
same instant.

The answer's samples are summed (an instant vector of several series, or a scalar) and rounded
to an integer (``increase()`` and friends can return fractions). An **empty** vector counts as 0,
but only because the query itself succeeded (``"status": "success"``): the series simply do not
exist yet, which is what a version that has served nothing looks like. A failed query, a
non-finite or negative value, or ``failed > total`` is
:class:`~promptloop.metrics.base.MetricsUnavailable`.

Counter contract (:mod:`promptloop.metrics.base`): ``totalQuery`` must count requests whose
outcome is recorded (the example classifier's ``classifier_outcomes_total``), not arrivals
(``classifier_requests_total``); otherwise set ``spec.metrics.outcomeLag``. Query the raw
counters (``sum(...)``), not ``rate()``: the operator takes the increments itself and treats a
counter that goes back as a reset, as ``increase()`` does.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from typing import Any

import httpx

from promptloop.metrics.base import Counters, MetricsUnavailable, render_version

__all__ = ["PrometheusProvider", "promql_string_escape"]


def promql_string_escape(value: str) -> str:
    """Escape a value for use inside a double-quoted PromQL string."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


class PrometheusProvider:
    """Reads counters with PromQL.

    Parameters
    ----------
    url
        Base URL of the Prometheus server.
    total_query, failed_query
        PromQL with a ``{{ version }}`` placeholder each.
    client
        The shared HTTP client.
    timeout
        Seconds each query may take.
    headers, auth
        Sent with every query (``spec.metrics.prometheus`` headers and credentials, resolved).
    """

    def __init__(
        self,
        url: str,
        *,
        total_query: str,
        failed_query: str,
        client: httpx.AsyncClient,
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.total_query = total_query
        self.failed_query = failed_query
        self._client = client
        self._timeout = timeout
        self._headers = dict(headers or {})
        self._auth = auth

    def __repr__(self) -> str:
        return f"PrometheusProvider(url={self.url!r})"

    def query_for(self, template: str, version: str) -> str:
        """A query with the version put in, escaped for a PromQL string."""
        return render_version(template, version, escape=promql_string_escape)

    async def read(self, version: str) -> Counters:
        """Run both queries for ``version`` at one instant.

        Parameters
        ----------
        version
            The version.

        Returns
        -------
        Counters
            The cumulative counters.

        Raises
        ------
        MetricsUnavailable
            When either query fails or answers something unusable.
        """
        at = f"{time.time():.3f}"
        total, failed = await asyncio.gather(
            self._scalar(self.query_for(self.total_query, version), at),
            self._scalar(self.query_for(self.failed_query, version), at),
        )
        try:
            return Counters(total=total, failed=failed)
        except ValueError as error:
            raise MetricsUnavailable(
                f"Prometheus at {self.url} gave inconsistent counters for {version!r}: {error}"
            ) from None

    async def _scalar(self, query: str, at: str) -> int:
        where = f"Prometheus at {self.url}, query {query!r}"
        try:
            response = await self._client.get(
                f"{self.url}/api/v1/query",
                params={"query": query, "time": at},
                timeout=self._timeout,
                headers=self._headers,
                auth=self._auth if self._auth is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as error:
            raise MetricsUnavailable(f"{where}: {type(error).__name__}: {error}") from None
        if response.status_code in (401, 403):
            raise MetricsUnavailable(
                f"{where}: HTTP {response.status_code}: check the credentials in "
                "spec.metrics.prometheus"
            )
        try:
            body = response.json()
        except ValueError:
            raise MetricsUnavailable(f"{where}: HTTP {response.status_code}, not JSON") from None
        if (
            response.status_code != 200
            or not isinstance(body, dict)
            or body.get("status") != "success"
        ):
            detail = body.get("error") if isinstance(body, dict) else None
            raise MetricsUnavailable(f"{where}: HTTP {response.status_code}: {detail or body!r}")
        return _sum_result(body.get("data"), where)


def _sum_result(data: Any, where: str) -> int:
    if not isinstance(data, dict):
        raise MetricsUnavailable(f"{where}: no data in the answer")
    result_type = data.get("resultType")
    result = data.get("result")
    if result_type == "vector" and isinstance(result, list):
        samples = [item.get("value") if isinstance(item, dict) else None for item in result]
    elif result_type == "scalar":
        samples = [result]
    else:
        raise MetricsUnavailable(f"{where}: expected an instant vector, got {result_type!r}")
    total = 0.0
    for sample in samples:
        if not isinstance(sample, list) or len(sample) != 2:
            raise MetricsUnavailable(f"{where}: malformed sample {sample!r}")
        try:
            value = float(sample[1])
        except (TypeError, ValueError):
            raise MetricsUnavailable(
                f"{where}: sample value {sample[1]!r} is not a number"
            ) from None
        if not math.isfinite(value) or value < 0:
            raise MetricsUnavailable(f"{where}: sample value {value} is not a count")
        total += value
    return round(total)
