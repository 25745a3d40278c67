"""The ``http`` metrics provider: GET a URL per version that answers ``{"total", "failed"}``.

``spec.metrics.http.url`` holds a ``{{ version }}`` placeholder, replaced by the URL-encoded
version (``2.0.0+build.1`` becomes ``2.0.0%2Bbuild.1``). The answer must be a JSON object with
cumulative, non-negative integer ``total`` and ``failed``, ``failed <= total``; anything else,
and any non-2xx status (404 included: this provider cannot know what a 404 means), is
:class:`~promptloop.metrics.base.MetricsUnavailable`.

Counter contract (:mod:`promptloop.metrics.base`): the endpoint counts a request in ``total``
when its outcome is recorded, together with ``failed``, once per task. If it counts arrivals,
set ``spec.metrics.outcomeLag`` to the longest delay before a failure is counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

import httpx

from promptloop.metrics.base import Counters, MetricsUnavailable, counters_from_json, render_version

__all__ = ["HttpProvider"]


class HttpProvider:
    """Reads counters from a JSON endpoint per version.

    Parameters
    ----------
    url_template
        URL with a ``{{ version }}`` placeholder.
    client
        The shared HTTP client.
    timeout
        Seconds the request may take.
    headers, auth
        Sent with every request (``spec.metrics.http`` headers and credentials, resolved).
    """

    def __init__(
        self,
        url_template: str,
        *,
        client: httpx.AsyncClient,
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
    ):
        self.url_template = url_template
        self._client = client
        self._timeout = timeout
        self._headers = dict(headers or {})
        self._auth = auth

    def __repr__(self) -> str:
        return f"HttpProvider(url_template={self.url_template!r})"

    def url_for(self, version: str) -> str:
        """The URL for ``version``, the version URL-encoded (every reserved character)."""
        return render_version(self.url_template, version, escape=lambda v: quote(v, safe=""))

    async def read(self, version: str) -> Counters:
        """GET the version's counters.

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
            On a connection error, a non-2xx status, or a malformed body.
        """
        url = self.url_for(version)
        try:
            response = await self._client.get(
                url,
                timeout=self._timeout,
                headers=self._headers,
                auth=self._auth if self._auth is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as error:
            raise MetricsUnavailable(
                f"metrics endpoint {url} unreachable: {type(error).__name__}: {error}"
            ) from None
        if response.status_code in (401, 403):
            raise MetricsUnavailable(
                f"metrics endpoint {url} answered HTTP {response.status_code}: check the "
                "credentials in spec.metrics.http"
            )
        if not 200 <= response.status_code < 300:
            raise MetricsUnavailable(f"metrics endpoint {url} answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise MetricsUnavailable(f"metrics endpoint {url} did not answer JSON") from None
        return counters_from_json(body, f"metrics endpoint {url}")
