"""A Gateway API HTTPRoute as a traffic backend: real weighted splitting, weight 0 drains.

The way Argo Rollouts' and Flagger's Gateway API support works, in the smallest form:

- The user's HTTPRoute (in git) sends the agent's traffic to two backendRefs, Services named
  ``<rollout>-stable`` and ``<rollout>-canary``.
- The operator creates and owns those two Services (owner: the AgentRollout) and sets their
  selectors: stable → the stable version's pods, canary → the active challenger's pods (the
  stable's, when there is no challenger, so a stray weight can only reach the stable version).
- It writes only the two backendRefs' ``weight`` fields, by server-side apply under the field
  manager ``promptloop-router``, on every pass, and reads them back. Gateway API weights are
  relative (``weight / sum``); the operator writes ``100 - p`` and ``p``, so a weight is the
  percent, and 0 really sends nothing there.
- Services are applied before weights: on promotion the stable Service points at the new
  version before the weight moves back to it, so no request finds a Service without pods.

``rules`` and ``backendRefs`` are atomic lists in the Gateway API CRDs, so server-side apply
cannot own one field inside them: the apply carries the route's rules exactly as read with only
the two weights changed, guarded by ``resourceVersion`` (a concurrent edit makes it fail and the
next pass retries on the new rules). The manager therefore co-owns ``spec.rules`` as a whole;
Argo CD's ``ignoreDifferences.managedFieldsManagers: [promptloop-router]`` (docs/gitops.md)
keeps the Application in sync.

Pure helpers (:func:`set_weights`, :func:`route_weights`) do the arithmetic; the class does I/O
only through the :class:`RouteClient` it is given (the operator's ``k8s.client.Kube``: routers/
and k8s/ are sibling layers, so the dependency is a protocol). Its errors are caught by their
standard bases: ``LookupError`` for a missing object, ``RuntimeError`` for any other failure.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Protocol

from promptloop.api import VersionWeight
from promptloop.routers.base import (
    ROLE_CANARY,
    ROLE_STABLE,
    Readiness,
    RouterError,
    RouterUnavailable,
    Split,
)

__all__ = [
    "GatewayApiRouter",
    "RouteClient",
    "canary_service",
    "route_weights",
    "set_weights",
    "stable_service",
]


class RouteClient(Protocol):
    """The Kubernetes calls the router makes (``promptloop.k8s.client.Kube`` has them)."""

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply an object the operator owns (here: a Service)."""
        ...

    async def get_http_route(self, namespace: str, name: str) -> dict[str, Any]:
        """An HTTPRoute as a dict; raises a ``LookupError`` when it does not exist."""
        ...

    async def apply_http_route_rules(
        self, namespace: str, name: str, *, rules: list[dict[str, Any]], resource_version: str
    ) -> dict[str, Any]:
        """Server-side apply ``spec.rules`` under the router's own field manager."""
        ...


def stable_service(rollout: str) -> str:
    """The Service the user's HTTPRoute sends the stable share to."""
    return f"{rollout}-stable"


def canary_service(rollout: str) -> str:
    """The Service the user's HTTPRoute sends the canary share to."""
    return f"{rollout}-canary"


