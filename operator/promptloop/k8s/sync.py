"""The synchronous Kubernetes access of the command line and the improver.

The operator is async and uses :mod:`promptloop.k8s.client`; ``promptloop status|approve|reject|
diff`` and ``promptloop improve`` are short-lived commands that block, and use this module. It is
the only place outside ``k8s/client.py`` that imports the Kubernetes client: everything else
gets plain dicts and one error type, :class:`KubeRequestError`, that says what failed and how.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

import urllib3
from kubernetes import client
from kubernetes import config as _config
from kubernetes import watch as _watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from promptloop.constants import GROUP, VERSION
from promptloop.render.challenger import PromptSource, PromptSourceKind, resolve_env_from

__all__ = ["ClusterError", "KubeRequestError", "SyncKube", "default_namespace", "load_api_client"]

# The config loaders and the watch helper carry no annotations; typed as Any once here.
config: Any = _config
watch: Any = _watch

T = TypeVar("T")

_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# Connect and read timeouts: a CLI must fail in seconds, not hang on a dead API server.
TIMEOUT = (5.0, 20.0)


class ClusterError(Exception):
    """A cluster read or write failed, or the objects do not say what is needed."""


class KubeRequestError(ClusterError):
    """One API request failed.

    Attributes
    ----------
    what
        What was being done ("reading AgentRollout ns/name").
    status
        The HTTP status, or None when the API server could not be reached.
    detail
        The API server's message (or the connection error).
    """

    def __init__(self, what: str, status: int | None, detail: str) -> None:
        self.what = what
        self.status = status
        self.detail = detail
        if status is None:
            super().__init__(f"{what}: cannot reach the API server: {detail}")
        else:
            super().__init__(f"{what}: HTTP {status} {detail}".rstrip())


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
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except (ConfigException, OSError):
        return "default"
    if context is not None:
        active = next((c for c in contexts if c.get("name") == context), active)
    namespace = (active or {}).get("context", {}).get("namespace")
    return str(namespace) if namespace else "default"


def _api_message(error: ApiException) -> str:
    try:
        message = json.loads(error.body or "{}").get("message", "")
    except (ValueError, TypeError, AttributeError):
        message = ""
    return str(message or error.reason or "")


class SyncKube:
    """Blocking reads and writes in one namespace, with errors as :class:`KubeRequestError`."""

    def __init__(self, api: Any, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api)
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)

    @classmethod
    def connect(
        cls, kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None
    ) -> SyncKube:
        """From ``kubeconfig`` (else ``KUBECONFIG``, else in-cluster) and its namespace."""
        kubeconfig = kubeconfig or os.environ.get("KUBECONFIG") or None
        api = load_api_client(kubeconfig, context)
        return cls(api, namespace or default_namespace(kubeconfig, context))

    @property
    def server(self) -> str:
        """The API server's URL (for messages; it carries no credentials)."""
        return str(getattr(self.api.configuration, "host", "") or "the API server")

    def _call(self, what: str, function: Callable[[], T]) -> T:
        try:
            return function()
        except ApiException as error:
            raise KubeRequestError(what, error.status, _api_message(error)) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            # MaxRetryError's text repeats the URL and the pool; its reason is the useful part.
            reason = getattr(error, "reason", None) or error
            raise KubeRequestError(what, None, str(reason)) from None

    # -- custom resources ----------------------------------------------------------------------

    def list_all_namespaces(self, plural: str, what: str) -> list[dict[str, Any]]:
        """Every custom object of a kind in every namespace the credentials may list."""
        listing = cast(
            dict[str, Any],
            self._call(
                f"listing {what}s in all namespaces",
                lambda: self.custom.list_cluster_custom_object(
                    GROUP, VERSION, plural, _request_timeout=TIMEOUT
                ),
            ),
        )
        return list(listing.get("items") or [])

    def get(self, plural: str, name: str, what: str) -> dict[str, Any]:
        """One of our custom objects."""
        return cast(
            dict[str, Any],
            self._call(
                f"reading {what} {self.namespace}/{name}",
                lambda: self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, plural, name, _request_timeout=TIMEOUT
                ),
            ),
        )

    def list(self, plural: str, what: str) -> list[dict[str, Any]]:
        """Every custom object of a kind in the namespace."""
        listing = cast(
            dict[str, Any],
            self._call(
                f"listing {what}s in {self.namespace}",
                lambda: self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, plural, _request_timeout=TIMEOUT
                ),
            ),
        )
        return list(listing.get("items") or [])

    def patch(
        self, plural: str, name: str, patch: Mapping[str, Any], what: str, *, field_manager: str
    ) -> dict[str, Any]:
        """A merge patch (CRDs take no strategic merge patch: say merge explicitly)."""
        return cast(
            dict[str, Any],
            self._call(
                f"patching {what} {self.namespace}/{name}",
                lambda: self.custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.namespace,
                    plural,
                    name,
                    dict(patch),
                    field_manager=field_manager,
                    _content_type="application/merge-patch+json",
                    _request_timeout=TIMEOUT,
                ),
            ),
        )

    def create(self, plural: str, body: Mapping[str, Any], what: str) -> dict[str, Any]:
        """Create a custom object (never updates one that exists: 409)."""
        name = (body.get("metadata") or {}).get("name", "")
        return cast(
            dict[str, Any],
            self._call(
                f"creating {what} {self.namespace}/{name}",
                lambda: self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, plural, dict(body), _request_timeout=TIMEOUT
                ),
            ),
        )

    def wait_for_change(self, plural: str, name: str, resource_version: str, seconds: int) -> bool:
        """Block until the object changes after ``resource_version`` (True) or ``seconds`` pass.

        Raises
        ------
        KubeRequestError
            When the watch fails (RBAC without ``watch``, an expired resource version...).
        """
        stream = watch.Watch()
        try:
            for _event in stream.stream(
                self.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                plural,
                field_selector=f"metadata.name={name}",
                resource_version=resource_version,
                timeout_seconds=seconds,
                _request_timeout=(TIMEOUT[0], seconds + 5),
            ):
                stream.stop()
                return True
        except ApiException as error:
            raise KubeRequestError(
                f"watching {plural}", error.status, _api_message(error)
            ) from None
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as error:
            raise KubeRequestError(f"watching {plural}", None, str(error)) from None
        return False

    # -- built-in kinds ------------------------------------------------------------------------

    def deployment(self, name: str) -> dict[str, Any]:
        """A Deployment as the API serialises it (camelCase)."""
        return cast(
            dict[str, Any],
            self._call(
                f"reading Deployment {self.namespace}/{name}",
                lambda: self.api.sanitize_for_serialization(
                    self.apps.read_namespaced_deployment(
                        name, self.namespace, _request_timeout=TIMEOUT
                    )
                ),
            ),
        )

    def stable_prompt(self, source: PromptSource) -> tuple[str | None, str | None]:
        """The prompt text ``source`` points at, or None and why not (Secrets are never read).

        Raises
        ------
        KubeRequestError
            When a ConfigMap cannot be read for another reason than not existing.
        """
        if source.literal is not None:
            return source.literal, None
        if source.kind is PromptSourceKind.ENV_FROM:
            maps: dict[str, dict[str, str] | None] = {}
            for ref in source.env_from:
                if ref.kind == "configMap" and ref.name not in maps:
                    maps[ref.name] = self._optional_config_map(ref.name)
            value, why = resolve_env_from(source.env_from, maps)
            return value, None if value is not None else why
        if source.config_map is None or source.key is None:
            return None, source.detail or "the prompt source is unknown"
        data = self._optional_config_map(source.config_map)
        if data is None:
            return None, f"ConfigMap {source.config_map} (the stable prompt) does not exist"
        if source.key not in data:
            return None, f"ConfigMap {source.config_map} has no key {source.key!r}"
        return str(data[source.key]), None

    def _optional_config_map(self, name: str) -> dict[str, str] | None:
        try:
            return self.config_map_data(name)
        except KubeRequestError as error:
            if error.status == 404:
                return None
            raise

    def config_map_data(self, name: str) -> dict[str, str]:
        """A ConfigMap's ``data``."""
        data: dict[str, str] = self._call(
            f"reading ConfigMap {self.namespace}/{name}",
            lambda: (
                self.core.read_namespaced_config_map(
                    name, self.namespace, _request_timeout=TIMEOUT
                ).data
                or {}
            ),
        )
        return data
