"""What the improver reads from and writes to the cluster, with the synchronous client (a CLI).

Reads: the ``AgentRollout`` (its stable version: ``status.stableVersion``, else
``spec.stable.version``; its stable Deployment: ``status.stableDeployment``, else
``spec.stable.deploymentName``), that Deployment's pod template, and the stable prompt it carries:
the env var ``spec.prompt.env`` (default ``SYSTEM_PROMPT``) as a literal ``value``, a
``valueFrom.configMapKeyRef`` or an ``envFrom.configMapRef``; or the file at
``spec.prompt.mountPath`` from a ConfigMap volume. A prompt kept in a Secret is not read (the
improver has no business with Secrets): pass ``--stable-prompt`` instead.

Writes: one ``PromptProposal`` (create only; the improver never updates or deletes).

RBAC the improver needs: ``get`` agentrollouts, ``list``/``create`` promptproposals, ``get``
deployments and configmaps, in the rollout's namespace.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from kubernetes import client
from kubernetes import config as _config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from promptloop.constants import (
    DEFAULT_PROMPT_ENV,
    GROUP,
    PROMPT_CONFIGMAP_KEY,
    PROPOSAL_PLURAL,
    ROLLOUT_PLURAL,
    VERSION,
)

__all__ = [
    "ClusterError",
    "PromptRef",
    "ProposalSummary",
    "StableInfo",
    "create_proposal",
    "default_namespace",
    "find_prompt_ref",
    "list_proposals",
    "load_api_client",
    "read_stable",
]

# The config loaders carry no annotations; typed as Any once here rather than at every call.
config: Any = _config

_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class ClusterError(Exception):
    """A cluster read or write failed, or the objects do not say where the prompt is."""


@dataclass(frozen=True)
class PromptRef:
    """Where a pod template keeps the prompt: a literal, or a ConfigMap key (``key=None``: guess).

    Attributes
    ----------
    value
        The literal prompt, when the env var has a ``value``.
    config_map
        The ConfigMap's name otherwise.
    key
        The key in it; ``None`` when a whole ConfigMap directory is mounted at the path.
    """

    value: str | None = None
    config_map: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class StableInfo:
    """The rollout's stable version as the improver needs it."""

    rollout: str
    namespace: str
    version: str
    deployment: str
    prompt: str
    agentfield_url: str | None
    node_id: str | None


def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """An API client: in-cluster config inside a pod, else the kubeconfig.

    Raises
    ------
    ClusterError
        When neither is available.
    """
    try:
        if kubeconfig is None and context is None and _SA_NAMESPACE.exists():
            config.load_incluster_config()
            return client.ApiClient()
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    except (ConfigException, OSError) as error:
        raise ClusterError(f"no cluster access: {error}") from error


def default_namespace(kubeconfig: str | None = None, context: str | None = None) -> str:
    """The pod's namespace in a cluster, else the kubeconfig context's, else ``default``."""
    if kubeconfig is None and context is None and _SA_NAMESPACE.exists():
        return _SA_NAMESPACE.read_text().strip() or "default"
    try:
        _contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except (ConfigException, OSError):
        return "default"
    if context is not None:
        active = next((c for c in _contexts if c.get("name") == context), active)
    namespace = (active or {}).get("context", {}).get("namespace")
    return str(namespace) if namespace else "default"


def _api_error(what: str, error: ApiException) -> ClusterError:
    reason = getattr(error, "reason", "") or ""
    return ClusterError(f"{what}: HTTP {error.status} {reason}".rstrip())


def _container(pod_spec: Mapping[str, Any], name: str | None) -> Mapping[str, Any]:
    containers = pod_spec.get("containers") or []
    if not containers:
        raise ClusterError("the stable Deployment's pod template has no containers")
    if name is None:
        return cast(Mapping[str, Any], containers[0])
    for container in containers:
        if container.get("name") == name:
            return cast(Mapping[str, Any], container)
    raise ClusterError(f"the stable Deployment has no container named {name!r}")


