"""The demo's *process kubelet*: it runs, as local processes, the agents that Deployments describe.

The local control plane has no container runtime: kwok marks Pods Ready, but nothing runs in
them. So that the demo's Deployments do something real, this module plays the kubelet's part for
one namespace, plainly and visibly:

* for each selected Deployment that is **Available** (``status.availableReplicas >= 1`` and
  ``spec.replicas >= 1``) it starts **one** process, whatever the replica count: the example
  agent's command (``examples/classifier/classifier.py`` in its own venv), never the image;
* the process gets the environment the pod template's first container gives it: ``value`` (with
  ``$(VAR)`` references expanded as the kubelet does), ``valueFrom.configMapKeyRef`` and
  ``secretKeyRef`` read from the namespace, ``fieldRef`` for the pod's name and namespace, and
  ``envFrom``; nothing of the parent's environment except ``PATH``, ``HOME`` and the locale;
* ``configMap`` and ``secret`` volumes mounted by that container are written under the demo's
  state directory, and any env value naming a mount path is rewritten to the local file (a
  process cannot read ``/etc/...`` the way a container would);
* what a pod network would provide is added and said: ``HOST=127.0.0.1``, a free ``PORT`` and
  ``AGENT_CALLBACK_URL=http://127.0.0.1:PORT`` (the "pod IP" AgentField calls back), unless the
  pod template sets ``AGENT_CALLBACK_URL`` itself (a gateway's address, "AgentField in front of
  the gateway" in the README): then the template's value is kept, as a real kubelet would;
* a Deployment scaled to zero or deleted has its process stopped (SIGTERM, then SIGKILL); a
  changed pod template restarts it; a process that dies is restarted with a growing back-off.

Everything it does is printed: the env (values from Secrets hidden), the prompt in full, the
PID, the port and the log file. :func:`describe_process` is the pure part (Deployment and the
referenced ConfigMaps and Secrets in, a :class:`ProcessSpec` out) and is unit-tested;
:class:`ProcessKubelet` does the I/O.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from devenv.procs import free_port

__all__ = [
    "AgentProcess",
    "PodSpecError",
    "ProcessKubelet",
    "ProcessSpec",
    "describe_process",
    "expand_references",
    "is_available",
    "pod_network",
    "referenced_objects",
]

# Kubelet-provided variables: what a pod's network gives an agent. They override the template,
# except a callback URL the template sets on purpose (a gateway's address).
_NETWORK_ENV = ("HOST", "PORT", "AGENT_CALLBACK_URL")
_CALLBACK_ENV = "AGENT_CALLBACK_URL"
# From the parent's environment only what a process needs to run at all.
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR")
# Names whose literal values are hidden in output too (a key pasted into a template by mistake).
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)", re.IGNORECASE)
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_SHOWN_VALUE = 100


class PodSpecError(ValueError):
    """The pod template cannot be run (the kubelet would report CreateContainerConfigError)."""


@dataclass(frozen=True)
class ProcessSpec:
    """What one Deployment's agent process gets.

    Attributes
    ----------
    deployment
        The Deployment's name.
    version
        Its ``promptloop.dev/version`` label, when set.
    image
        The container image the template names (not pulled: there is no runtime).
    env
        The resolved environment from the template (Secrets included; never printed).
    shown
        ``(name, how it is shown)`` in template order: literal values (cut short), where a
        referenced value came from, Secrets hidden.
    files
        Local files to write for the mounted volumes, with their content.
    mounts
        ``(mount path in the pod, local path)`` for every mount that was materialised.
    prompt
        ``(where it came from, text)`` for the prompt env var or mounted prompt file, if any.
    notes
        What could not be reproduced (unsupported env sources, volume types).
    digest
        Changes whenever the resolved env or files change (a restart is due).
    """

    deployment: str
    version: str | None
    image: str
    env: dict[str, str]
    shown: list[tuple[str, str]]
    files: dict[Path, str]
    mounts: list[tuple[str, Path]]
    prompt: tuple[str, str] | None
    notes: tuple[str, ...]
    digest: str


def is_available(deployment: Mapping[str, Any]) -> bool:
    """Whether the Deployment wants a replica and has one available.

    Parameters
    ----------
    deployment
        The Deployment as JSON.

    Returns
    -------
    bool
        ``spec.replicas`` (default 1) is at least 1 and ``status.availableReplicas`` too.
    """
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    replicas = spec.get("replicas", 1)
    return bool(replicas) and int(status.get("availableReplicas") or 0) >= 1


def _container(deployment: Mapping[str, Any]) -> Mapping[str, Any]:
    containers = ((deployment.get("spec") or {}).get("template") or {}).get("spec", {}).get(
        "containers"
    ) or []
    if not containers:
        raise PodSpecError("the pod template has no containers")
    first: Mapping[str, Any] = containers[0]
    return first


def referenced_objects(deployment: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """The ConfigMaps and Secrets the first container's env and mounted volumes refer to.

    Parameters
    ----------
    deployment
        The Deployment as JSON.

    Returns
    -------
    tuple of set
        ``(config map names, secret names)``.
    """
    container = _container(deployment)
    config_maps: set[str] = set()
    secrets: set[str] = set()
    for entry in container.get("env") or []:
        source = entry.get("valueFrom") or {}
        if "configMapKeyRef" in source:
            config_maps.add(source["configMapKeyRef"].get("name", ""))
        if "secretKeyRef" in source:
            secrets.add(source["secretKeyRef"].get("name", ""))
    for entry in container.get("envFrom") or []:
        if "configMapRef" in entry:
            config_maps.add(entry["configMapRef"].get("name", ""))
        if "secretRef" in entry:
            secrets.add(entry["secretRef"].get("name", ""))
    mounted = {mount.get("name") for mount in container.get("volumeMounts") or []}
    volumes = ((deployment.get("spec") or {}).get("template") or {}).get("spec", {}).get(
        "volumes"
    ) or []
    for volume in volumes:
        if volume.get("name") not in mounted:
            continue
        if "configMap" in volume:
            config_maps.add(volume["configMap"].get("name", ""))
        if "secret" in volume:
            secrets.add(volume["secret"].get("secretName", ""))
    config_maps.discard("")
    secrets.discard("")
    return config_maps, secrets


def expand_references(value: str, defined: Mapping[str, str]) -> str:
    """Expand ``$(VAR)`` as the kubelet does: defined names are replaced, ``$$`` is a literal
    ``$``, and a reference to an undefined name is left as written.

    Parameters
    ----------
    value
        A literal env value from the template.
    defined
        The variables defined before it.

    Returns
    -------
    str
        The expanded value.
    """

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return defined.get(name, match.group(0))

    return _REFERENCE.sub(replace, value)


def _shorten(value: str) -> str:
    flat = json.dumps(value)[1:-1]
    return json.dumps(value) if len(flat) <= _SHOWN_VALUE else f'"{flat[:_SHOWN_VALUE]}…"'


def _lookup(
    kind: str,
    ref: Mapping[str, Any],
    store: Mapping[str, Mapping[str, str]],
) -> str | None:
    name, key = ref.get("name", ""), ref.get("key", "")
    optional = bool(ref.get("optional", False))
    data = store.get(name)
    if data is None or key not in data:
        if optional:
            return None
        what = f"{kind} {name}" if data is None else f"key {key!r} of {kind} {name}"
        raise PodSpecError(f"{what} not found (the pod would not start)")
    return data[key]


def pod_network(port: int, template_env: Mapping[str, str]) -> dict[str, str]:
    """What the pod network gives a process on ``port``: ``HOST``, ``PORT`` and, unless the pod
    template sets one on purpose (a gateway's address), ``AGENT_CALLBACK_URL``."""
    network = {"HOST": "127.0.0.1", "PORT": str(port)}
    if _CALLBACK_ENV not in template_env:
        network[_CALLBACK_ENV] = f"http://127.0.0.1:{port}"
    return network


def describe_process(
    deployment: Mapping[str, Any],
    *,
    namespace: str,
    config_maps: Mapping[str, Mapping[str, str]],
    secrets: Mapping[str, Mapping[str, str]],
    volume_root: Path,
    prompt_env: str = "SYSTEM_PROMPT",
    prompt_file_env: str = "SYSTEM_PROMPT_FILE",
) -> ProcessSpec:
    """Resolve what a Deployment's first container would get, for a local process.

    Parameters
    ----------
    deployment
        The Deployment as JSON.
    namespace
        Its namespace (for ``fieldRef: metadata.namespace``).
    config_maps, secrets
        The referenced objects' data (secrets already decoded), by name.
    volume_root
        Where mounted volumes are materialised (``<root>/<volume>/<path>``).
    prompt_env
        The env var that carries the prompt (the rollout's ``spec.prompt.env``).
    prompt_file_env
        The env var that names a mounted prompt file.

    Returns
    -------
    ProcessSpec
        The environment, the files, what to show and what could not be reproduced.

    Raises
    ------
    PodSpecError
        When a required ConfigMap, Secret or key is missing, or there is no container.
    """
    meta = deployment.get("metadata") or {}
    name = str(meta.get("name", ""))
    pod_spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    container = _container(deployment)
    env: dict[str, str] = {}
    shown: dict[str, str] = {}
    notes: list[str] = []
    secret_names: set[str] = set()
    prompt: tuple[str, str] | None = None
    pod_name = f"{name}-local"

    for entry in container.get("envFrom") or []:
        prefix = entry.get("prefix", "")
        if "configMapRef" in entry:
            ref = entry["configMapRef"]
            data = config_maps.get(ref.get("name", ""))
            if data is None and not ref.get("optional"):
                raise PodSpecError(f"ConfigMap {ref.get('name')} not found (envFrom)")
            for key, value in (data or {}).items():
                env[prefix + key] = value
                shown[prefix + key] = f"(ConfigMap {ref.get('name')} via envFrom)"
        elif "secretRef" in entry:
            ref = entry["secretRef"]
            data = secrets.get(ref.get("name", ""))
            if data is None and not ref.get("optional"):
                raise PodSpecError(f"Secret {ref.get('name')} not found (envFrom)")
            for key, value in (data or {}).items():
                env[prefix + key] = value
                shown[prefix + key] = f"<hidden: Secret {ref.get('name')} via envFrom>"
                secret_names.add(prefix + key)

    for entry in container.get("env") or []:
        var = str(entry.get("name", ""))
        source = entry.get("valueFrom")
        if source is None:
            value = expand_references(str(entry.get("value", "")), env)
            env[var] = value
            hidden = _SECRET_NAME.search(var) is not None
            shown[var] = "<hidden>" if hidden else _shorten(value)
            if var == prompt_env:
                prompt = ("a literal value in the pod template", value)
            continue
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            found = _lookup("ConfigMap", ref, config_maps)
            if found is None:
                continue
            env[var] = found
            where = f"ConfigMap {ref.get('name')}, key {ref.get('key')}"
            shown[var] = f"({where}) {_shorten(found)}"
            if var == prompt_env:
                prompt = (where, found)
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            found = _lookup("Secret", ref, secrets)
            if found is None:
                continue
            env[var] = found
            shown[var] = f"<hidden: Secret {ref.get('name')}, key {ref.get('key')}>"
            secret_names.add(var)
        elif "fieldRef" in source:
            path = (source["fieldRef"] or {}).get("fieldPath", "")
            fields = {"metadata.name": pod_name, "metadata.namespace": namespace}
            if path in fields:
                env[var] = fields[path]
                shown[var] = f"(fieldRef {path}) {_shorten(fields[path])}"
            else:
                notes.append(f"{var}: fieldRef {path} is not reproduced by the process kubelet")
        else:
            notes.append(f"{var}: {', '.join(source)} is not reproduced by the process kubelet")

    files: dict[Path, str] = {}
    mounts: list[tuple[str, Path]] = []
    volumes = {volume.get("name"): volume for volume in pod_spec.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount.get("name"))
        mount_path = str(mount.get("mountPath", ""))
        if volume is None:
            raise PodSpecError(f"volumeMount {mount.get('name')} names no volume")
        if "configMap" in volume:
            kind, source_name = "ConfigMap", volume["configMap"].get("name", "")
            data = config_maps.get(source_name)
            items = volume["configMap"].get("items")
            optional = volume["configMap"].get("optional", False)
        elif "secret" in volume:
            kind, source_name = "Secret", volume["secret"].get("secretName", "")
            data = secrets.get(source_name)
            items = volume["secret"].get("items")
            optional = volume["secret"].get("optional", False)
        else:
            notes.append(
                f"volume {volume.get('name')} at {mount_path}: only configMap and secret "
                "volumes are reproduced by the process kubelet"
            )
            continue
        if data is None:
            if optional:
                continue
            raise PodSpecError(f"{kind} {source_name} (volume {volume.get('name')}) not found")
        paths = (
            {item["key"]: item.get("path", item["key"]) for item in items}
            if items
            else {key: key for key in data}
        )
        base = volume_root / str(volume.get("name"))
        for key, relative in paths.items():
            if key not in data:
                raise PodSpecError(f"key {key!r} of {kind} {source_name} not found (volume)")
            files[base / relative] = data[key]
        sub_path = mount.get("subPath")
        local = base / sub_path if sub_path else base
        mounts.append((mount_path, local))
        if kind == "ConfigMap" and sub_path and (base / sub_path) in files:
            text = files[base / sub_path]
            if prompt is None and env.get(prompt_file_env) == mount_path:
                prompt = (f"ConfigMap {source_name}, mounted at {mount_path}", text)

    # A process cannot read /etc/...: point env values that name a mount at the local copy.
    for var, value in list(env.items()):
        for mount_path, local in mounts:
            pure = PurePosixPath(mount_path)
            if value == mount_path or value.startswith(str(pure) + "/"):
                env[var] = str(local) + value[len(mount_path) :]
                if var not in secret_names:
                    shown[var] = f"{_shorten(value)} → local copy {_shorten(env[var])}"

    image = str(container.get("image", ""))
    template_labels = ((deployment.get("spec") or {}).get("template") or {}).get("metadata", {})
    version = (
        (meta.get("labels") or {}).get("promptloop.dev/version")
        or (template_labels.get("labels") or {}).get("promptloop.dev/version")
        or env.get("PROMPTLOOP_VERSION")
        or env.get("AGENT_VERSION")
    )
    digest_source = json.dumps(
        {"env": env, "files": {str(k): v for k, v in files.items()}, "image": image},
        sort_keys=True,
    )
    return ProcessSpec(
        deployment=name,
        version=version,
        image=image,
        env=env,
        shown=list(shown.items()),
        files=files,
        mounts=mounts,
        prompt=prompt,
        notes=tuple(notes),
        digest=hashlib.sha256(digest_source.encode()).hexdigest(),
    )


# ------------------------------------------------------------------------------------------------
# I/O


@dataclass
class AgentProcess:
    """One running agent process."""

    spec: ProcessSpec
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def url(self) -> str:
        """Where the agent listens."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """Its process id."""
        return self.process.pid


@dataclass
class _Crash:
    failures: int = 0
    retry_at: float = 0.0


class ProcessKubelet:
    """Runs one local process per Available selected Deployment of a namespace.

    Parameters
    ----------
    api_client
        A ``kubernetes.client.ApiClient`` (admin: it reads Secrets, as a kubelet does).
    namespace
        The namespace whose Deployments it runs.
    select
        Which Deployments (JSON) are agents to run.
    command
        The agent's command line (the image is never pulled).
    cwd
        The working directory of every process.
    state_dir
        Where logs (``<deployment>.log``) and volumes (``<deployment>/volumes``) go.
    say
        Where it reports what it does.
    prompt_env
        The env var carrying the prompt (shown in full when a process starts).
    targets_file
        If set, a Prometheus ``file_sd`` file kept listing every running agent's
        ``127.0.0.1:PORT`` (what a Prometheus pod discovery would find).
    """

    def __init__(
        self,
        *,
        api_client: Any,
        namespace: str,
        select: Callable[[Mapping[str, Any]], bool],
        command: Sequence[str],
        cwd: Path,
        state_dir: Path,
        say: Callable[[str], None],
        prompt_env: str = "SYSTEM_PROMPT",
        targets_file: Path | None = None,
    ) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.select = select
        self.command = list(command)
        self.cwd = cwd
        self.state_dir = state_dir
        self.say = say
        self.prompt_env = prompt_env
        self.targets_file = targets_file
        self._targets: list[str] | None = None
        self.processes: dict[str, AgentProcess] = {}
        self._crashes: dict[str, _Crash] = {}
        self._problems: dict[str, str] = {}
        # Re-entrant: ``say`` callbacks may ask for :meth:`pids` while a sync holds the lock.
        self._lock = threading.RLock()
        self._explained = False

    # -- one pass ------------------------------------------------------------------------------

    def sync(self) -> None:
        """Start, restart or stop processes so they match the Deployments now."""
        listing = self.api_client.sanitize_for_serialization(
            self.apps.list_namespaced_deployment(self.namespace, _request_timeout=10)
        )
        wanted = {
            item["metadata"]["name"]: item
            for item in listing.get("items") or []
            if self.select(item) and is_available(item)
        }
        with self._lock:
            for name in list(self.processes):
                if name not in wanted:
                    self._stop(name, "its Deployment is gone or scaled to zero")
            for name, deployment in wanted.items():
                self._ensure(name, deployment)
            self._write_targets()

    def _write_targets(self) -> None:
        if self.targets_file is None:
            return
        from devenv.prometheus import write_targets

        targets = sorted(f"127.0.0.1:{agent.port}" for agent in self.processes.values())
        if targets != self._targets:
            write_targets(self.targets_file, targets)
            self._targets = targets

    def _ensure(self, name: str, deployment: Mapping[str, Any]) -> None:
        try:
            spec = self._describe(deployment)
        except PodSpecError as error:
            if self._problems.get(name) != str(error):
                self._problems[name] = str(error)
                self.say(f"Deployment {name}: cannot start its process: {error}")
            return
        self._problems.pop(name, None)
        running = self.processes.get(name)
        if running is not None:
            code = running.process.poll()
            if code is None and running.spec.digest == spec.digest:
                return
            if code is None:
                self._stop(name, "its pod template changed")
            else:
                crash = self._crashes.setdefault(name, _Crash())
                crash.failures += 1
                delay = min(30.0, 2.0 ** (crash.failures - 1))
                crash.retry_at = time.monotonic() + delay
                del self.processes[name]
                self.say(
                    f"the agent process of {name} (pid {running.pid}) exited with code {code}; "
                    f"restarting in {delay:.0f}s (back-off, as for a crashing container). "
                    f"Last lines of {running.log_path}:\n" + _tail(running.log_path)
                )
                return
        backoff = self._crashes.get(name)
        if backoff is not None and time.monotonic() < backoff.retry_at:
            return
        self._start(spec)

    def _describe(self, deployment: Mapping[str, Any]) -> ProcessSpec:
        from kubernetes.client.exceptions import ApiException

        names, secret_names = referenced_objects(deployment)
        config_maps: dict[str, dict[str, str]] = {}
        secrets: dict[str, dict[str, str]] = {}
        for name in names:
            try:
                config_map = self.core.read_namespaced_config_map(
                    name, self.namespace, _request_timeout=10
                )
            except ApiException as error:
                if error.status != 404:
                    raise
                continue
            config_maps[name] = dict(config_map.data or {})
        for name in secret_names:
            try:
                secret = self.core.read_namespaced_secret(name, self.namespace, _request_timeout=10)
            except ApiException as error:
                if error.status != 404:
                    raise
                continue
            secrets[name] = {
                key: base64.b64decode(value).decode("utf-8", errors="replace")
                for key, value in (secret.data or {}).items()
            }
        return describe_process(
            deployment,
            namespace=self.namespace,
            config_maps=config_maps,
            secrets=secrets,
            volume_root=self.state_dir / deployment["metadata"]["name"] / "volumes",
            prompt_env=self.prompt_env,
        )

    def _start(self, spec: ProcessSpec) -> None:
        for path, content in spec.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
        port = free_port()
        network = pod_network(port, spec.env)
        env = {key: os.environ[key] for key in _INHERITED_ENV if key in os.environ}
        env.update(spec.env)
        env.update(network)
        env["PYTHONUNBUFFERED"] = "1"
        log_path = self.state_dir / f"{spec.deployment}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: Ctrl-C in the terminal reaches the demo, which stops the
                # agents in order, not every process at once.
                start_new_session=True,
            )
        agent = AgentProcess(spec=spec, process=process, port=port, log_path=log_path)
        self.processes[spec.deployment] = agent
        self.say(self._explain(agent, network))

    def _explain(self, agent: AgentProcess, network: Mapping[str, str]) -> str:
        spec = agent.spec
        lines = [
            f"Deployment {spec.deployment} is Available: started its agent as a local process, "
            f"pid {agent.pid}, version {spec.version or '?'}, listening on {agent.url}"
        ]
        if not self._explained:
            self._explained = True
            lines.append(
                "  (there is no container runtime here: kwok only marks the Pods Ready. The "
                "image is not pulled; the process kubelet runs `"
                + " ".join(_relative(part) for part in self.command)
                + "` once per Available Deployment, whatever its replica count, with the "
                "environment of the pod template's first container)"
            )
        lines.append(f"  image (not pulled): {spec.image or '(none)'}")
        lines.append("  env from the pod template:")
        lines.extend(f"    {name}={shown}" for name, shown in spec.shown)
        lines.append(
            "  added by the process kubelet (the pod network): "
            + " ".join(f"{key}={value}" for key, value in network.items())
        )
        for mount_path, local in spec.mounts:
            lines.append(f"  volume mount {mount_path} → {_relative(str(local))}")
        for note in spec.notes:
            lines.append(f"  not reproduced: {note}")
        if spec.prompt is not None:
            where, text = spec.prompt
            lines.append(f"  the prompt it is given ({where}):")
            lines.extend(f"    │ {line}" for line in text.splitlines() or [""])
        lines.append(f"  log: {_relative(str(agent.log_path))}")
        return "\n".join(lines)

    def _stop(self, name: str, why: str) -> None:
        agent = self.processes.pop(name, None)
        if agent is None:
            return
        _terminate(agent.process)
        self.say(f"stopped the agent process of {name} (pid {agent.pid}): {why}")

    # -- lifetime -----------------------------------------------------------------------------

    def run(self, stop: threading.Event, interval: float = 1.0) -> None:
        """Sync every ``interval`` seconds until ``stop`` is set; errors are reported, not fatal."""
        last_error = ""
        while not stop.is_set():
            try:
                self.sync()
                last_error = ""
            except Exception as error:  # the API server may blip; keep the agents running
                text = f"{type(error).__name__}: {error}"
                if text != last_error:
                    self.say(f"could not sync the agents with their Deployments: {text}")
                    last_error = text
            stop.wait(interval)

    def stop_all(self) -> None:
        """Stop every process this kubelet started."""
        with self._lock:
            for name in list(self.processes):
                self._stop(name, "the demo is stopping")

    def pids(self) -> dict[str, int]:
        """Running processes by Deployment name."""
        with self._lock:
            return {name: agent.pid for name, agent in self.processes.items()}


def _terminate(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "    (no log)"
    return "\n".join(f"    {line}" for line in text)


def _relative(path: str) -> str:
    with contextlib.suppress(ValueError):
        return str(Path(path).relative_to(Path.cwd()))
    return path
