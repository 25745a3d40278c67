"""Watch caches: everything a pass reads from Kubernetes, kept current by watches.

A reconcile pass used to make about ten API calls whether or not anything had changed (the
rollout, its proposals, the token Secret, the stable Deployment, the prompt ConfigMap). Here, as
in client-go's informers (which Argo Rollouts and every kubebuilder controller read from), each
kind is listed once and then watched; a pass reads the in-memory copy, so a pass in which nothing
changed makes no request at all.

Consistency rules, each one a reason a step could otherwise be taken twice or an approval missed:

- **Newer wins.** An object replaces the cached copy only when its ``resourceVersion`` is not
  older (etcd revisions are integers; an opaque one always replaces). Watch events arrive in
  order, but a write-through (below) can be ahead of them.
- **Write-through.** The object the API server returns from our own status patch or apply is put
  into the cache at once, so the next pass never decides from the status before our write.
- **What kopf saw.** A handler triggered by a change (an approval) first offers kopf's body to the
  cache (:meth:`Caches.observe`), so the pass it starts sees the change even if our own watch
  has not delivered it yet.
- **Relist on 410.** A watch whose resourceVersion is too old ("Gone") lists again.

Secrets are special: the operator never lists all Secrets. It watches, by name, each Secret a
rollout references (``fieldSelector=metadata.name=...``), keeps only their ``data``, and never
puts a value in a log line, an exception message or ``repr``. A rotated token is therefore in the
cache by the next pass, without a restart.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from promptloop.constants import GROUP, VERSION
from promptloop.rollout.canary_request import APPROVE_CANARY_ANNOTATION

__all__ = [
    "CONFIG_MAPS",
    "DEPLOYMENTS",
    "PROPOSALS",
    "ROLLOUTS",
    "SECRETS",
    "Caches",
    "Informer",
    "Kind",
    "newer_or_same",
]

log = logging.getLogger("promptloop.cache")

# A watch ends server-side after this long and is re-opened from the last resourceVersion (the
# API server caps it anyway); the client read timeout is a margin above it.
WATCH_SECONDS = 290
LIST_CHUNK = 500
SECRET_SYNC_SECONDS = 10.0


@dataclass(frozen=True)
class Kind:
    """One kind of object the caches hold."""

    plural: str
    group_version_path: str  # "/api/v1" or "/apis/<group>/<version>"
    # What is kept of each object: whole bodies cost memory (managedFields above all).
    transform: Callable[[dict[str, Any]], dict[str, Any]]

    def collection(self, namespace: str | None) -> str:
        scope = f"/namespaces/{namespace}" if namespace else ""
        return f"{self.group_version_path}{scope}/{self.plural}"


def _without_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    obj.get("metadata", {}).pop("managedFields", None)
    return obj


def _managed_fields_for(*path: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Keep of managedFields only the entries that own ``path``, and of those only ``path``.

    Who set a proposal's ``spec.approved``, or a rollout's approve annotation (Argo CD's
    action), is read from managedFields (``rollout/advance.approver``,
    ``rollout/canary_request.canary_approver``); nothing else is. Whole entries list every
    status field the operator ever wrote: at 1,000 rollouts, copying them on each pass was the
    largest single cost of a pass. The object itself is not changed (a write-through caller
    gets back what the API server answered).
    """

    def trim(obj: dict[str, Any]) -> dict[str, Any]:
        metadata = obj.get("metadata")
        if not isinstance(metadata, dict) or "managedFields" not in metadata:
            return obj
        kept = []
        for entry in metadata.get("managedFields") or []:
            node = entry.get("fieldsV1") if isinstance(entry, dict) else None
            for key in path:
                node = node.get(key) if isinstance(node, dict) else None
            if node is None:
                continue
            owned: Any = node
            for key in reversed(path):
                owned = {key: owned}
            kept.append({**entry, "fieldsV1": owned})
        return {**obj, "metadata": {**metadata, "managedFields": kept}}

    return trim


