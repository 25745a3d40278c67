"""Gathering: every read one pass needs, done up front and frozen into an ``Observations``.

This is the only place a pass reads the world (Kubernetes through ``k8s/``, the router, the
evidence provider); :func:`promptloop.rollout.advance.advance` then decides from the snapshot
alone. Independent reads run concurrently, and reads that need another (the router needs the
token) run as chains beside them, because a pass's length is what an approval may wait for.

Reads that may turn out unneeded are still cheap and read-only: the challenger's Deployment and
the counters are read whenever status names a canary (with a weight, for the counters); every
proposal that may start is rendered (pure CPU). A watch cache can replace any of the reads by
subclassing :class:`Gatherer` and overriding the corresponding method.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from promptloop.api import AgentRollout, CanaryStatus, PromptProposal, RolloutPhase
from promptloop.api.common import from_cluster
from promptloop.constants import API_VERSION, PROPOSAL_KIND
from promptloop.k8s.client import Kube, KubeError, NotFound
from promptloop.metrics.base import MetricsProvider as EvidenceProvider
from promptloop.metrics.base import MetricsUnavailable
from promptloop.metrics.endpoint import ClientPool
from promptloop.metrics.endpoint import resolve as resolve_endpoint
from promptloop.metrics.providers import provider_for as evidence_provider_for
from promptloop.render.challenger import (
    LABEL_APP_VERSION,
    OwnerRef,
    PromptSourceKind,
    RenderError,
    render_challenger,
    resolve_env_from,
    stable_prompt_source,
)
from promptloop.rollout.observations import Counters, Observations, Rendering, RouterVersion
from promptloop.rollout.phases import PROPOSAL_TERMINAL
from promptloop.rollout.queue import queue_key
from promptloop.routers.agentfield import AgentFieldConnector, AgentFieldTraffic, RetryPolicy
from promptloop.routers.base import Readiness, RouterError, RouterForbidden, TrafficRouter
from promptloop.routers.gatewayapi import GatewayApiRouter

__all__ = ["Gathered", "Gatherer"]


@dataclass(frozen=True)
class Gathered:
    """The snapshot, plus the clients the effects need (kept out of the snapshot: secrets)."""

    observations: Observations
    router: TrafficRouter | None
    token: str | None


class Gatherer:
    """Reads what one pass of a rollout needs."""

    def __init__(
        self,
        kube: Kube,
        http: httpx.AsyncClient,
        *,
        router_http: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime],
        router_retry_delays: tuple[float, ...] = (0.2, 0.5, 1.0),
        clients: ClientPool | None = None,
    ) -> None:
        self.kube = kube
        self.http = http
        # AgentField's own client (routers/transport.py), when the operator gives it one:
        # the connector and the AgentField memory provider talk only to AgentField.
        self.router_http = router_http or http
        self.clock = clock
        self.router_retry_delays = router_retry_delays
        # Metrics backends with their own CA bundle get their own client (metrics.endpoint).
        self.clients = clients or ClientPool(http)

    async def gather(self, raw: dict[str, Any], *, cause: str) -> Gathered:
        """Everything :func:`~promptloop.rollout.advance.advance` decides from."""
        # Fields a newer CRD added are ignored: an older operator keeps working (docs/upgrading.md).
        rollout = from_cluster(AgentRollout, raw)
        now = self.clock()
        namespace = rollout.metadata.namespace or "default"
        status = rollout.status
        canary = status.canary
        # The evidence is read while a canary holds a weight, except in the pass an approver
        # waits for: an approval given at the ceiling steps to it and leaves the evidence to the
        # next tick, so that pass need not wait for the evidence provider.
        wants_counters = (
            canary is not None
            and canary.weight is not None
            and bool(canary.version)
            and not canary.rolled_back
            and not (cause == "approval" and status.phase is RolloutPhase.AWAITING_APPROVAL)
        )
        stable_name = status.stable_deployment or rollout.spec.stable.deployment_name

        # Reads that depend on another run as chains, all chains at once: the pass waits for
        # the longest chain (two round trips), not for rounds. The Deployments are shared: the
        # Gateway API router selects pods by their labels.
        stable_read = asyncio.ensure_future(self.stable_deployment(namespace, stable_name))
        challenger_read = asyncio.ensure_future(self.challenger_deployment(namespace, canary))

        async def router_chain() -> tuple[
            tuple[str | None, str | None],
            TrafficRouter | None,
            tuple[tuple[RouterVersion, ...] | None, str | None, bool],
            Readiness | None,
        ]:
            # AgentField needs the connector token; Gateway API needs none (None, no problem).
            token, problem = await self.token(rollout)
            if problem is not None:
                return (None, problem), None, (None, None, False), None
            stable: dict[str, Any] | None = None
            challenger: dict[str, Any] | None = None
            if rollout.spec.router.gateway_api is not None:
                stable, _ = await stable_read
                challenger = await challenger_read
            router = self.router(rollout, token, stable=stable, challenger=challenger)
            versions = await self.versions(rollout, router)
            readiness = await self.readiness(router, canary)
            return (token, None), router, versions, readiness

        async def stable_chain() -> tuple[
            tuple[dict[str, Any] | None, str | None], tuple[str | None, str | None]
        ]:
            stable, problem = await stable_read
            if stable is None:
                return (None, problem), (None, None)
            return (stable, None), await self.stable_prompt(rollout, stable)

        async def evidence_chain() -> tuple[Counters | None, str | None]:
            if not wants_counters:
                return None, None
            return await self.counters(rollout, await self.evidence_api_key(rollout))

        (
            proposals,
            ((token, token_problem), router, (versions, router_problem, forbidden), readiness),
            ((stable, stable_problem), (stable_prompt, prompt_problem)),
            challenger,
            (counters, counters_problem),
        ) = await asyncio.gather(
            self.proposals(rollout),
            router_chain(),
            stable_chain(),
            challenger_read,
            evidence_chain(),
        )
        usable = token_problem is None and stable is not None
        renderings = (
            self.renderings(rollout, proposals, stable) if usable and stable is not None else {}
        )
        observations = Observations(
            rollout=rollout,
            now=now,
            proposals=tuple(proposals),
            cause=cause,
            token_problem=token_problem,
            stable_deployment=stable,
            stable_problem=stable_problem,
            stable_prompt=stable_prompt,
            stable_prompt_problem=prompt_problem,
            challenger_deployment=challenger,
            versions=versions,
            router_problem=router_problem,
            router_forbidden=forbidden,
            counters=counters,
            counters_problem=counters_problem,
            renderings=renderings,
            challenger_readiness=readiness,
            router_orders_by_version_string=(
                router.orders_by_version_string if router is not None else True
            ),
            router_drains_by_weight=router.drains_by_weight if router is not None else False,
        )
        return Gathered(observations, router, token)

    # ------------------------------------------------------------------------------------------
    # The reads; each may be replaced (a watch cache, a fake in tests)

    async def proposals(self, rollout: AgentRollout) -> list[PromptProposal]:
        """This rollout's proposals, oldest first."""
        namespace = rollout.metadata.namespace or "default"
        raw = await self.kube.list_proposals(namespace, rollout.metadata.name)
        return sorted(
            (
                from_cluster(PromptProposal, p)
                for p in raw
                if p.get("spec", {}).get("rolloutRef", {}).get("name") == rollout.metadata.name
            ),
            key=queue_key,
        )

    async def token(self, rollout: AgentRollout) -> tuple[str | None, str | None]:
        """The connector token, or None and why not (None and no problem: no token needed)."""
        agentfield = rollout.spec.router.agentfield
        if agentfield is None:
            return None, None  # Gateway API: the operator's own identity is enough
        ref = agentfield.token_secret_ref
        namespace = rollout.metadata.namespace or "default"
        try:
            token = await self.kube.get_secret_value(namespace, ref.name, ref.key)
        except KubeError as error:
            return None, f"cannot read the connector token: {error}"
        if token is None:
            return None, (
                "cannot read the connector token: "
                f"Secret {ref.name} has no key {ref.key} (or does not exist)"
            )
        return token, None

    async def stable_deployment(
        self, namespace: str, name: str
    ) -> tuple[dict[str, Any] | None, str | None]:
        """The stable Deployment, or None and why not."""
        try:
            return await self.kube.get_deployment(namespace, name), None
        except NotFound:
            return None, f"stable Deployment {name} not found in namespace {namespace}"
        except KubeError as error:
            return None, f"cannot read the stable Deployment {name}: {error}"

    async def challenger_deployment(
        self, namespace: str, canary: CanaryStatus | None
    ) -> dict[str, Any] | None:
        """The Deployment status names as the canary's (None: none, or not found)."""
        if canary is None or not canary.deployment:
            return None
        try:
            return await self.kube.get_deployment(namespace, canary.deployment)
        except NotFound:
            return None

    async def stable_prompt(
        self, rollout: AgentRollout, deployment: dict[str, Any]
    ) -> tuple[str | None, str | None]:
        """The stable prompt when it can be read, and why the Deployment is unusable if not."""
        try:
            source = stable_prompt_source(stable_deployment=deployment, prompt=rollout.spec.prompt)
        except RenderError as error:
            return None, str(error)
        if source.literal is not None:
            return source.literal, None
        namespace = rollout.metadata.namespace or "default"
        if source.kind is PromptSourceKind.ENV_FROM:
            maps: dict[str, dict[str, str] | None] = {}
            for ref in source.env_from:
                if ref.kind == "configMap":
                    value = await self.kube.get_config_map_value(namespace, ref.name, ref.key)
                    known = maps.setdefault(ref.name, {})
                    if value is not None and known is not None:
                        known[ref.key] = value
            prompt, _why = resolve_env_from(source.env_from, maps)
            return prompt, None
        if source.config_map is not None and source.key is not None:
            value = await self.kube.get_config_map_value(namespace, source.config_map, source.key)
            return value, None
        return None, None

    def router(
        self,
        rollout: AgentRollout,
        token: str | None,
        *,
        stable: dict[str, Any] | None = None,
        challenger: dict[str, Any] | None = None,
    ) -> TrafficRouter:
        """The rollout's traffic router: AgentField (authenticated) or Gateway API."""
        gateway = rollout.spec.router.gateway_api
        if gateway is not None:
            return GatewayApiRouter(
                self.kube,
                namespace=rollout.metadata.namespace or "default",
                rollout=rollout.metadata.name,
                rollout_uid=rollout.metadata.uid or "",
                http_route=gateway.http_route,
                port=gateway.port,
                selectors=pod_selectors(rollout, stable, challenger),
            )
        agentfield = rollout.spec.router.agentfield
        assert agentfield is not None and token is not None
        delays = self.router_retry_delays
        return AgentFieldTraffic(
            AgentFieldConnector(
                agentfield.url,
                token,
                client=self.router_http,
                retry=RetryPolicy(attempts=len(delays) + 1, backoff=delays),
            ),
            rollout.spec.agent.node_id,
            client=self.router_http,
        )

    async def versions(
        self, rollout: AgentRollout, router: TrafficRouter
    ) -> tuple[tuple[RouterVersion, ...] | None, str | None, bool]:
        """The router's versions of the agent, or None, why not, and whether it was a 403."""
        try:
            if isinstance(router, AgentFieldTraffic):
                listed = await router.listed()
                found = tuple(RouterVersion(v.version, v.weight, v.last_heartbeat) for v in listed)
            else:
                found = tuple(RouterVersion(v, None) for v in await router.known_versions())
        except RouterForbidden as error:
            return None, str(error), True
        except RouterError as error:
            return None, str(error), False
        return found, None, False

    async def readiness(
        self, router: TrafficRouter, canary: CanaryStatus | None
    ) -> Readiness | None:
        """What the router says about the canary's version (None: no canary to ask about)."""
        if canary is None or not canary.version or canary.rolled_back:
            return None
        return await router.version_ready(canary.version)

    async def evidence_api_key(self, rollout: AgentRollout) -> str | None:
        """AgentField's API key for the memory provider, when the rollout names one."""
        memory = rollout.spec.metrics.agentfield_memory
        if memory is None or memory.api_key_secret_ref is None:
            return None
        ref = memory.api_key_secret_ref
        try:
            return await self.kube.get_secret_value(
                rollout.metadata.namespace or "default", ref.name, ref.key
            )
        except KubeError:
            # The provider then answers 401/403 as MetricsUnavailable: the rollout holds.
            return None

    async def evidence_provider(
        self, rollout: AgentRollout, api_key: str | None
    ) -> EvidenceProvider:
        """The rollout's evidence provider, with its backend's headers and credentials read
        from their Secrets (:class:`MetricsUnavailable` naming a missing one: the rollout
        holds)."""
        spec = rollout.spec.metrics
        options = spec.prometheus or spec.http
        endpoint = None
        if options is not None:
            endpoint = await resolve_endpoint(
                options,
                namespace=rollout.metadata.namespace or "default",
                read_secret=self.kube.get_secret_value,
                pool=self.clients,
            )
        return evidence_provider_for(
            spec,
            node_id=rollout.spec.agent.node_id,
            router_url=rollout.spec.router.agentfield.url if rollout.spec.router.agentfield else "",
            # No endpoint: the AgentField memory provider, which talks to AgentField.
            client=endpoint.client if endpoint else self.router_http,
            api_key=api_key,
            timeout=endpoint.timeout if endpoint else 5.0,
            headers=endpoint.headers if endpoint else None,
            auth=endpoint.auth if endpoint else None,
        )

    async def counters(
        self, rollout: AgentRollout, api_key: str | None
    ) -> tuple[Counters | None, str | None]:
        """Both versions' cumulative counters, or None and why not."""
        canary = rollout.status.canary
        assert canary is not None and canary.version
        stable_version = rollout.status.stable_version or rollout.spec.stable.version
        try:
            provider = await self.evidence_provider(rollout, api_key)
            stable, challenger = await asyncio.gather(
                provider.read(stable_version), provider.read(canary.version)
            )
        except MetricsUnavailable as error:
            return None, str(error)
        return Counters(stable.total, stable.failed, challenger.total, challenger.failed), None

    def renderings(
        self,
        rollout: AgentRollout,
        proposals: list[PromptProposal],
        stable_deployment: dict[str, Any],
    ) -> dict[str, Rendering]:
        """The challenger of every proposal that may start in this pass (pure, in-process)."""
        canary = rollout.status.canary
        current = canary.proposal if canary is not None else None
        renderings: dict[str, Rendering] = {}
        for proposal in proposals:
            name = proposal.metadata.name
            if (
                name == current
                or proposal.metadata.deletion_timestamp
                or proposal.status.phase in PROPOSAL_TERMINAL
            ):
                continue
            try:
                rendered = render_challenger(
                    rollout=rollout,
                    proposal=proposal,
                    stable_deployment=stable_deployment,
                    owner=OwnerRef(
                        api_version=API_VERSION,
                        kind=PROPOSAL_KIND,
                        name=name,
                        uid=proposal.metadata.uid or "",
                    ),
                    stable_version=rollout.status.stable_version,
                )
            except RenderError as error:
                renderings[name] = Rendering(error=str(error))
                continue
            renderings[name] = Rendering(
                deployment=rendered.names.deployment,
                config_map=rendered.names.config_map,
                digest=rendered.digest,
                manifests=(rendered.config_map, rendered.deployment),
            )
        return renderings


