"""The operator's one asynchronous Kubernetes client, and the error taxonomy at its boundary.

Everything else in the operator speaks in terms of :class:`Kube` methods and our own exceptions;
``kubernetes_asyncio``'s ``ApiException`` never escapes this package (gafaelfawr's pattern).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from promptloop.constants import GROUP, PROPOSAL_PLURAL, ROLLOUT_PLURAL, VERSION

__all__ = [
    "FIELD_MANAGER",
    "GATEWAY_API_GROUP_VERSION",
    "ROUTER_FIELD_MANAGER",
    "Conflict",
    "Forbidden",
    "Invalid",
    "Kube",
    "KubeError",
    "NotFound",
    "connect",
]

T = TypeVar("T")

FIELD_MANAGER = "promptloop-operator"
# The field manager of the HTTPRoute backendRef weights, and only of them: Argo CD is told to
# ignore what this manager owns (ignoreDifferences.managedFieldsManagers), so a separate name
# keeps every other field the operator writes under Argo CD's diff.
ROUTER_FIELD_MANAGER = "promptloop-router"
GATEWAY_API_GROUP_VERSION = "gateway.networking.k8s.io/v1"

# Characters beyond the Basic Multilingual Plane (emoji, say). JSON can only write them as a
# UTF-16 surrogate pair (\ud83d\ude00), which the API server's YAML decoder of an apply patch
# refuses ("found invalid Unicode character escape code"); YAML writes them as \U0001f600.
_ASTRAL = re.compile("([\U00010000-\U0010ffff])")


def apply_patch_body(manifest: Any) -> bytes:
    """``manifest`` as an ``application/apply-patch+yaml`` body the API server always decodes.

    JSON is YAML, except for the surrogate-pair escapes ``json.dumps`` uses for characters beyond
    U+FFFF; those are written as YAML's ``\\UXXXXXXXX`` instead. Everything else is plain
    ASCII JSON (control characters escaped), which YAML reads as the same strings.
    """
    if isinstance(manifest, str):
        inner = "".join(
            f"\\U{ord(part):08x}" if _ASTRAL.fullmatch(part) else json.dumps(part)[1:-1]
            for part in _ASTRAL.split(manifest)
            if part
        )
        return f'"{inner}"'.encode()
    if isinstance(manifest, dict):
        items = (apply_patch_body(str(k)) + b":" + apply_patch_body(v) for k, v in manifest.items())
        return b"{" + b",".join(items) + b"}"
    if isinstance(manifest, list | tuple):
        return b"[" + b",".join(apply_patch_body(v) for v in manifest) + b"]"
    return json.dumps(manifest).encode()


class KubeError(RuntimeError):
    """A Kubernetes API call failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFound(KubeError, LookupError):
    """The object does not exist (404)."""


class Conflict(KubeError):
    """The object exists already, or changed under us (409)."""


class Forbidden(KubeError):
    """RBAC or an admission policy refused (403)."""


class Invalid(KubeError):
    """The API server rejected the object's content (422)."""


def _translate(error: ApiException, what: str) -> KubeError:
    reason = ""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        reason = json.loads(error.body or b"{}").get("message", "")
    message = f"{what}: {reason or error.reason}"
    kinds: dict[int, type[KubeError]] = {404: NotFound, 409: Conflict, 403: Forbidden, 422: Invalid}
    return kinds.get(error.status, KubeError)(message, status=error.status)


async def _call(what: str, awaitable: Awaitable[T]) -> T:
    try:
        return await awaitable
    except ApiException as error:
        raise _translate(error, what) from None


