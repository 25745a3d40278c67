"""Render a proposal's challenger: an immutable prompt ConfigMap and a cloned Deployment.

This module is pure: it takes plain dicts and pydantic models and returns plain dicts (JSON types
only). It does no I/O beyond loading its own jinja2 templates (package data), reads no clock and
imports no Kubernetes client. The operator's ``k8s`` layer creates or patches what it returns.

Names
-----
* Deployment: ``<rollout>-v<version>`` with ``.`` and ``+`` in the version turned into ``-``
  (``classifier`` at ``2.1.0`` gives ``classifier-v2-1-0``).
* ConfigMap: ``<rollout>-v<version>-<digest[:10]>``, where ``digest`` is the prompt's sha256.
* Both are DNS-1123 labels of at most 63 characters, because the Deployment's name ends up in pod
  names and host names. When the plain form is ambiguous (a version with pre-release or build
  parts, which ``2.1.0-rc.1`` and ``2.1.0-rc-1`` would both dash to, or a rollout name that had to
  be changed to fit a DNS label) or too long, an 8-character hash of the exact rollout name and
  version is appended (after truncation when needed); the ConfigMap keeps its digest suffix.
* Label values (rollout, version, proposal) are used as they are when they are valid label values;
  ``+`` (semver build metadata, not allowed in labels) becomes ``_``; anything else invalid or
  longer than 63 characters is truncated with a hash suffix (:func:`label_value`).

ConfigMap
---------
``immutable: true``, ``data: {system-prompt: <prompt>}`` (byte for byte), the labels below, the
annotation ``promptloop.dev/prompt-digest``, one owner reference (``controller`` and
``blockOwnerDeletion`` true), in the proposal's namespace.

Deployment
----------
* ``metadata``: name as above, the proposal's namespace, the same owner reference, labels
  ``app.kubernetes.io/managed-by: promptloop``, ``app.kubernetes.io/version``,
  ``promptloop.dev/version``, ``promptloop.dev/proposal``, ``promptloop.dev/rollout``, plus
  ``app.kubernetes.io/name`` and ``app.kubernetes.io/part-of`` when the stable Deployment has
  them (never a blanket copy of the stable's labels: a copied Helm or Argo CD tracking label would
  make those tools claim an object the operator owns). Annotations
  ``promptloop.dev/prompt-digest`` and ``promptloop.dev/cloned-from: <stable Deployment name>``.
  The ConfigMap carries the same labels.
* ``spec.replicas`` is the stable's (1 when unset). ``spec.selector.matchLabels`` is
  ``{promptloop.dev/rollout, promptloop.dev/version}``: the challenger's own, so its ReplicaSet
  never selects the stable's pods. ``strategy``, ``minReadySeconds``, ``revisionHistoryLimit`` and
  ``progressDeadlineSeconds`` are kept when the stable sets them; nothing else of the stable's spec
  (``paused`` included) is.
* ``spec.template`` is a deep copy of the stable's pod template. Its labels lose
  ``pod-template-hash`` and gain the promptloop labels and ``app.kubernetes.io/version``; its
  annotations lose ``kubectl.kubernetes.io/restartedAt`` and gain ``promptloop.dev/prompt-digest``;
  its metadata loses everything that belongs to a live object (``creationTimestamp`` and the like).
* The prompt reaches the target container (``prompt.container`` by name, else the first
  container) in one of two ways:

  - env (``prompt.env``, ``SYSTEM_PROMPT`` when neither env nor mountPath is set): an entry
    ``valueFrom.configMapKeyRef {name: <ConfigMap>, key: system-prompt}``. It replaces the first
    entry of that name in place (order kept) and later duplicates are dropped; when there is none
    it is appended.
  - file (``prompt.mountPath``): a volume ``promptloop-prompt``
    (``configMap: {name, items: [{key: system-prompt, path: <basename>}]}``) and a mount
    ``{name: promptloop-prompt, mountPath, subPath: <basename>, readOnly: true}``. Existing
    volumes of that name, and mounts of that name or at the same path, are replaced in place; a
    volume whose only mount was replaced (the stable's own prompt volume) is dropped.
* The version reaches the agent: ``PROMPTLOOP_VERSION=<version>`` is set on the target container,
  and in every container and init container, every env entry whose literal ``value`` equals the
  stable version gets the new version instead, so an agent that registers with
  ``AGENT_VERSION=2.0.0`` registers the challenger as ``2.1.0``. The stable version is the
  ``stable_version`` argument, else ``status.stableVersion`` (the stable may have been promoted),
  else ``spec.stable.version``. Only exact literal values are replaced: ``valueFrom`` entries,
  command lines and values that merely contain the version are left alone.
* Nothing else of the stable object is copied: no ``status``, ``uid``, ``resourceVersion``,
  ``managedFields``, ``creationTimestamp``, ``generation``, owner references or annotations such
  as ``deployment.kubernetes.io/revision`` and ``kubectl.kubernetes.io/last-applied-configuration``.

Templates and safety
--------------------
``templates/*.j2`` are rendered by a sandboxed jinja2 environment with ``StrictUndefined`` and
autoescape off; every injected value goes through ``|tojson`` (JSON is YAML, and the filter also
escapes the characters YAML would fold or reject), so a prompt holding quotes, newlines, ``{{``,
``---`` or YAML syntax cannot change the document's structure. The text is parsed with
``yaml.safe_load`` semantics (libyaml's ``CSafeLoader`` when available) and the prompt and pod
template are checked to have survived exactly.

Inputs that cannot be rendered raise :class:`RenderError` with a message naming the problem; no
half-rendered object is ever returned. Rendering is deterministic: the same inputs give equal
dicts. The inputs are never modified.
"""

