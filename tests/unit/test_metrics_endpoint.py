"""Metric backends behind credentials and a private CA: a local HTTPS server (certificate made
here with openssl) that insists on a bearer token and a tenant header (Prometheus), or basic auth
(the ``http`` provider). The providers reach it only with what the spec names, read from
Secrets; a missing Secret or a refused credential is MetricsUnavailable naming the Secret, never
its value."""

from __future__ import annotations

import base64
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from promptloop.api import MetricsSpec
from promptloop.metrics.base import MetricsUnavailable
from promptloop.metrics.endpoint import ClientPool, resolve
from promptloop.metrics.providers import provider_for

TOKEN = "tok-3f9a"
USER, PASSWORD = "reader", "pa55-w0rd"
SECRETS = {
    ("prom", "token"): TOKEN + "\n",
    ("prom", "tenant"): "team-a",
    ("basic", "user"): USER,
    ("basic", "password"): PASSWORD,
}


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    yield cert, key


@pytest.fixture
async def backend(
    certificate: tuple[Path, Path],
) -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """HTTPS on 127.0.0.1: /api/v1/query wants the bearer token and X-Scope-OrgID; /counts/{v}
    wants basic auth. Every request's headers are recorded."""
    seen: list[dict[str, str]] = []

    async def query(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"status": "error", "error": "unauthorized"}, status=401)
        if request.headers.get("X-Scope-OrgID") != "team-a":
            return web.json_response({"status": "error", "error": "no org id"}, status=400)
        failed = "outcome" in request.query["query"]
        value = "7" if failed else "70"
        return web.json_response(
            {
                "status": "success",
                "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, value]}]},
            }
        )

    async def counts(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.Response(status=403)
        return web.json_response({"total": 10, "failed": 1})

    app = web.Application()
    app.add_routes([web.get("/api/v1/query", query), web.get("/counts/{version}", counts)])
    runner = web.AppRunner(app)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    yield f"https://127.0.0.1:{port}", seen
    await runner.cleanup()


async def read_secret(namespace: str, name: str, key: str) -> str | None:
    assert namespace == "ns"
    return SECRETS.get((name, key))


async def _provider(spec: dict[str, Any], pool: ClientPool) -> Any:
    metrics = MetricsSpec.model_validate(spec)
    options = metrics.prometheus or metrics.http
    assert options is not None
    endpoint = await resolve(options, namespace="ns", read_secret=read_secret, pool=pool)
    return provider_for(
        metrics,
        node_id="n",
        router_url=None,
        client=endpoint.client,
        timeout=endpoint.timeout,
        headers=endpoint.headers,
        auth=endpoint.auth,
    )


def _prometheus(url: str, ca: str | None, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "url": url,
        "totalQuery": 'sum(requests_total{version="{{ version }}"})',
        "failedQuery": 'sum(requests_total{version="{{ version }}",outcome="failure"})',
        "bearerTokenSecretRef": {"name": "prom", "key": "token"},
        "headers": [{"name": "X-Scope-OrgID", "valueFrom": {"name": "prom", "key": "tenant"}}],
        "timeout": "3s",
        **extra,
    }
    if ca is not None:
        spec["caBundle"] = ca
    return {"prometheus": spec}


async def test_prometheus_with_a_bearer_token_a_tenant_header_and_a_private_ca(
    backend: tuple[str, list[dict[str, str]]], certificate: tuple[Path, Path]
) -> None:
    url, seen = backend
    ca = certificate[0].read_text()
    async with httpx.AsyncClient() as shared:
        pool = ClientPool(shared)
        provider = await _provider(_prometheus(url, ca), pool)
        counters = await provider.read("2.1.0")
        assert (counters.total, counters.failed) == (70, 7)
        assert seen[-1]["X-Scope-OrgID"] == "team-a"
        # The same bundle reuses its client; the shared client is never given the CA.
        again = await _provider(_prometheus(url, ca), pool)
        assert again._client is provider._client is not shared
        await pool.close()


async def test_without_the_ca_the_server_is_not_trusted(
    backend: tuple[str, list[dict[str, str]]],
) -> None:
    url, _ = backend
    async with httpx.AsyncClient() as shared:
        provider = await _provider(_prometheus(url, None), ClientPool(shared))
        with pytest.raises(MetricsUnavailable, match="ConnectError"):
            await provider.read("2.1.0")


async def test_a_missing_secret_or_a_refused_token_says_which_and_leaks_nothing(
    backend: tuple[str, list[dict[str, str]]], certificate: tuple[Path, Path]
) -> None:
    url, _ = backend
    ca = certificate[0].read_text()
    async with httpx.AsyncClient() as shared:
        pool = ClientPool(shared)
        missing = _prometheus(url, ca, bearerTokenSecretRef={"name": "prom", "key": "nope"})
        with pytest.raises(MetricsUnavailable) as error:
            await _provider(missing, pool)
        assert str(error.value) == "Secret prom has no key nope (the bearer token)"
        wrong = dict(SECRETS)
        SECRETS[("prom", "token")] = "wrong-token"
        try:
            provider = await _provider(_prometheus(url, ca), pool)
            with pytest.raises(MetricsUnavailable, match="HTTP 401: check the credentials") as e:
                await provider.read("2.1.0")
            assert "wrong-token" not in str(e.value)
        finally:
            SECRETS.clear()
            SECRETS.update(wrong)
        await pool.close()


async def test_http_provider_with_basic_auth_from_secrets(
    backend: tuple[str, list[dict[str, str]]], certificate: tuple[Path, Path]
) -> None:
    url, seen = backend
    spec = {
        "http": {
            "url": f"{url}/counts/{{{{ version }}}}",
            "basicAuth": {
                "username": {"name": "basic", "key": "user"},
                "password": {"name": "basic", "key": "password"},
            },
            "caBundle": certificate[0].read_text(),
            "headers": [{"name": "X-Team", "value": "a"}],
        }
    }
    async with httpx.AsyncClient() as shared:
        pool = ClientPool(shared)
        provider = await _provider(spec, pool)
        counters = await provider.read("2.1.0")
        assert (counters.total, counters.failed) == (10, 1)
        assert seen[-1]["X-Team"] == "a"
        await pool.close()


def test_a_bad_ca_bundle_is_a_clear_error() -> None:
    pool = ClientPool(httpx.AsyncClient())
    with pytest.raises(MetricsUnavailable, match="CA bundle is not usable PEM"):
        pool.client_for("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
