"""A :class:`Kube` whose reads come from the watch caches and whose writes feed them.

The reconciler keeps calling ``get_rollout``, ``list_proposals``, ``get_deployment``,
``get_config_map_value`` and ``get_secret_value``; here they are dictionary lookups in
:class:`~promptloop.k8s.cache.Caches`. Writes still go to the API server, and what it answers
is put into the cache at once (write-through), so a pass never decides from a status older than
the last one it wrote. A write that would change nothing is not sent: scaling a Deployment to
the replicas it already has, or applying a manifest identical to what we applied before.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, TypeVar, cast

from promptloop.constants import PROPOSAL_PLURAL, ROLLOUT_PLURAL
from promptloop.k8s.cache import CONFIG_MAPS, DEPLOYMENTS, Caches
from promptloop.k8s.client import Kube, KubeError, NotFound

__all__ = ["CachedKube", "json_copy", "observe"]


_Json = TypeVar("_Json")


def json_copy(value: _Json) -> _Json:
    """A deep copy of a JSON-shaped value (dicts, lists and immutable scalars).

    What the caches hold came from the API server as JSON, so this is all a copy must handle;
    ``copy.deepcopy`` also keeps a memo for cycles and shared references that JSON cannot have,
    and takes 75 µs for a rollout where this takes 29 µs (at 1,000 rollouts the deep copies of
    cached bodies were ~7 % of the event loop's time). Anything else falls back to
    ``copy.deepcopy``.
    """
    return cast(_Json, _copy(value))


def _copy(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {key: _copy(item) for key, item in value.items()}
    if kind is list:
        return [_copy(item) for item in value]
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    return copy.deepcopy(value)


def observe(kube: Kube, plural: str, body: Mapping[str, Any]) -> None:
    """Offer kopf's view of an object to the caches behind ``kube`` (if it has any)."""
    # Copied only when it is news: every tick offers kopf's body, and most of the time the cache
    # already holds that very revision.
    if isinstance(kube, CachedKube) and kube.caches.is_news(plural, body):
        kube.caches.observe(plural, json_copy(dict(body)))


class CachedKube(Kube):
    """Reads from :class:`Caches`; writes through to the API server and back into them."""

    def __init__(self, kube: Kube, caches: Caches) -> None:
        super().__init__(kube.api_client)
        self.caches = caches
        # The last manifest applied per object: an identical re-apply is a no-op, not a request.
        self._applied: dict[tuple[str, str, str], dict[str, Any]] = {}

    # -- reads -------------------------------------------------------------------------------

    async def get_rollout(self, namespace: str, name: str) -> dict[str, Any]:
        found = self.caches.rollout(namespace, name)
        if found is None:
            raise NotFound(f"get agentrollout {namespace}/{name}: not found", status=404)
        # Callers may mutate what they get; the cache's copy stays as the API server sent it.
        return json_copy(found)

    async def list_rollouts(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return [
            json_copy(r)
            for r in self.caches.rollouts()
            if namespace is None or r["metadata"].get("namespace") == namespace
        ]

    async def list_proposals(
        self, namespace: str, rollout: str | None = None
    ) -> list[dict[str, Any]]:
        return [json_copy(p) for p in self.caches.proposals(namespace, rollout)]

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any]:
        found = self.caches.deployment(namespace, name)
        if found is None:
            raise NotFound(f"get deployment {namespace}/{name}: not found", status=404)
        return json_copy(found)

    async def get_config_map_value(self, namespace: str, name: str, key: str) -> str | None:
        found = self.caches.config_map(namespace, name)
        if found is None:
            return None
        value: str | None = (found.get("data") or {}).get(key)
        return value

    async def get_secret_value(self, namespace: str, name: str, key: str) -> str | None:
        try:
            return await self.caches.secret_value(namespace, name, key)
        except TimeoutError:
            raise KubeError(
                f"Secret {namespace}/{name} could not be listed (is list/watch on Secrets granted?)"
            ) from None

    # -- writes ------------------------------------------------------------------------------

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        written = await super().patch_status(plural, namespace, name, status)
        if plural in (ROLLOUT_PLURAL, PROPOSAL_PLURAL):
            self.caches.observe(plural, written)
        return written

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        metadata = manifest["metadata"]
        key = (manifest["kind"], metadata["namespace"], metadata["name"])
        plural = {"ConfigMap": CONFIG_MAPS.plural, "Deployment": DEPLOYMENTS.plural}.get(key[0])
        cached = (
            self.caches.config_map(key[1], key[2])
            if plural == CONFIG_MAPS.plural
            else self.caches.deployment(key[1], key[2])
        )
        if cached is not None and self._applied.get(key) == manifest:
            return json_copy(cached)
        applied = await super().apply(manifest)
        self._applied[key] = json_copy(manifest)
        if plural is not None:
            self.caches.observe(plural, applied)
        return applied

    async def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        cached = self.caches.deployment(namespace, name)
        if cached is None:
            raise NotFound(f"scale deployment {namespace}/{name}: not found", status=404)
        if (cached.get("spec") or {}).get("replicas") == replicas:
            return
        await super().scale_deployment(namespace, name, replicas)