from __future__ import annotations

import copy
import enum
import functools
import hashlib
import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import jinja2
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from promptloop.api.agentrollout import AgentRollout, PromptDelivery
from promptloop.api.promptproposal import PromptProposal
from promptloop.constants import (
    DEFAULT_PROMPT_ENV,
    DOMAIN,
    LABEL_MANAGED_BY,
    LABEL_PROPOSAL,
    LABEL_ROLLOUT,
    LABEL_VERSION,
    MANAGED_BY,
    PROMPT_CONFIGMAP_KEY,
)

__all__ = [
    "ANNOTATION_CLONED_FROM",
    "ANNOTATION_PROMPT_DIGEST",
    "CARRIED_SPEC_FIELDS",
    "PROMPT_VOLUME",
    "VERSION_ENV",
    "ChallengerNames",
    "EnvFromRef",
    "OwnerRef",
    "PromptSource",
    "PromptSourceKind",
    "RenderError",
    "RenderedChallenger",
    "challenger_names",
    "label_value",
    "prompt_digest",
    "render_challenger",
    "resolve_env_from",
    "stable_prompt_source",
]

ANNOTATION_PROMPT_DIGEST: Final = f"{DOMAIN}/prompt-digest"
ANNOTATION_CLONED_FROM: Final = f"{DOMAIN}/cloned-from"
LABEL_APP_VERSION: Final = "app.kubernetes.io/version"
# The only stable Deployment labels worth keeping: they say what the app is, not who manages it.
KEPT_DEPLOYMENT_LABELS: Final = ("app.kubernetes.io/name", "app.kubernetes.io/part-of")
PROMPT_VOLUME: Final = "promptloop-prompt"
VERSION_ENV: Final = "PROMPTLOOP_VERSION"
# Rollout behaviour the user chose for the stable; everything else in its spec is re-derived.
CARRIED_SPEC_FIELDS: Final = (
    "strategy",
    "minReadySeconds",
    "revisionHistoryLimit",
    "progressDeadlineSeconds",
)

# Fields of a live object's metadata; a copy must not carry them (the API server would reject
# uid/resourceVersion on create, and the rest would lie about the new object).
_LIVE_METADATA: Final = frozenset(
    {
        "uid",
        "resourceVersion",
        "managedFields",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "ownerReferences",
        "selfLink",
        "finalizers",
        "name",
        "namespace",
        "generateName",
    }
)
# Set by the Deployment controller / `kubectl rollout restart` for the stable, not for us.
_DROPPED_TEMPLATE_LABELS: Final = frozenset({"pod-template-hash"})
_DROPPED_TEMPLATE_ANNOTATIONS: Final = frozenset({"kubectl.kubernetes.io/restartedAt"})

_MAX_NAME: Final = 63
_HASH_LEN: Final = 8
_PLAIN_VERSION = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_DIGEST = re.compile(r"[0-9a-f]{10,64}")
# Characters that survive json.dumps(ensure_ascii=False) raw but that PyYAML's reader rejects
# (C1 controls, surrogates, non-characters) or folds as line breaks inside a quoted scalar
# (NEL, LS, PS); a BOM is escaped for good measure. All are in the BMP, so \uXXXX suffices.
_YAML_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]")


class RenderError(ValueError):
    """The inputs cannot be rendered into a challenger; the message names the problem."""


@dataclass(frozen=True)
class OwnerRef:
    """The object that owns the rendered ConfigMap and Deployment (normally the proposal)."""

    api_version: str
    kind: str
    name: str
    uid: str