class Kube:
    """Typed access to the handful of objects the operator reads and writes."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)

    async def close(self) -> None:
        """Release the connection pool."""
        await self.api_client.close()

    # -- custom resources ------------------------------------------------------------------

    async def get_rollout(self, namespace: str, name: str) -> dict[str, Any]:
        """One AgentRollout as a dict."""
        result: dict[str, Any] = await _call(
            f"get agentrollout {namespace}/{name}",
            self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, ROLLOUT_PLURAL, name
            ),
        )
        return result

    async def list_rollouts(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """AgentRollouts in a namespace, or in all namespaces."""
        if namespace:
            result = await _call(
                "list agentrollouts",
                self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, ROLLOUT_PLURAL
                ),
            )
        else:
            result = await _call(
                "list agentrollouts",
                self.custom.list_cluster_custom_object(GROUP, VERSION, ROLLOUT_PLURAL),
            )
        items: list[dict[str, Any]] = result.get("items", [])
        return items

    async def list_proposals(
        self, namespace: str, rollout: str | None = None
    ) -> list[dict[str, Any]]:
        """PromptProposals in a namespace: all, or those whose ``spec.rolloutRef.name`` is
        ``rollout`` (filtered by the API server through the CRD's selectable field)."""
        what = f"list promptproposals in {namespace}"
        if rollout:
            try:
                result = await _call(
                    what,
                    self.custom.list_namespaced_custom_object(
                        GROUP,
                        VERSION,
                        namespace,
                        PROPOSAL_PLURAL,
                        field_selector=f"spec.rolloutRef.name={rollout}",
                    ),
                )
                selected: list[dict[str, Any]] = result.get("items", [])
                return selected
            except KubeError as error:
                # Before Kubernetes 1.32 (or a CRD installed without selectableFields) the
                # selector is refused: list everything; callers filter by rolloutRef anyway.
                if error.status != 400:
                    raise
        result = await _call(
            what,
            self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PROPOSAL_PLURAL),
        )
        items: list[dict[str, Any]] = result.get("items", [])
        return items

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch the status subresource of one of our objects."""
        return await self._request(
            "PATCH",
            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}/status",
            {"status": status},
            "application/merge-patch+json",
            f"patch {plural} {namespace}/{name} status",
        )

    async def patch_merge(
        self, plural: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch one of our objects (the CLI's approve and reject use this)."""
        return await self._request(
            "PATCH",
            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}",
            patch,
            "application/merge-patch+json",
            f"patch {plural} {namespace}/{name}",
        )

    # -- workloads and config ---------------------------------------------------------------

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any]:
        """A Deployment as a plain dict (camelCase, as the API sends it)."""
        deployment = await _call(
            f"get deployment {namespace}/{name}",
            self.apps.read_namespaced_deployment(name, namespace),
        )
        result: dict[str, Any] = self.api_client.sanitize_for_serialization(deployment)
        return result

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create-or-update an object we own, by server-side apply (idempotent, conflict-free).

        Server-side apply with our field manager makes a retried create a no-op and never
        touches fields other managers own.
        """
        kind = manifest["kind"]
        namespace = manifest["metadata"]["namespace"]
        name = manifest["metadata"]["name"]
        if kind == "ConfigMap":
            path = f"/api/v1/namespaces/{namespace}/configmaps/{name}"
        elif kind == "Deployment":
            path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
        elif kind == "Service":
            path = f"/api/v1/namespaces/{namespace}/services/{name}"
        else:
            raise ValueError(f"apply does not handle {kind}")
        return await self._request(
            "PATCH",
            path,
            # Pre-encoded (see apply_patch_body); the charset parameter makes the client send
            # the bytes as they are instead of json.dumps-ing them again.
            apply_patch_body(manifest),
            "application/apply-patch+yaml; charset=utf-8",
            f"apply {kind} {namespace}/{name}",
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
        )

    async def request(
        self, method: str, path: str, body: dict[str, Any] | None, what: str
    ) -> dict[str, Any]:
        """One JSON API call on any path (the Lease, which has no typed method here)."""
        return await self._request(method, path, body, "application/json", what)

    # -- Gateway API -------------------------------------------------------------------------

    async def get_http_route(self, namespace: str, name: str) -> dict[str, Any]:
        """An HTTPRoute (gateway.networking.k8s.io/v1) as a plain dict."""
        return await self._request(
            "GET",
            f"/apis/{GATEWAY_API_GROUP_VERSION}/namespaces/{namespace}/httproutes/{name}",
            None,
            "application/json",
            f"get httproute {namespace}/{name}",
        )

    async def apply_http_route_rules(
        self, namespace: str, name: str, *, rules: list[dict[str, Any]], resource_version: str
    ) -> dict[str, Any]:
        """Server-side apply a user's HTTPRoute's ``spec.rules`` as :data:`ROUTER_FIELD_MANAGER`.

        The Gateway API CRDs declare ``rules`` and ``backendRefs`` atomic lists
        (``x-kubernetes-list-type: atomic``), so an apply must carry the whole list: the caller
        passes the rules it read with only the weights changed, and ``resourceVersion`` makes
        the apply fail (409) rather than overwrite a change made since that read.
        """
        body = {
            "apiVersion": GATEWAY_API_GROUP_VERSION,
            "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": resource_version},
            "spec": {"rules": rules},
        }
        return await self._request(
            "PATCH",
            f"/apis/{GATEWAY_API_GROUP_VERSION}/namespaces/{namespace}/httproutes/{name}",
            body,
            "application/apply-patch+yaml",
            f"apply weights of httproute {namespace}/{name}",
            query=[("fieldManager", ROUTER_FIELD_MANAGER), ("force", "true")],
        )

    async def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | bytes | None,
        content_type: str,
        what: str,
        *,
        query: list[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        """One raw API call with an explicit content type (the generated client picks its own)."""
        try:
            response = await self.api_client.call_api(
                path,
                method,
                query_params=query or [],
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                response_types_map={200: "object", 201: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _preload_content=True,
            )
        except ApiException as error:
            raise _translate(error, what) from None
        result: dict[str, Any] = response if isinstance(response, dict) else {}
        return result

    async def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        """Set the replica count of a Deployment we own."""
        await _call(
            f"scale deployment {namespace}/{name}",
            self.apps.patch_namespaced_deployment_scale(
                name, namespace, {"spec": {"replicas": replicas}}
            ),
        )

    async def get_config_map_value(self, namespace: str, name: str, key: str) -> str | None:
        """One key of a ConfigMap, or None when the map or key does not exist."""
        try:
            config_map = await _call(
                f"get configmap {namespace}/{name}",
                self.core.read_namespaced_config_map(name, namespace),
            )
        except NotFound:
            return None
        value: str | None = (config_map.data or {}).get(key)
        return value

    async def get_secret_value(self, namespace: str, name: str, key: str) -> str | None:
        """One key of a Secret, decoded; None when the Secret or key does not exist.

        The value is a credential: callers keep it out of logs, Events and status.
        """
        import base64

        try:
            secret = await _call(
                f"get secret {namespace}/{name}",
                self.core.read_namespaced_secret(name, namespace),
            )
        except NotFound:
            return None
        encoded = (secret.data or {}).get(key)
        if encoded is None:
            return None
        return base64.b64decode(encoded).decode()

    async def post_event(
        self,
        *,
        involved: dict[str, Any],
        reason: str,
        message: str,
        warning: bool = False,
    ) -> None:
        """Post a Kubernetes Event about one of our objects (best effort: never raises)."""
        import datetime
        import uuid

        metadata = involved["metadata"]
        now = datetime.datetime.now(datetime.UTC)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(
                name=f"{metadata['name']}.{uuid.uuid4().hex[:12]}", namespace=metadata["namespace"]
            ),
            involved_object=client.V1ObjectReference(
                api_version=involved.get("apiVersion"),
                kind=involved.get("kind"),
                name=metadata["name"],
                namespace=metadata["namespace"],
                uid=metadata.get("uid"),
                resource_version=metadata.get("resourceVersion"),
            ),
            reason=reason,
            message=message[:1024],
            type="Warning" if warning else "Normal",
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=client.V1EventSource(component="promptloop-operator"),
            reporting_component="promptloop.dev/operator",
            reporting_instance="promptloop-operator",
        )
        with contextlib.suppress(ApiException, ValueError):
            await self.core.create_namespaced_event(metadata["namespace"], event)


async def connect(kubeconfig: str | None = None) -> Kube:
    """Load in-cluster config when running in a Pod, else the kubeconfig; return a client."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return Kube(client.ApiClient(configuration))


@contextlib.asynccontextmanager
async def connected(kubeconfig: str | None = None) -> AsyncIterator[Kube]:
    """A client for the duration of a block."""
    kube = await connect(kubeconfig)
    try:
        yield kube
    finally:
        await kube.close()