def find_prompt_ref(
    pod_template: Mapping[str, Any],
    *,
    env: str | None = None,
    mount_path: str | None = None,
    container: str | None = None,
) -> PromptRef:
    """Find where a pod template keeps the prompt (pure).

    Parameters
    ----------
    pod_template
        The Deployment's ``spec.template`` (camelCase, as the API serialises it).
    env
        The env var carrying the prompt (default ``SYSTEM_PROMPT`` when no mount path is set).
    mount_path
        The file carrying the prompt.
    container
        The container's name (default: the first).

    Returns
    -------
    PromptRef
        A literal or a ConfigMap key.

    Raises
    ------
    ClusterError
        When the template does not carry the prompt as described, or keeps it in a Secret.
    """
    pod_spec = pod_template.get("spec") or {}
    chosen = _container(pod_spec, container)
    if mount_path:
        return _mounted_ref(pod_spec, chosen, mount_path)
    name = env or DEFAULT_PROMPT_ENV
    for item in chosen.get("env") or []:
        if item.get("name") != name:
            continue
        if "value" in item and item.get("value") is not None:
            return PromptRef(value=str(item["value"]))
        source = item.get("valueFrom") or {}
        ref = source.get("configMapKeyRef")
        if ref:
            return PromptRef(config_map=str(ref["name"]), key=str(ref["key"]))
        if source.get("secretKeyRef"):
            raise ClusterError(
                f"the prompt env var {name} comes from a Secret, which the improver does not "
                "read; pass --stable-prompt"
            )
        raise ClusterError(f"the prompt env var {name} has neither a value nor a configMapKeyRef")
    for item in chosen.get("envFrom") or []:
        ref = item.get("configMapRef")
        prefix = str(item.get("prefix") or "")
        if ref and name.startswith(prefix):
            return PromptRef(config_map=str(ref["name"]), key=name[len(prefix) :])
    raise ClusterError(
        f"container {chosen.get('name')!r} of the stable Deployment has no env var {name}"
    )