@dataclass(frozen=True)
class ChallengerNames:
    """Names of the challenger's objects and the label values that identify it."""

    deployment: str
    config_map: str
    rollout_label: str
    version_label: str
    proposal_label: str

    @property
    def selector(self) -> dict[str, str]:
        """The challenger Deployment's ``matchLabels``: selects its pods and no one else's."""
        return {LABEL_ROLLOUT: self.rollout_label, LABEL_VERSION: self.version_label}


@dataclass(frozen=True)
class RenderedChallenger:
    """What :func:`render_challenger` returns: two manifests, their names and the digest."""

    config_map: dict[str, Any]
    deployment: dict[str, Any]
    names: ChallengerNames
    digest: str


class PromptSourceKind(enum.StrEnum):
    """Where the stable Deployment's prompt comes from."""

    LITERAL = "literal"
    CONFIG_MAP_KEY = "configMapKey"
    FILE = "file"
    ENV_FROM = "envFrom"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class EnvFromRef:
    """An ``envFrom`` source that may define the prompt's env var: ``key`` is the variable's name
    less the source's ``prefix``; ``kind`` is ``configMap`` or ``secret``."""

    kind: str
    name: str
    key: str


@dataclass(frozen=True)
class PromptSource:
    """Where the stable's prompt comes from, as far as its pod template says.

    ``LITERAL`` carries the env value in ``literal``; ``CONFIG_MAP_KEY`` (an env var) and
    ``FILE`` (a mounted configMap volume, ``path`` is the file) carry ``config_map`` and ``key``;
    ``ENV_FROM`` lists in ``env_from`` the ``envFrom`` sources that may define the variable, in
    the container's order (Kubernetes: a later source wins), for :func:`resolve_env_from` once
    their ConfigMaps are read. ``UNKNOWN`` says why in ``detail``. ``container`` is the container
    that was examined.
    """

    kind: PromptSourceKind
    container: str
    literal: str | None = None
    config_map: str | None = None
    key: str | None = None
    path: str | None = None
    detail: str = ""
    env_from: tuple[EnvFromRef, ...] = ()


def prompt_digest(prompt: str) -> str:
    """The sha256 hex digest of a prompt's UTF-8 bytes.

    Parameters
    ----------
    prompt
        The system prompt.

    Returns
    -------
    str
        64 lowercase hex characters.

    Raises
    ------
    RenderError
        When the text cannot be encoded as UTF-8 (a lone surrogate).
    """
    try:
        data = prompt.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RenderError(f"the prompt is not valid Unicode text: {exc.reason}") from exc
    return hashlib.sha256(data).hexdigest()


def label_value(text: str) -> str:
    """A valid Kubernetes label value standing for ``text``.

    Valid values come back unchanged; ``+`` (semver build metadata) becomes ``_`` when ``text``
    has no ``_`` of its own (so the mapping stays one-to-one); anything else that is invalid or
    longer than 63 characters is cleaned and truncated, with a hash of ``text`` appended.

    Parameters
    ----------
    text
        A name or version.

    Returns
    -------
    str
        A label value (at most 63 characters, alphanumeric at both ends).
    """
    if "_" not in text:
        candidate = text.replace("+", "_")
        if _LABEL_VALUE.fullmatch(candidate):
            return candidate
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", text)
    head = cleaned[: _MAX_NAME - _HASH_LEN - 1].strip("._-")
    suffix = _short_hash(text)
    return f"{head}-{suffix}" if head else suffix


