"""The HTTP client the AgentField connector shares: httpx's API over aiohttp's connections.

At 1,000 rollouts the operator sends AgentField ~125 requests a second from one event loop, and
py-spy put about half of that loop's time in httpcore's pool bookkeeping (docs/scale-and-ha.md).
aiohttp (already installed for kopf) parses HTTP in C and keeps a cheaper pool; ``httpx-aiohttp``
puts it under an ordinary ``httpx.AsyncClient``, so the connector's code, timeouts and exceptions
do not change.

Only the connector uses it. aiohttp sends header names in lower case (legal HTTP, but a user's
webhook receiver or metrics backend may compare them case-sensitively) and reads proxies itself,
so notifications and user metrics backends keep the plain httpx client. AgentField is Go, whose
``net/http`` canonicalises header names.
"""

from __future__ import annotations

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


def connector_client(*, max_connections: int = 64) -> httpx.AsyncClient:
    """A client for AgentField: 5 s per read, 2 s to connect, at most ``max_connections`` open.

    ``trust_env`` keeps what httpx's own client does: ``HTTPS_PROXY``/``NO_PROXY`` and
    ``SSL_CERT_FILE`` from the environment apply to AgentField as they did before.
    """
    ssl_context = httpx.create_ssl_context(trust_env=True)

    def session() -> aiohttp.ClientSession:
        # Built on first use, inside the running event loop, as aiohttp requires.
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_connections, ssl=ssl_context),
            trust_env=True,
        )

    return httpx.AsyncClient(
        timeout=httpx.Timeout(5.0, connect=2.0),
        transport=_Transport(client=session),
    )