def _refs(rule: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    return [
        ref
        for ref in rule.get("backendRefs") or []
        if ref.get("name") == name
        and ref.get("kind", "Service") == "Service"
        and ref.get("group", "") in ("", "core")
    ]


def set_weights(
    rules: list[dict[str, Any]], *, rollout: str, stable_weight: int, canary_weight: int
) -> tuple[list[dict[str, Any]], int]:
    """The rules with the two backendRefs' weights set, everything else as it was.

    Parameters
    ----------
    rules
        ``spec.rules`` as read.
    rollout
        The AgentRollout's name (the Services are ``<rollout>-stable`` and ``-canary``).
    stable_weight, canary_weight
        The weights to write (0..100 each, adding up to 100).

    Returns
    -------
    tuple
        The new rules (a copy) and how many rules carry both backendRefs.
    """
    updated = copy.deepcopy(rules)
    both = 0
    for rule in updated:
        stable_refs = _refs(rule, stable_service(rollout))
        canary_refs = _refs(rule, canary_service(rollout))
        if stable_refs and canary_refs:
            both += 1
        for ref in stable_refs:
            ref["weight"] = stable_weight
        for ref in canary_refs:
            ref["weight"] = canary_weight
    return updated, both


def route_weights(rules: list[dict[str, Any]], *, rollout: str) -> tuple[int, int] | None:
    """The (stable, canary) weights the route holds, or None if no rule carries both refs.

    Every rule that carries both must agree; if they do not, the first such rule's weights are
    returned (the next apply makes them agree). An absent ``weight`` is Gateway API's default 1.
    """
    for rule in rules:
        stable_refs = _refs(rule, stable_service(rollout))
        canary_refs = _refs(rule, canary_service(rollout))
        if stable_refs and canary_refs:
            return int(stable_refs[0].get("weight", 1)), int(canary_refs[0].get("weight", 1))
    return None


class GatewayApiRouter:
    """Steps traffic by the weights of a user's HTTPRoute, between two Services it owns.

    Parameters
    ----------
    kube
        The operator's Kubernetes client.
    namespace, rollout
        The AgentRollout (its name names the Services; its uid owns them).
    rollout_uid
        For the Services' owner reference (garbage-collected with the rollout).
    http_route
        The user's HTTPRoute in the same namespace.
    port
        The agent's port; both Services expose it.
    selectors
        Version to the labels that select that version's pods (the reconciler derives them from
        the Deployments). A version without a selector cannot be given a Service.
    """

    kind = "gatewayAPI"
    drains_by_weight = True
    orders_by_version_string = False

    def __init__(
        self,
        kube: RouteClient,
        *,
        namespace: str,
        rollout: str,
        rollout_uid: str,
        http_route: str,
        port: int,
        selectors: Mapping[str, Mapping[str, str]],
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.rollout = rollout
        self.rollout_uid = rollout_uid
        self.http_route = http_route
        self.port = port
        self.selectors = dict(selectors)
        self._roles: dict[str, str] = {}
        self._versions: tuple[str, str | None] | None = None
        # The route as this pass read it (readiness), so that an unchanged split costs one GET.
        self._route: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"GatewayApiRouter({self.namespace}/{self.http_route})"

    async def aclose(self) -> None:
        """Nothing to release: the Kubernetes client is shared."""

    # -- the protocol --------------------------------------------------------------------------

    async def known_versions(self) -> list[str]:
        """The versions the router can point a Service at."""
        return list(self.selectors)

    async def apply(self, split: Split) -> list[VersionWeight]:
        """Point the Services, write the two weights, read the route back.

        Raises
        ------
        RouterError
            The HTTPRoute is missing or has no rule with both backendRefs, or a version has no
            selector.
        RouterUnavailable
            The API server refused or failed the write (a conflict included: retried next pass).
        """
        if not 0 <= split.canary_percent <= 100:
            raise ValueError(f"canary_percent must be within 0..100, got {split.canary_percent}")
        if split.canary is None and split.canary_percent != 0:
            raise ValueError("canary_percent must be 0 when there is no canary")
        stable_selector = self._selector(split.stable)
        canary_selector = self._selector(split.canary) if split.canary else stable_selector
        # Services first: on promotion the stable Service selects the new version before the
        # weight moves back to it.
        try:
            await self.kube.apply(self._service(stable_service(self.rollout), stable_selector))
            await self.kube.apply(self._service(canary_service(self.rollout), canary_selector))
            route = self._route or await self.kube.get_http_route(self.namespace, self.http_route)
        except LookupError:
            raise RouterError(self._missing_route()) from None
        except RuntimeError as error:
            raise RouterUnavailable(
                f"cannot point the Services or read the HTTPRoute: {error}"
            ) from None
        self._route = None
        rules = route.get("spec", {}).get("rules") or []
        new_rules, both = set_weights(
            rules,
            rollout=self.rollout,
            stable_weight=100 - split.canary_percent,
            canary_weight=split.canary_percent,
        )
        if not both:
            raise RouterError(self._no_backends())
        if new_rules != rules:
            try:
                route = await self.kube.apply_http_route_rules(
                    self.namespace,
                    self.http_route,
                    rules=new_rules,
                    resource_version=route["metadata"].get("resourceVersion", ""),
                )
            except RuntimeError as error:
                raise RouterUnavailable(
                    f"cannot write the weights of HTTPRoute {self.http_route}: {error}"
                ) from None
            self._versions = (split.stable, split.canary)
            # Read back from the API server, not from the apply's answer: what is stored now.
            return await self.read()
        self._versions = (split.stable, split.canary)
        # Nothing to write: the read just made (a stale one fails the next write with a 409)
        # is the read-back.
        return self._weights(route)

    async def read(self) -> list[VersionWeight]:
        """The two weights as the API server holds them, as the versions they point at."""
        try:
            route = await self.kube.get_http_route(self.namespace, self.http_route)
        except LookupError:
            raise RouterError(self._missing_route()) from None
        except RuntimeError as error:
            raise RouterUnavailable(f"cannot read HTTPRoute {self.http_route}: {error}") from None
        return self._weights(route)

    def _weights(self, route: Mapping[str, Any]) -> list[VersionWeight]:
        """The route's two weights as the versions they point at."""
        weights = route_weights(route.get("spec", {}).get("rules") or [], rollout=self.rollout)
        if weights is None:
            raise RouterError(self._no_backends())
        stable_weight, canary_weight = weights
        total = stable_weight + canary_weight
        stable, canary = self._versions or (stable_service(self.rollout), None)
        entries = [
            VersionWeight(
                version=stable,
                percent=round(100.0 * stable_weight / total, 3) if total else 0.0,
                raw=stable_weight,
                role=ROLE_STABLE,
            )
        ]
        if canary is not None:
            entries.append(
                VersionWeight(
                    version=canary,
                    percent=round(100.0 * canary_weight / total, 3) if total else 0.0,
                    raw=canary_weight,
                    role=ROLE_CANARY,
                )
            )
        return entries

    async def version_ready(self, version: str) -> Readiness:
        """Whether the route can send ``version`` traffic: it has a selector and the route
        carries both backendRefs (the Deployment's availability is judged by the caller)."""
        if version not in self.selectors:
            return Readiness(False, "NoSelector", f"no pods known for version {version}")
        try:
            route = await self.kube.get_http_route(self.namespace, self.http_route)
        except LookupError:
            return Readiness(False, "RouteNotFound", self._missing_route())
        except RuntimeError as error:
            return Readiness(None, "Unavailable", f"cannot read HTTPRoute: {error}")
        self._route = route
        if route_weights(route.get("spec", {}).get("rules") or [], rollout=self.rollout) is None:
            return Readiness(False, "RouteMissingBackends", self._no_backends())
        return Readiness(
            True,
            "Ready",
            f"HTTPRoute {self.http_route} sends traffic to {canary_service(self.rollout)}",
        )

    async def drain(self, version: str) -> None:
        """Weight 0 for the canary: Gateway API sends nothing to a backendRef of weight 0."""
        stable, canary = self._versions or (None, None)
        if stable is None or canary != version:
            return
        await self.apply(Split(stable=stable, canary=version, canary_percent=0))

    # -- plumbing ------------------------------------------------------------------------------

    def _selector(self, version: str) -> dict[str, str]:
        selector = self.selectors.get(version)
        if not selector:
            raise RouterError(f"no pod selector known for version {version}")
        return dict(selector)

    def _service(self, name: str, selector: Mapping[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {
                    "app.kubernetes.io/managed-by": "promptloop",
                    "promptloop.dev/rollout": self.rollout,
                },
                "ownerReferences": [
                    {
                        "apiVersion": "promptloop.dev/v1alpha1",
                        "kind": "AgentRollout",
                        "name": self.rollout,
                        "uid": self.rollout_uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {
                "selector": dict(selector),
                "ports": [
                    {"name": "http", "port": self.port, "targetPort": self.port, "protocol": "TCP"}
                ],
            },
        }

    def _missing_route(self) -> str:
        return (
            f"HTTPRoute {self.http_route} not found in namespace {self.namespace} (create it in "
            f"git with backendRefs {stable_service(self.rollout)} and "
            f"{canary_service(self.rollout)})"
        )

    def _no_backends(self) -> str:
        return (
            f"HTTPRoute {self.http_route} has no rule with both backendRefs "
            f"{stable_service(self.rollout)} and {canary_service(self.rollout)} "
            f"(port {self.port}); add them to the rule that serves the agent"
        )