def challenger_names(
    *, rollout_name: str, version: str, digest: str, proposal_name: str
) -> ChallengerNames:
    """Deterministic names of a challenger's Deployment and ConfigMap (see the module docstring).

    Parameters
    ----------
    rollout_name
        The AgentRollout's name.
    version
        The challenger's version (semver).
    digest
        The prompt's sha256 hex digest (:func:`prompt_digest`); its first 10 characters name the
        ConfigMap.
    proposal_name
        The PromptProposal's name (for its label value).

    Returns
    -------
    ChallengerNames
        DNS-1123 label names of at most 63 characters, and the label values.

    Raises
    ------
    RenderError
        When a name or version is empty or the digest is not lowercase hex.
    """
    if not rollout_name or not version or not proposal_name:
        raise RenderError("rollout name, version and proposal name must all be non-empty")
    if not _DIGEST.fullmatch(digest):
        raise RenderError(f"prompt digest {digest!r} is not a lowercase sha256 hex digest")
    rollout_part = _dns_part(rollout_name)
    version_part = _dns_part(version)
    stem = f"{rollout_part}-v{version_part}"
    # The plain form is one-to-one only for X.Y.Z versions and DNS-label rollout names; anything
    # else gets a hash of the exact pair so that two proposals never share a Deployment.
    ambiguous = rollout_part != rollout_name or not _PLAIN_VERSION.fullmatch(version)
    key = f"{rollout_name}\x00{version}"
    deployment = _fit(stem, _MAX_NAME, ambiguous=ambiguous, key=key)
    config_map = _fit(stem, _MAX_NAME - 11, ambiguous=ambiguous, key=key) + "-" + digest[:10]
    for name in (deployment, config_map):
        if not _DNS_LABEL.fullmatch(name):
            raise RenderError(f"cannot make a DNS-1123 name from rollout {rollout_name!r}")
    return ChallengerNames(
        deployment=deployment,
        config_map=config_map,
        rollout_label=label_value(rollout_name),
        version_label=label_value(version),
        proposal_label=label_value(proposal_name),
    )


def render_challenger(
    *,
    rollout: AgentRollout,
    proposal: PromptProposal,
    stable_deployment: Mapping[str, Any],
    owner: OwnerRef,
    stable_version: str | None = None,
) -> RenderedChallenger:
    """Render the challenger's ConfigMap and Deployment for a proposal.

    Parameters
    ----------
    rollout
        The AgentRollout the proposal belongs to (its name, ``spec.prompt``, stable version).
    proposal
        The PromptProposal (its name, namespace, version and prompt).
    stable_deployment
        The stable Deployment as the API server returns it (a plain dict); not modified.
    owner
        The owner of both objects, normally the proposal (``uid`` required).
    stable_version
        The version the stable Deployment runs, when it differs from the rollout's record
        (default ``status.stableVersion``, else ``spec.stable.version``); env values equal to it
        are replaced with the proposal's version.

    Returns
    -------
    RenderedChallenger
        ``config_map`` and ``deployment`` as plain dicts, their ``names`` and the prompt ``digest``.

    Raises
    ------
    RenderError
        When the inputs cannot be rendered: missing namespace or owner uid, a proposal for another
        rollout, a stable Deployment without a pod template or containers, an unknown target
        container, a mountPath that is not a file, or both env and mountPath set.
    """
    namespace = proposal.metadata.namespace
    if not namespace:
        raise RenderError(f"proposal {proposal.metadata.name!r} has no metadata.namespace")
    rollout_name = rollout.metadata.name
    if proposal.spec.rollout_ref.name != rollout_name:
        raise RenderError(
            f"proposal {proposal.metadata.name!r} refers to rollout "
            f"{proposal.spec.rollout_ref.name!r}, not {rollout_name!r}"
        )
    if not owner.uid:
        raise RenderError(f"owner {owner.kind}/{owner.name} has no uid")
    stable_meta = _mapping(stable_deployment.get("metadata", {}), "stable Deployment metadata")
    stable_name = stable_meta.get("name")
    if not isinstance(stable_name, str) or not stable_name:
        raise RenderError("the stable Deployment has no metadata.name")
    stable_ns = stable_meta.get("namespace")
    if stable_ns not in (None, namespace):
        raise RenderError(
            f"stable Deployment {stable_name!r} is in namespace {stable_ns!r}, "
            f"the proposal in {namespace!r}"
        )

    prompt = proposal.spec.system_prompt
    version = proposal.spec.version
    digest = prompt_digest(prompt)
    names = challenger_names(
        rollout_name=rollout_name,
        version=version,
        digest=digest,
        proposal_name=proposal.metadata.name,
    )
    old_version = stable_version or rollout.status.stable_version or rollout.spec.stable.version

    stable_spec = _mapping(stable_deployment.get("spec"), f"Deployment {stable_name!r} spec")
    replicas = stable_spec.get("replicas", 1)
    if replicas is None:
        replicas = 1
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise RenderError(f"Deployment {stable_name!r} has invalid spec.replicas {replicas!r}")
    carried = {f: stable_spec[f] for f in CARRIED_SPEC_FIELDS if stable_spec.get(f) is not None}

    own_labels = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_APP_VERSION: names.version_label,
        LABEL_VERSION: names.version_label,
        LABEL_PROPOSAL: names.proposal_label,
        LABEL_ROLLOUT: names.rollout_label,
    }
    labels = dict(own_labels)
    stable_labels = _mapping(stable_meta.get("labels") or {}, "stable Deployment labels")
    for kept in KEPT_DEPLOYMENT_LABELS:
        if isinstance(stable_labels.get(kept), str):
            labels[kept] = stable_labels[kept]

    pod_template = _challenger_pod_template(
        stable_spec.get("template"),
        stable_name=stable_name,
        delivery=rollout.spec.prompt,
        config_map=names.config_map,
        promptloop_labels=own_labels,
        digest=digest,
        old_version=old_version,
        new_version=version,
    )

    config_map = _render(
        "configmap.yaml.j2",
        name=names.config_map,
        namespace=namespace,
        labels=labels,
        annotations={ANNOTATION_PROMPT_DIGEST: digest},
        owner=owner,
        data_key=PROMPT_CONFIGMAP_KEY,
        prompt=prompt,
    )
    deployment = _render(
        "deployment.yaml.j2",
        name=names.deployment,
        namespace=namespace,
        labels=labels,
        annotations={ANNOTATION_PROMPT_DIGEST: digest, ANNOTATION_CLONED_FROM: stable_name},
        owner=owner,
        replicas=replicas,
        selector=names.selector,
        carried_spec=carried,
        pod_template=pod_template,
    )
    # The templates quote everything, but a prompt that did not survive byte for byte would be a
    # silent production bug: check rather than trust.
    if config_map.get("data", {}).get(PROMPT_CONFIGMAP_KEY) != prompt:
        raise RenderError("the prompt did not survive rendering unchanged")
    if deployment.get("spec", {}).get("template") != pod_template:
        raise RenderError(f"the pod template of {stable_name!r} did not survive rendering")
    return RenderedChallenger(
        config_map=config_map, deployment=deployment, names=names, digest=digest
    )