def _secret_data_only(obj: dict[str, Any]) -> dict[str, Any]:
    metadata = obj.get("metadata", {})
    return {
        "metadata": {
            key: metadata[key]
            for key in ("name", "namespace", "resourceVersion")
            if key in metadata
        },
        "data": obj.get("data") or {},
    }


ROLLOUTS = Kind(
    "agentrollouts",
    f"/apis/{GROUP}/{VERSION}",
    _managed_fields_for("f:metadata", "f:annotations", f"f:{APPROVE_CANARY_ANNOTATION}"),
)
PROPOSALS = Kind(
    "promptproposals", f"/apis/{GROUP}/{VERSION}", _managed_fields_for("f:spec", "f:approved")
)
DEPLOYMENTS = Kind("deployments", "/apis/apps/v1", _without_managed_fields)
CONFIG_MAPS = Kind("configmaps", "/api/v1", _without_managed_fields)
SECRETS = Kind("secrets", "/api/v1", _secret_data_only)
_CACHED_KINDS = {k.plural: k for k in (ROLLOUTS, PROPOSALS, DEPLOYMENTS, CONFIG_MAPS)}


def _revision(obj: dict[str, Any]) -> int | None:
    value = obj.get("metadata", {}).get("resourceVersion")
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def newer_or_same(candidate: dict[str, Any], current: dict[str, Any] | None) -> bool:
    """Whether ``candidate`` may replace ``current`` (an unparsable revision always may)."""
    if current is None:
        return True
    new, old = _revision(candidate), _revision(current)
    return new is None or old is None or new >= old


class _Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


