"""The HTTP client the AgentField connector shares: httpx's API over aiohttp's connections.

At 1,000 rollouts the operator sends AgentField ~125 requests a second from one event loop, and
py-spy put about half of that loop's time in httpcore's pool bookkeeping (docs/scale-and-ha.md).
aiohttp (already installed for kopf) parses HTTP in C and keeps a cheaper pool; ``httpx-aiohttp``
puts it under an ordinary ``httpx.AsyncClient``, so the connector's code, timeouts and exceptions
do not change.

Only the connector uses it. aiohttp sends header names in lower case (legal HTTP, but a user's
webhook receiver or metrics backend may compare them case-sensitively), so notifications and user
metrics backends keep the plain httpx client. AgentField is Go, whose ``net/http`` canonicalises
header names.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Mapping

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

__all__ = ["connector_client"]


class _Transport(AiohttpTransport):
    """``AiohttpTransport`` naming connection failures as httpx would.

    httpx-aiohttp 0.2 maps every ``aiohttp.ClientConnectionError`` it does not know better to
    ``httpx.ConnectTimeout``, so a refused connection would read "ConnectTimeout" in the
    rollout's conditions and logs. Both are ``httpx.TransportError`` (the connector retries
    either way); only the name a person reads changes.
    """

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except httpx.ConnectTimeout as error:
            cause = error.__cause__
            if isinstance(cause, aiohttp.ServerTimeoutError):
                raise
            if isinstance(cause, aiohttp.ClientConnectorError):
                raise httpx.ConnectError(str(cause), request=request) from cause
            if isinstance(cause, aiohttp.ServerDisconnectedError):
                raise httpx.RemoteProtocolError(str(cause), request=request) from cause
            if isinstance(cause, aiohttp.ClientConnectionError):
                raise httpx.ReadError(str(cause), request=request) from cause
            raise


class _ProxyRouting(httpx.AsyncBaseTransport):
    """One aiohttp session; each request direct or through the environment's proxy for its host.

    httpx reads ``HTTP(S)_PROXY``/``ALL_PROXY``/``NO_PROXY`` once, when a client is built; so
    does this. (aiohttp's own ``trust_env`` would read them, and the ``.netrc`` file, on every
    request: ~1 ms of the event loop each, more than the request itself.) Whether a host is in
    ``NO_PROXY`` is decided at its first request, once per scheme and host.
    """

    def __init__(
        self, make_session: Callable[[], aiohttp.ClientSession], proxies: Mapping[str, str]
    ) -> None:
        self._make_session = make_session
        self._session: aiohttp.ClientSession | None = None
        self._proxies = dict(proxies)
        self._by_proxy: dict[str | None, _Transport] = {}
        self._routes: dict[tuple[str, str], _Transport] = {}

    def _shared_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Built on first use, inside the running event loop, as aiohttp requires.
            self._session = self._make_session()
        return self._session

    def _route(self, url: httpx.URL) -> _Transport:
        key = (url.scheme, url.host)
        transport = self._routes.get(key)
        if transport is None:
            proxy: str | None = None
            if not urllib.request.proxy_bypass(url.host):
                proxy = self._proxies.get(url.scheme) or self._proxies.get("all")
            transport = self._by_proxy.get(proxy)
            if transport is None:
                transport = _Transport(
                    client=self._shared_session, proxy=httpx.Proxy(proxy) if proxy else None
                )
                self._by_proxy[proxy] = transport
            self._routes[key] = transport
        return transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._route(request.url).handle_async_request(request)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def connector_client(*, max_connections: int = 64) -> httpx.AsyncClient:
    """A client for AgentField: 5 s per read, 2 s to connect, at most ``max_connections`` open.

    What httpx's own client takes from the environment still applies to AgentField:
    ``HTTP(S)_PROXY``/``ALL_PROXY``/``NO_PROXY`` (read now, as httpx does) and
    ``SSL_CERT_FILE``/``SSL_CERT_DIR``.
    """
    ssl_context = httpx.create_ssl_context(trust_env=True)
    routing = _ProxyRouting(
        lambda: aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_connections, ssl=ssl_context)
        ),
        urllib.request.getproxies_environment(),
    )
    return httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=2.0), transport=routing)