def stable_prompt_source(
    *, stable_deployment: Mapping[str, Any], prompt: PromptDelivery
) -> PromptSource:
    """Find where the stable Deployment's prompt comes from, so the operator can read it.

    With ``prompt.mountPath`` the file is traced through the target container's volume mounts
    (the deepest mount containing the path wins) to a ``configMap`` volume, or a ``projected``
    volume with one matching configMap source, and its key. Otherwise the env var
    (``prompt.env``, default ``SYSTEM_PROMPT``) is looked up; as in Kubernetes, the last entry of
    that name wins. A literal value is reported verbatim (``$(VAR)`` references unexpanded).

    Parameters
    ----------
    stable_deployment
        The stable Deployment as the API server returns it.
    prompt
        The rollout's ``spec.prompt``.

    Returns
    -------
    PromptSource
        ``LITERAL``, ``CONFIG_MAP_KEY``, ``FILE``, or ``UNKNOWN`` with the reason in ``detail``
        (a Secret, a field ref, an ``envFrom`` import, an emptyDir...).

    Raises
    ------
    RenderError
        When the Deployment has no containers, the named container does not exist, or both env
        and mountPath are set.
    """
    env_name, mount_path = _delivery(prompt)
    stable_name = str(_mapping(stable_deployment.get("metadata", {}), "metadata").get("name", ""))
    stable_spec = _mapping(stable_deployment.get("spec"), f"Deployment {stable_name!r} spec")
    template = _mapping(stable_spec.get("template"), f"Deployment {stable_name!r} template")
    pod_spec = _mapping(template.get("spec"), f"Deployment {stable_name!r} pod spec")
    containers = _containers(pod_spec, stable_name)
    container = _target(containers, prompt.container, stable_name)
    cname = str(container["name"])
    if mount_path is not None:
        return _file_source(pod_spec, container, cname, mount_path)
    assert env_name is not None
    # As the kubelet builds the environment: envFrom sources in order, then env entries, each
    # later definition replacing an earlier one. An explicit entry therefore wins, the last one.
    entries = [e for e in _list(container.get("env")) if e.get("name") == env_name]
    if not entries:
        refs = []
        for item in _list(container.get("envFrom")):
            prefix = str(item.get("prefix") or "")
            if not env_name.startswith(prefix):
                continue
            for kind in ("configMap", "secret"):
                ref = item.get(f"{kind}Ref")
                if isinstance(ref, Mapping) and ref.get("name"):
                    refs.append(EnvFromRef(kind, str(ref["name"]), env_name[len(prefix) :]))
        if refs:
            names = ", ".join(f"{r.kind} {r.name}" for r in refs)
            return PromptSource(
                PromptSourceKind.ENV_FROM,
                cname,
                env_from=tuple(refs),
                detail=f"env {env_name} of container {cname!r} may come from envFrom ({names})",
            )
        return PromptSource(
            PromptSourceKind.UNKNOWN,
            cname,
            detail=f"container {cname!r} sets no env var {env_name}",
        )
    entry = entries[-1]
    value_from = entry.get("valueFrom")
    if isinstance(value_from, Mapping):
        ref = value_from.get("configMapKeyRef")
        if isinstance(ref, Mapping) and ref.get("name") and ref.get("key"):
            return PromptSource(
                PromptSourceKind.CONFIG_MAP_KEY,
                cname,
                config_map=str(ref["name"]),
                key=str(ref["key"]),
                detail=f"env {env_name} of container {cname!r} from ConfigMap {ref['name']}",
            )
        kinds = ", ".join(sorted(map(str, value_from))) or "nothing"
        return PromptSource(
            PromptSourceKind.UNKNOWN,
            cname,
            detail=f"env {env_name} of container {cname!r} comes from {kinds}",
        )
    return PromptSource(
        PromptSourceKind.LITERAL,
        cname,
        literal=str(entry.get("value", "")),
        detail=f"env {env_name} of container {cname!r} is a literal value",
    )