class Informer:
    """List, then watch, one kind in one namespace (or all), into a dict by namespace/name."""

    def __init__(
        self,
        api_client: client.ApiClient,
        kind: Kind,
        namespace: str | None,
        *,
        field_selector: str | None = None,
        on_change: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.api_client = api_client
        self.kind = kind
        self.namespace = namespace
        self.field_selector = field_selector
        self.on_change = on_change
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # For the scale bench and tests: how many list and watch requests this informer made.
        self.lists = 0
        self.watches = 0

    def __repr__(self) -> str:  # never the objects (Secrets hold credentials)
        scope = self.namespace or "all namespaces"
        return f"Informer({self.kind.plural} in {scope}, {len(self.objects)} objects)"

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"informer {self!r}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- the store ------------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((namespace, name))

    def values(self) -> Iterable[dict[str, Any]]:
        return self.objects.values()

    def put(self, obj: dict[str, Any]) -> bool:
        """Store ``obj`` unless the cache already holds a newer revision; True if stored."""
        metadata = obj.get("metadata", {})
        key = (metadata.get("namespace") or "", metadata.get("name") or "")
        if not newer_or_same(obj, self.objects.get(key)):
            return False
        self.objects[key] = self.kind.transform(obj)
        if self.on_change is not None:
            self.on_change("put", self.objects[key])
        return True

    def _delete(self, obj: dict[str, Any]) -> None:
        metadata = obj.get("metadata", {})
        key = (metadata.get("namespace") or "", metadata.get("name") or "")
        current = self.objects.get(key)
        if current is not None and newer_or_same(obj, current):
            del self.objects[key]
            if self.on_change is not None:
                self.on_change("delete", current)

    # -- list and watch ----------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            try:
                revision = await self._list()
                self.synced.set()
                backoff = 0.5
                while True:
                    revision = await self._watch(revision)
            except _Gone:
                continue
            except asyncio.CancelledError:
                raise
            except Exception as error:  # network, 5xx, a restarted API server: retry
                log.warning(
                    "watch of %s failed (%s); retrying in %.1fs",
                    self.kind.plural,
                    type(error).__name__,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    def _query(self, **extra: str) -> list[tuple[str, str]]:
        query = [(k, v) for k, v in extra.items()]
        if self.field_selector:
            query.append(("fieldSelector", self.field_selector))
        return query

    async def _list(self) -> str:
        fresh: dict[tuple[str, str], dict[str, Any]] = {}
        token = ""
        while True:
            extra = {"limit": str(LIST_CHUNK)}
            if token:
                extra["continue"] = token
            self.lists += 1
            page = await self._get_json(self.kind.collection(self.namespace), self._query(**extra))
            for item in page.get("items") or []:
                metadata = item.get("metadata", {})
                fresh[(metadata.get("namespace") or "", metadata.get("name") or "")] = (
                    self.kind.transform(item)
                )
            token = page.get("metadata", {}).get("continue") or ""
            if not token:
                break
        # Objects written through while listing stay if they are newer than the list.
        for key, current in self.objects.items():
            if key in fresh and not newer_or_same(fresh[key], current):
                fresh[key] = current
        gone = [obj for key, obj in self.objects.items() if key not in fresh]
        self.objects = fresh
        if self.on_change is not None:
            for obj in gone:
                self.on_change("delete", obj)
            for obj in fresh.values():
                self.on_change("put", obj)
        revision: str = page.get("metadata", {}).get("resourceVersion") or ""
        return revision

    async def _get_json(self, path: str, query: list[tuple[str, str]]) -> dict[str, Any]:
        try:
            response = await self.api_client.call_api(
                path,
                "GET",
                query_params=query,
                header_params={"Accept": "application/json"},
                response_types_map={200: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _preload_content=True,
            )
        except ApiException as error:
            if error.status == 410:
                raise _Gone from None
            raise
        return response if isinstance(response, dict) else {}

    async def _watch(self, revision: str) -> str:
        self.watches += 1
        query = self._query(
            watch="true",
            allowWatchBookmarks="true",
            timeoutSeconds=str(WATCH_SECONDS),
            resourceVersion=revision,
        )
        response = await self.api_client.call_api(
            self.kind.collection(self.namespace),
            "GET",
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=10, sock_read=WATCH_SECONDS + 30
            ),
        )
        try:
            if response.status == 410:
                raise _Gone
            if response.status != 200:
                raise RuntimeError(f"watch answered {response.status}")
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        revision = self._event(json.loads(line), revision)
        finally:
            response.release()
        return revision

    def _event(self, event: dict[str, Any], revision: str) -> str:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone
            raise RuntimeError(f"watch error: {obj.get('reason')} {obj.get('code')}")
        new_revision = obj.get("metadata", {}).get("resourceVersion") or revision
        if kind in ("ADDED", "MODIFIED"):
            self.put(obj)
        elif kind == "DELETED":
            self._delete(obj)
        return str(new_revision)


class Caches:
    """The informers of one operator: every kind a pass reads, in its namespaces (or all).

    Reads never block on the network once synced; :meth:`wait_synced` gates the first pass.
    """

    def __init__(self, api_client: client.ApiClient, namespaces: list[str] | None) -> None:
        self.api_client = api_client
        self.namespaces: list[str | None] = list(namespaces) if namespaces else [None]
        self._kinds: dict[str, dict[str | None, Informer]] = {}
        # Proposals by (namespace, spec.rolloutRef.name): one pass reads its own in O(1).
        self._proposals_by_rollout: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self._proposal_bucket: dict[tuple[str, str], tuple[str, str]] = {}
        for kind in (ROLLOUTS, PROPOSALS, DEPLOYMENTS, CONFIG_MAPS):
            self._kinds[kind.plural] = {
                namespace: Informer(
                    api_client,
                    kind,
                    namespace,
                    on_change=self._index_proposal if kind is PROPOSALS else None,
                )
                for namespace in self.namespaces
            }
        self._secrets: dict[tuple[str, str], Informer] = {}

    def __repr__(self) -> str:
        return f"Caches({', '.join(n or '*' for n in self.namespaces)})"

    def start(self) -> None:
        for informers in self._kinds.values():
            for informer in informers.values():
                informer.start()

    async def wait_synced(self) -> None:
        """Until every informer has listed once."""
        await asyncio.gather(*(i.synced.wait() for d in self._kinds.values() for i in d.values()))

    async def stop(self) -> None:
        informers = [i for d in self._kinds.values() for i in d.values()]
        informers += list(self._secrets.values())
        await asyncio.gather(*(i.stop() for i in informers))

    def informers(self) -> list[Informer]:
        return [i for d in self._kinds.values() for i in d.values()] + list(self._secrets.values())

    def _informer(self, kind: Kind, namespace: str) -> Informer:
        by_namespace = self._kinds[kind.plural]
        informer = by_namespace.get(namespace) or by_namespace.get(None)
        if informer is None:
            raise LookupError(f"namespace {namespace} is not watched by this operator")
        return informer

    def _index_proposal(self, change: str, obj: dict[str, Any]) -> None:
        metadata = obj.get("metadata", {})
        key = (metadata.get("namespace") or "", metadata.get("name") or "")
        previous = self._proposal_bucket.pop(key, None)
        if previous is not None:
            self._proposals_by_rollout.get(previous, {}).pop(key[1], None)
        if change == "put":
            bucket = (key[0], (obj.get("spec") or {}).get("rolloutRef", {}).get("name", ""))
            self._proposals_by_rollout.setdefault(bucket, {})[key[1]] = obj
            self._proposal_bucket[key] = bucket

    # -- reads -----------------------------------------------------------------------------

    def rollout(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._informer(ROLLOUTS, namespace).get(namespace, name)

    def rollouts(self) -> list[dict[str, Any]]:
        return [o for i in self._kinds[ROLLOUTS.plural].values() for o in i.values()]

    def proposals(self, namespace: str, rollout: str | None = None) -> list[dict[str, Any]]:
        if rollout is not None:
            return list(self._proposals_by_rollout.get((namespace, rollout), {}).values())
        informer = self._informer(PROPOSALS, namespace)
        return [o for o in informer.values() if o["metadata"].get("namespace") == namespace]

    def deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._informer(DEPLOYMENTS, namespace).get(namespace, name)

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._informer(CONFIG_MAPS, namespace).get(namespace, name)

    async def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        """One key of a Secret, decoded; None when the Secret or the key does not exist.

        The first read of a Secret starts a watch of that one name and waits for its list;
        afterwards it is a dictionary lookup, current within the watch's latency.
        """
        informer = self._secrets.get((namespace, name))
        if informer is None:
            informer = Informer(
                self.api_client, SECRETS, namespace, field_selector=f"metadata.name={name}"
            )
            self._secrets[(namespace, name)] = informer
            informer.start()
        # A Secret we may not read (RBAC) never syncs: the pass reports it rather than hangs.
        await asyncio.wait_for(informer.synced.wait(), SECRET_SYNC_SECONDS)
        secret = informer.get(namespace, name)
        if secret is None:
            return None
        encoded = secret.get("data", {}).get(key)
        if encoded is None:
            return None
        return base64.b64decode(encoded).decode()

    # -- writes seen first by us or by kopf ---------------------------------------------------

    def is_news(self, plural: str, obj: Mapping[str, Any]) -> bool:
        """Whether ``obj`` is newer than (or absent from) the cache: worth offering."""
        metadata = obj.get("metadata") or {}
        kind = _CACHED_KINDS.get(plural)
        if kind is None or not metadata:
            return False
        namespace, name = metadata.get("namespace") or "", metadata.get("name") or ""
        try:
            current = self._informer(kind, namespace).get(namespace, name)
        except LookupError:
            return False
        if current is None:
            return True
        new, old = _revision(dict(obj)), _revision(current)
        return new is None or old is None or new > old

    def observe(self, plural: str, obj: dict[str, Any]) -> None:
        """Offer an object the operator holds (a write's response, kopf's body) to the cache."""
        if plural == SECRETS.plural or not obj.get("metadata"):
            return
        namespace = obj["metadata"].get("namespace") or ""
        with contextlib.suppress(LookupError, KeyError):
            self._informer(_CACHED_KINDS[plural], namespace).put(obj)