def _mounted_ref(
    pod_spec: Mapping[str, Any], container: Mapping[str, Any], mount_path: str
) -> PromptRef:
    path = posixpath.normpath(mount_path)
    volumes = {v.get("name"): v for v in pod_spec.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        at = posixpath.normpath(str(mount.get("mountPath", "")))
        volume = volumes.get(mount.get("name")) or {}
        config_map = volume.get("configMap")
        if not config_map:
            continue
        sub_path = mount.get("subPath")
        if sub_path and at == path:
            return PromptRef(
                config_map=str(config_map["name"]), key=_item_key(config_map, sub_path)
            )
        if not sub_path and path.startswith(at.rstrip("/") + "/"):
            file_name = path[len(at.rstrip("/")) + 1 :]
            return PromptRef(
                config_map=str(config_map["name"]), key=_item_key(config_map, file_name)
            )
        if not sub_path and at == path:
            return PromptRef(config_map=str(config_map["name"]), key=None)
    raise ClusterError(f"no ConfigMap volume of the stable Deployment is mounted at {mount_path}")


def _item_key(config_map: Mapping[str, Any], file_name: str) -> str:
    # With ``items`` a key is projected to a chosen path; without, the file name is the key.
    for item in config_map.get("items") or []:
        if item.get("path") == file_name:
            return str(item["key"])
    return file_name


def _read_config_map_key(core: Any, namespace: str, ref: PromptRef) -> str:
    try:
        config_map = core.read_namespaced_config_map(ref.config_map, namespace)
    except ApiException as error:
        raise _api_error(f"reading ConfigMap {namespace}/{ref.config_map}", error) from error
    data: Mapping[str, str] = config_map.data or {}
    key = ref.key
    if key is None:
        # A whole ConfigMap mounted as a directory at the prompt path: the operator's key, or
        # the only key.
        key = PROMPT_CONFIGMAP_KEY if PROMPT_CONFIGMAP_KEY in data else None
        if key is None and len(data) == 1:
            key = next(iter(data))
    if key is None or key not in data:
        raise ClusterError(
            f"ConfigMap {namespace}/{ref.config_map} has no key {key or PROMPT_CONFIGMAP_KEY!r}"
        )
    return str(data[key])


def read_stable(api: Any, rollout: str, namespace: str) -> StableInfo:
    """Read the rollout's stable version, Deployment and prompt.

    Parameters
    ----------
    api
        From :func:`load_api_client`.
    rollout
        The AgentRollout's name.
    namespace
        Its namespace.

    Returns
    -------
    StableInfo
        Version, Deployment, prompt, and the router's AgentField URL.

    Raises
    ------
    ClusterError
        On any failed read or when the prompt cannot be found.
    """
    custom = client.CustomObjectsApi(api)
    try:
        obj = cast(
            dict[str, Any],
            custom.get_namespaced_custom_object(GROUP, VERSION, namespace, ROLLOUT_PLURAL, rollout),
        )
    except ApiException as error:
        raise _api_error(f"reading AgentRollout {namespace}/{rollout}", error) from error
    spec: Mapping[str, Any] = obj.get("spec") or {}
    status: Mapping[str, Any] = obj.get("status") or {}
    stable: Mapping[str, Any] = spec.get("stable") or {}
    version = status.get("stableVersion") or stable.get("version")
    deployment = status.get("stableDeployment") or stable.get("deploymentName")
    if not version or not deployment:
        raise ClusterError(f"AgentRollout {namespace}/{rollout} names no stable version/Deployment")
    apps = client.AppsV1Api(api)
    try:
        deployment_obj = apps.read_namespaced_deployment(deployment, namespace)
    except ApiException as error:
        raise _api_error(f"reading Deployment {namespace}/{deployment}", error) from error
    template = api.sanitize_for_serialization(deployment_obj).get("spec", {}).get("template", {})
    prompt_spec: Mapping[str, Any] = spec.get("prompt") or {}
    ref = find_prompt_ref(
        template,
        env=prompt_spec.get("env"),
        mount_path=prompt_spec.get("mountPath"),
        container=prompt_spec.get("container"),
    )
    prompt = (
        ref.value
        if ref.value is not None
        else _read_config_map_key(client.CoreV1Api(api), namespace, ref)
    )
    router = (spec.get("router") or {}).get("agentfield") or {}
    return StableInfo(
        rollout=rollout,
        namespace=namespace,
        version=str(version),
        deployment=str(deployment),
        prompt=prompt,
        agentfield_url=router.get("url"),
        node_id=(spec.get("agent") or {}).get("nodeId"),
    )


@dataclass(frozen=True)
class ProposalSummary:
    """One existing PromptProposal of a rollout."""

    name: str
    version: str
    phase: str | None


def list_proposals(api: Any, rollout: str, namespace: str) -> list[ProposalSummary]:
    """Every PromptProposal in the namespace that references the rollout.

    Raises
    ------
    ClusterError
        When the list fails.
    """
    custom = client.CustomObjectsApi(api)
    try:
        listing = cast(
            dict[str, Any],
            custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PROPOSAL_PLURAL),
        )
    except ApiException as error:
        raise _api_error(f"listing PromptProposals in {namespace}", error) from error
    found: list[ProposalSummary] = []
    for item in listing.get("items") or []:
        spec = item.get("spec") or {}
        if (spec.get("rolloutRef") or {}).get("name") != rollout or not spec.get("version"):
            continue
        found.append(
            ProposalSummary(
                name=str((item.get("metadata") or {}).get("name", "")),
                version=str(spec["version"]),
                phase=(item.get("status") or {}).get("phase"),
            )
        )
    return found


def create_proposal(api: Any, body: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """Create a PromptProposal; never updates an existing one.

    Raises
    ------
    ClusterError
        When it exists already, admission refuses it, or the API is unreachable.
    """
    custom = client.CustomObjectsApi(api)
    name = (body.get("metadata") or {}).get("name", "")
    try:
        created = custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PROPOSAL_PLURAL, dict(body)
        )
    except ApiException as error:
        if error.status == 409:
            raise ClusterError(f"PromptProposal {namespace}/{name} exists already") from error
        detail = ""
        if error.body:
            detail = ": " + str(error.body)[:500]
        raise ClusterError(
            f"creating PromptProposal {namespace}/{name}: HTTP {error.status}{detail}"
        ) from error
    return cast(dict[str, Any], created)