def resolve_env_from(
    refs: Sequence[EnvFromRef], config_maps: Mapping[str, Mapping[str, str] | None]
) -> tuple[str | None, str]:
    """The prompt an ``ENV_FROM`` source gives, from the ConfigMaps' data (None: absent).

    The last source that defines the key wins, as in Kubernetes. A Secret that may define it
    (Secrets are never read) makes the answer unknown when no later ConfigMap defines it.

    Returns
    -------
    tuple
        The prompt, or None and why not.
    """
    for ref in reversed(refs):
        if ref.kind == "secret":
            return None, f"the prompt may come from Secret {ref.name} (envFrom), which is not read"
        data = config_maps.get(ref.name)
        if data is not None and ref.key in data:
            return str(data[ref.key]), f"key {ref.key!r} of ConfigMap {ref.name} (envFrom)"
    names = ", ".join(r.name for r in refs)
    return None, f"no envFrom source ({names}) defines the prompt"


# --- names ------------------------------------------------------------------------------------


def _short_hash(text: str) -> str:
    # surrogatepass: a hash must never be the thing that fails on odd input.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LEN]


def _dns_part(text: str) -> str:
    """``text`` lowercased with every character a DNS label cannot hold turned into ``-``."""
    return re.sub(r"[^a-z0-9-]", "-", text.lower())


def _fit(stem: str, limit: int, *, ambiguous: bool, key: str) -> str:
    """``stem`` when it is unambiguous and fits in ``limit``, else its head plus a hash of key."""
    if not ambiguous and len(stem) <= limit:
        return stem
    head = stem[: limit - _HASH_LEN - 1].strip("-")
    return f"{head}-{_short_hash(key)}" if head else _short_hash(key)


# --- the pod template -------------------------------------------------------------------------


def _challenger_pod_template(
    stable_template: Any,
    *,
    stable_name: str,
    delivery: PromptDelivery,
    config_map: str,
    promptloop_labels: Mapping[str, str],
    digest: str,
    old_version: str,
    new_version: str,
) -> dict[str, Any]:
    """A deep copy of the stable's pod template, edited for the challenger."""
    env_name, mount_path = _delivery(delivery)
    template = copy.deepcopy(
        dict(_mapping(stable_template, f"Deployment {stable_name!r} template"))
    )
    meta = {
        k: v
        for k, v in _mapping(template.get("metadata") or {}, "template metadata").items()
        if k not in _LIVE_METADATA
    }
    labels = {
        k: v
        for k, v in _mapping(meta.get("labels") or {}, "template labels").items()
        if k not in _DROPPED_TEMPLATE_LABELS
    }
    labels.update(promptloop_labels)
    annotations = {
        k: v
        for k, v in _mapping(meta.get("annotations") or {}, "template annotations").items()
        if k not in _DROPPED_TEMPLATE_ANNOTATIONS
    }
    annotations[ANNOTATION_PROMPT_DIGEST] = digest
    meta["labels"] = labels
    meta["annotations"] = annotations
    template["metadata"] = meta

    pod_spec = _mapping(template.get("spec"), f"Deployment {stable_name!r} pod spec")
    containers = _containers(pod_spec, stable_name)
    target = _target(containers, delivery.container, stable_name)

    # Versions first, so the entries set below are never rewritten by the substitution.
    for container in containers + _list(pod_spec.get("initContainers")):
        for entry in _list(container.get("env")):
            if old_version and entry.get("value") == old_version:
                entry["value"] = new_version

    if mount_path is not None:
        _mount_prompt(pod_spec, target, config_map=config_map, mount_path=mount_path)
    else:
        assert env_name is not None
        if env_name == VERSION_ENV:
            raise RenderError(
                f"prompt.env must not be {VERSION_ENV}: that variable holds the version"
            )
        _set_env(
            target,
            {
                "name": env_name,
                "valueFrom": {"configMapKeyRef": {"name": config_map, "key": PROMPT_CONFIGMAP_KEY}},
            },
        )
    _set_env(target, {"name": VERSION_ENV, "value": new_version})
    return template