def pod_selectors(
    rollout: AgentRollout,
    stable: dict[str, Any] | None,
    challenger: dict[str, Any] | None,
) -> dict[str, dict[str, str]]:
    """Version to the labels that select its pods, for the Services a Gateway API route uses.

    The challenger's Deployment selects its own pods (``promptloop.dev/rollout`` and
    ``promptloop.dev/version``). A user's stable Deployment usually selects by something like
    ``app: classifier``, which the challenger's pods (cloned from its template) carry too, so
    the stable Service adds ``app.kubernetes.io/version: <stable version>``: the challenger's
    template overrides it, the stable's pods must carry it (README, Gateway API).
    """
    selectors: dict[str, dict[str, str]] = {}
    stable_version = rollout.status.stable_version or rollout.spec.stable.version
    if stable is not None:
        labels = dict(stable.get("spec", {}).get("selector", {}).get("matchLabels") or {})
        if "promptloop.dev/version" not in labels:
            labels[LABEL_APP_VERSION] = stable_version
        selectors[stable_version] = labels
    canary = rollout.status.canary
    if challenger is not None and canary is not None and canary.version:
        labels = dict(challenger.get("spec", {}).get("selector", {}).get("matchLabels") or {})
        if labels:
            selectors[canary.version] = labels
    return selectors