def _delivery(prompt: PromptDelivery) -> tuple[str | None, str | None]:
    """(env name, mount path): exactly one is set."""
    if prompt.env is not None and prompt.mount_path is not None:
        raise RenderError("set either prompt.env or prompt.mountPath, not both")
    if prompt.mount_path is not None:
        return None, prompt.mount_path
    return prompt.env or DEFAULT_PROMPT_ENV, None


def _set_env(container: dict[str, Any], entry: dict[str, Any]) -> None:
    """Put ``entry`` where the first entry of its name is (or at the end); drop duplicates."""
    env = container.get("env")
    env = env if isinstance(env, list) else []
    out: list[Any] = []
    placed = False
    for item in env:
        if isinstance(item, Mapping) and item.get("name") == entry["name"]:
            if not placed:
                out.append(entry)
                placed = True
            continue
        out.append(item)
    if not placed:
        out.append(entry)
    container["env"] = out


def _mount_prompt(
    pod_spec: dict[str, Any], target: dict[str, Any], *, config_map: str, mount_path: str
) -> None:
    """Mount the ConfigMap's prompt key as the file ``mount_path`` in the target container."""
    path = posixpath.normpath(mount_path)
    basename = posixpath.basename(path)
    if mount_path.endswith("/") or not basename or basename in (".", ".."):
        raise RenderError(f"prompt.mountPath {mount_path!r} must name a file, not a directory")
    volume = {
        "name": PROMPT_VOLUME,
        "configMap": {
            "name": config_map,
            "items": [{"key": PROMPT_CONFIGMAP_KEY, "path": basename}],
        },
    }
    mount = {"name": PROMPT_VOLUME, "mountPath": mount_path, "subPath": basename, "readOnly": True}

    mounts: list[Any] = []
    replaced: set[str] = set()
    placed = False
    for item in _list(target.get("volumeMounts")):
        same_path = posixpath.normpath(str(item.get("mountPath", ""))) == path
        if item.get("name") == PROMPT_VOLUME or same_path:
            replaced.add(str(item.get("name")))
            if not placed:
                mounts.append(mount)
                placed = True
            continue
        mounts.append(item)
    if not placed:
        mounts.append(mount)
    target["volumeMounts"] = mounts

    # A volume whose only mount we just replaced is the stable's old prompt source: dropping it
    # keeps the challenger from depending on an object it does not use.
    still_used = {
        str(m.get("name"))
        for c in _list(pod_spec.get("containers")) + _list(pod_spec.get("initContainers"))
        for m in _list(c.get("volumeMounts")) + _list(c.get("volumeDevices"))
    }
    volumes: list[Any] = []
    placed = False
    for item in _list(pod_spec.get("volumes")):
        vname = item.get("name")
        if vname == PROMPT_VOLUME:
            if not placed:
                volumes.append(volume)
                placed = True
            continue
        if vname in replaced and vname not in still_used:
            continue
        volumes.append(item)
    if not placed:
        volumes.append(volume)
    pod_spec["volumes"] = volumes


def _file_source(
    pod_spec: Mapping[str, Any], container: Mapping[str, Any], cname: str, mount_path: str
) -> PromptSource:
    """Trace the file ``mount_path`` of ``container`` to a ConfigMap key."""
    path = posixpath.normpath(mount_path)
    best: tuple[int, Mapping[str, Any], str] | None = None
    for candidate in _list(container.get("volumeMounts")):
        at = posixpath.normpath(str(candidate.get("mountPath", "")))
        if at == path:
            rel = ""
        elif path.startswith(at.rstrip("/") + "/"):
            rel = path[len(at.rstrip("/")) + 1 :]
        else:
            continue
        if best is None or len(at) > best[0]:
            best = (len(at), candidate, rel)
    if best is None:
        return PromptSource(
            PromptSourceKind.UNKNOWN,
            cname,
            path=mount_path,
            detail=f"no volume of container {cname!r} is mounted at {mount_path}",
        )
    _, mount, rel = best
    sub = str(mount.get("subPath") or "")
    in_volume = posixpath.join(sub, rel) if sub and rel else (sub or rel)
    vname = str(mount.get("name"))
    volume = next((v for v in _list(pod_spec.get("volumes")) if v.get("name") == vname), None)

    def unknown(why: str) -> PromptSource:
        return PromptSource(PromptSourceKind.UNKNOWN, cname, path=mount_path, detail=why)

    if volume is None:
        return unknown(f"volume {vname!r} mounted at {mount_path} is not defined")
    if not in_volume:
        return unknown(f"{mount_path} is the root of volume {vname!r}, a directory, not a file")
    candidates: list[tuple[str, str]] = []
    sources: list[Any] = []
    if isinstance(volume.get("configMap"), Mapping):
        sources = [volume["configMap"]]
    elif isinstance(volume.get("projected"), Mapping):
        sources = [
            s["configMap"]
            for s in _list(volume["projected"].get("sources"))
            if isinstance(s.get("configMap"), Mapping)
        ]
    else:
        kinds = ", ".join(sorted(k for k in volume if k != "name")) or "nothing"
        return unknown(f"volume {vname!r} holding {mount_path} is {kinds}, not a ConfigMap")
    for source in sources:
        items = _list(source.get("items"))
        if items:
            key = next(
                (
                    str(i["key"])
                    for i in items
                    if posixpath.normpath(str(i.get("path", ""))) == in_volume and i.get("key")
                ),
                None,
            )
        else:
            # Without items every key becomes a file of the same name; keys have no '/'.
            key = in_volume if "/" not in in_volume else None
        if key is not None and source.get("name"):
            candidates.append((str(source["name"]), key))
    if len(candidates) != 1:
        found = "no" if not candidates else "more than one"
        return unknown(f"{found} ConfigMap of volume {vname!r} provides {mount_path}")
    cm_name, key = candidates[0]
    return PromptSource(
        PromptSourceKind.FILE,
        cname,
        config_map=cm_name,
        key=key,
        path=mount_path,
        detail=f"{mount_path} in container {cname!r} is key {key!r} of ConfigMap {cm_name}",
    )


# --- input shapes -----------------------------------------------------------------------------


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise RenderError(f"{what} is missing or not an object")
    return value  # type: ignore[return-value]


def _list(value: Any) -> list[dict[str, Any]]:
    """The mappings of a list field (absent or null counts as empty)."""
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, Mapping)]  # type: ignore[misc]


def _containers(pod_spec: Mapping[str, Any], stable_name: str) -> list[dict[str, Any]]:
    containers = _list(pod_spec.get("containers"))
    if not containers:
        raise RenderError(f"Deployment {stable_name!r} has no containers in its pod template")
    for c in containers:
        if not isinstance(c.get("name"), str):
            raise RenderError(f"Deployment {stable_name!r} has a container without a name")
    return containers


def _target(
    containers: list[dict[str, Any]], wanted: str | None, stable_name: str
) -> dict[str, Any]:
    if wanted is None:
        return containers[0]
    for c in containers:
        if c["name"] == wanted:
            return c
    known = ", ".join(repr(c["name"]) for c in containers)
    raise RenderError(
        f"prompt.container {wanted!r} is not a container of Deployment {stable_name!r} "
        f"(it has {known})"
    )


# --- templates --------------------------------------------------------------------------------


def _tojson(value: Any) -> str:
    """``value`` as JSON that PyYAML reads back exactly (see ``_YAML_UNSAFE``)."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


@functools.cache
def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.PackageLoader("promptloop.render", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    # Replaces jinja2's HTML-oriented tojson: ours keeps non-ASCII text raw and escapes exactly
    # what YAML cannot carry raw.
    env.filters["tojson"] = _tojson
    return env


# libyaml's parser with PyYAML's safe constructor and resolver: the same documents and types as
# yaml.safe_load, about ten times faster on a pod template (it matters with 200 rollouts).
_FAST_SAFE_LOADER: Final[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _render(template_name: str, **context: Any) -> dict[str, Any]:
    try:
        text = _environment().get_template(template_name).render(**context)
        try:
            document = yaml.load(text, Loader=_FAST_SAFE_LOADER)
        except yaml.YAMLError:
            # libyaml refuses escaped lone surrogates, which PyYAML's own safe loader accepts.
            document = yaml.safe_load(text)
    except (jinja2.TemplateError, yaml.YAMLError, ValueError, TypeError) as exc:
        raise RenderError(f"rendering {template_name} failed: {exc}") from exc
    if not isinstance(document, dict):
        raise RenderError(f"rendering {template_name} did not produce an object")
    return document
