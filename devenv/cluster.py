"""A real local Kubernetes control plane, built from the Go module proxy and started on loopback.

One implementation serves ``make cluster-up``/``cluster-down``, ``promptloop dev cluster`` and the
pytest fixtures. It builds, once per version and cached outside the work tree, etcd,
kube-apiserver, kube-controller-manager and kube-scheduler from ``k8s.io/kubernetes`` (through a
wrapper module that replaces each staging module with its published tag, since ``go install``
refuses modules with ``replace`` directives), and kwok from ``sigs.k8s.io/kwok``. It then starts
them with RBAC authorization, client-certificate authentication and service-account keys, and
registers one kwok-managed fake Node so that Deployments produce Pods that turn Ready.

Everything binds 127.0.0.1 on free ports; every process started is recorded by PID in the state
directory and stopped by PID, never by name. ``shared/notes/control-plane.md`` has the recipe and
its sources.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from devenv.gobuild import go_env, run_go
from devenv.procs import alive, free_port, stop_pid

__all__ = [
    "K8S_VERSION",
    "KWOK_VERSION",
    "ClusterError",
    "ClusterState",
    "binaries_dir",
    "build",
    "down",
    "is_healthy",
    "issue_user_kubeconfig",
    "project_root",
    "register",
    "status",
    "up",
]

K8S_VERSION = "v1.37.2"
# publishing-bot tags every staging repository v0.X.Y for Kubernetes v1.X.Y.
STAGING_VERSION = "v0." + K8S_VERSION.split(".", 1)[1]
KWOK_VERSION = "v0.8.0"
# Bump when the build recipe changes so that caches built by an older recipe are rebuilt.
RECIPE = 1
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
FAKE_NODE = "kwok-node-0"

# The controllers the tests need: garbage collection of owned children, Deployment → ReplicaSet →
# Pod, namespace deletion, ServiceAccounts, Jobs/CronJobs (the improver's CronJob) and Pod GC.
CONTROLLERS = ",".join(
    [
        "garbage-collector-controller",
        "namespace-controller",
        "deployment-controller",
        "replicaset-controller",
        "serviceaccount-controller",
        "serviceaccount-token-controller",
        "job-controller",
        "cronjob-controller",
        "node-lifecycle-controller",
        "pod-garbage-collector-controller",
    ]
)

KWOK_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)


class ClusterError(RuntimeError):
    """The control plane could not be built, started or reached."""


def project_root() -> Path:
    """The checkout this package runs from (the directory holding pyproject.toml), else cwd."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").exists() and (parent / "operator").is_dir():
            return parent
    return Path.cwd()


def default_state_dir() -> Path:
    """Where a running cluster keeps its certificates, data, logs and kubeconfig."""
    return Path(os.environ.get("PROMPTLOOP_CLUSTER_DIR", project_root() / ".cluster"))


def cache_dir() -> Path:
    """The build cache, outside the work tree and keyed by version."""
    base = os.environ.get("PROMPTLOOP_CACHE") or os.environ.get("XDG_CACHE_HOME")
    root = Path(base) / "promptloop" if base else Path.home() / ".cache" / "promptloop"
    return root / "k8s" / K8S_VERSION


def binaries_dir() -> Path:
    """The directory holding the built binaries."""
    return cache_dir() / "bin"


def _say(message: str) -> None:
    print(f"[cluster] {message}", flush=True)


# --------------------------------------------------------------------------------------------
# Build


def _build_info() -> dict[str, Any]:
    return {"kubernetes": K8S_VERSION, "kwok": KWOK_VERSION, "recipe": RECIPE}


def _is_built() -> bool:
    info = binaries_dir() / "build-info.json"
    if not info.exists() or not all((binaries_dir() / b).exists() for b in BINARIES):
        return False
    try:
        recorded: dict[str, Any] = json.loads(info.read_text())
        return recorded == _build_info()
    except (OSError, ValueError):
        return False


def _go_env() -> dict[str, str]:
    env = go_env()
    env.setdefault("GOFLAGS", "-mod=mod")
    return env


def _run_go(
    args: Sequence[str], *, cwd: Path, label: str, env: dict[str, str] | None = None
) -> str:
    """Run a go command in ``cwd``, logging beside it, with a heartbeat (builds take minutes)."""
    return run_go(
        args,
        cwd=cwd,
        label=label,
        log_path=cwd / f"{label.replace(' ', '-')}.log",
        say=_say,
        error=ClusterError,
        env=env or _go_env(),
    )


def _write_wrapper_module(module_dir: Path) -> None:
    """The wrapper module: require k8s.io/kubernetes, replace every staging module by its tag."""
    module_dir.mkdir(parents=True, exist_ok=True)
    download = subprocess.run(
        ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{K8S_VERSION}"],
        cwd=tempfile.gettempdir(),
        env=_go_env(),
        capture_output=True,
        text=True,
    )
    if download.returncode != 0:
        raise ClusterError(f"cannot fetch k8s.io/kubernetes@{K8S_VERSION}: {download.stderr}")
    upstream_gomod = Path(json.loads(download.stdout)["GoMod"]).read_text()
    staging = []
    for line in upstream_gomod.splitlines():
        parts = line.split()
        # Lines like "k8s.io/api => ./staging/src/k8s.io/api" (inside the replace block).
        if len(parts) == 3 and parts[1] == "=>" and parts[2].startswith("./staging/"):
            staging.append(parts[0])
    if not staging:
        raise ClusterError("found no staging modules in k8s.io/kubernetes's go.mod")
    replaces = "\n".join(f"\t{m} => {m} {STAGING_VERSION}" for m in sorted(staging))
    (module_dir / "go.mod").write_text(
        "module local/promptloop-k8sbins\n\ngo 1.26.0\n\n"
        f"require k8s.io/kubernetes {K8S_VERSION}\n\nreplace (\n{replaces}\n)\n"
    )
    (module_dir / "tools.go").write_text(
        "//go:build tools\n\npackage tools\n\nimport (\n"
        '\t_ "go.etcd.io/etcd/server/v3"\n'
        '\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n'
        '\t_ "k8s.io/kubernetes/cmd/kube-controller-manager"\n'
        '\t_ "k8s.io/kubernetes/cmd/kube-scheduler"\n)\n'
    )
    _say(f"wrapper module with {len(staging)} staging replacements in {module_dir}")


def build(*, force: bool = False) -> Path:
    """Build the control-plane binaries once; later calls return the cache at once.

    Parameters
    ----------
    force
        Rebuild although a complete cache exists.

    Returns
    -------
    Path
        The directory holding the binaries.

    Raises
    ------
    ClusterError
        When Go is missing or a build step fails (the message carries the tail of its log).
    """
    bin_dir = binaries_dir()
    if _is_built() and not force:
        _say(f"binaries for Kubernetes {K8S_VERSION} cached in {bin_dir}")
        return bin_dir
    if shutil.which("go") is None:
        raise ClusterError("Go is required to build the control plane (Go 1.26+ on PATH)")
    started = time.monotonic()
    _say(
        f"building Kubernetes {K8S_VERSION} (etcd, kube-apiserver, kube-controller-manager, "
        f"kube-scheduler) and kwok {KWOK_VERSION} from the Go module proxy into {bin_dir}; "
        "a cold build took about 10 minutes on two cores here, later runs reuse the cache"
    )
    module_dir = cache_dir() / "mod"
    bin_dir.mkdir(parents=True, exist_ok=True)
    _write_wrapper_module(module_dir)
    _run_go(["mod", "tidy"], cwd=module_dir, label="go mod tidy")
    ldflags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        major, minor = K8S_VERSION.lstrip("v").split(".")[:2]
        ldflags += [
            f"-X {package}.gitVersion={K8S_VERSION}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
        ]
    _run_go(
        [
            "build",
            "-v",
            "-trimpath",
            "-ldflags",
            "-s -w",
            "-o",
            str(bin_dir / "etcd"),
            "go.etcd.io/etcd/server/v3",
        ],
        cwd=module_dir,
        label="build etcd",
    )
    _run_go(
        [
            "build",
            "-v",
            "-trimpath",
            "-ldflags",
            " ".join(ldflags),
            "-o",
            f"{bin_dir}/",
            "k8s.io/kubernetes/cmd/kube-apiserver",
            "k8s.io/kubernetes/cmd/kube-controller-manager",
            "k8s.io/kubernetes/cmd/kube-scheduler",
        ],
        cwd=module_dir,
        label="build kube-apiserver kube-controller-manager kube-scheduler",
    )
    # kwok is built in its own module: inside the wrapper, minimal version selection would lift
    # its k8s.io/* requirements to the replaced tags and might break its compilation.
    env = _go_env()
    env["GOBIN"] = str(bin_dir)
    _run_go(
        ["install", "-v", f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}"],
        cwd=module_dir,
        label="build kwok",
        env=env,
    )
    _write_kwok_stages(bin_dir)
    (bin_dir / "build-info.json").write_text(json.dumps(_build_info()))
    _say(f"built in {time.monotonic() - started:.0f}s")
    return bin_dir


def _write_kwok_stages(bin_dir: Path) -> None:
    """Plain kwok ships no stages; concatenate the ones kwokctl injects into one config file."""
    gomodcache = subprocess.run(
        ["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True
    ).stdout.strip()
    stage_dir = Path(gomodcache) / f"sigs.k8s.io/kwok@{KWOK_VERSION}" / "kustomize" / "stage"
    if not stage_dir.exists():
        subprocess.run(
            ["go", "mod", "download", f"sigs.k8s.io/kwok@{KWOK_VERSION}"],
            cwd=tempfile.gettempdir(),
            env=_go_env(),
            check=True,
            capture_output=True,
        )
    documents = [(stage_dir / stage).read_text().strip() for stage in KWOK_STAGES]
    (bin_dir / "kwok-stages.yaml").write_text("\n---\n".join(documents) + "\n")


# --------------------------------------------------------------------------------------------
# Certificates


def _openssl(args: Sequence[str], cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ClusterError(f"openssl {' '.join(args[:2])} failed: {proc.stderr.strip()}")


_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _sign(pki: Path, name: str, subject: str, usage: str, san: str = "") -> None:
    """Issue ``name.crt``/``name.key`` signed by the cluster CA."""
    _openssl(["req", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject], pki)
    extensions = (
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage={usage}\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
        + (f"subjectAltName={san}\n" if san else "")
    )
    (pki / f"{name}.ext").write_text(extensions)
    _openssl(
        [
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-out",
            f"{name}.crt",
            "-extfile",
            f"{name}.ext",
        ],
        pki,
    )


def _make_pki(pki: Path) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    os.chmod(pki, 0o700)
    _openssl(
        [
            "req",
            "-x509",
            *_EC,
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "30",
            "-subj",
            "/CN=promptloop-local-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        pki,
    )
    _sign(pki, "apiserver", "/CN=localhost", "serverAuth", "DNS:localhost,IP:127.0.0.1")
    _sign(pki, "admin", "/O=system:masters/CN=promptloop-admin", "clientAuth")
    _openssl(
        [
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-out",
            "sa.key",
        ],
        pki,
    )
    _openssl(["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"], pki)


def _kubeconfig(server: str, ca: Path, user: dict[str, str], name: str = "promptloop-local") -> str:
    users = "\n".join(f"    {key}: {json.dumps(value)}" for key, value in user.items())
    return (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: {name}\n  cluster:\n    server: {server}\n"
        f"    certificate-authority: {json.dumps(str(ca))}\n"
        f"users:\n- name: {name}-user\n  user:\n{users}\n"
        f"contexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}-user\n"
        f"current-context: {name}\n"
    )


def issue_user_kubeconfig(
    user: str, groups: Sequence[str] = (), *, state_dir: Path | None = None
) -> Path:
    """A kubeconfig that authenticates as ``user`` in ``groups`` by a client certificate.

    Tests use it to act as a person (an approver, a stranger) against RBAC and admission policy.

    Parameters
    ----------
    user
        The user name (the certificate's CN).
    groups
        Group names (the certificate's O fields).
    state_dir
        The running cluster's state directory (default: ``.cluster``).

    Returns
    -------
    Path
        The kubeconfig file.
    """
    state = ClusterState.load(state_dir or default_state_dir())
    pki = state.dir / "pki"
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in user)
    subject = "".join(f"/O={group}" for group in groups) + f"/CN={user}"
    _sign(pki, f"user-{safe}", subject, "clientAuth")
    path = state.dir / f"kubeconfig-{safe}"
    path.write_text(
        _kubeconfig(
            state.server,
            pki / "ca.crt",
            {
                "client-certificate": str(pki / f"user-{safe}.crt"),
                "client-key": str(pki / f"user-{safe}.key"),
            },
        )
    )
    return path


# --------------------------------------------------------------------------------------------
# Processes and state


@dataclass
class ClusterState:
    """What ``up`` started, persisted as ``state.json`` so that ``down`` and reuse work."""

    dir: Path
    server: str
    etcd_url: str
    pids: dict[str, int]
    started_at: float
    bin_dir: str

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (system:masters)."""
        return self.dir / "kubeconfig"

    def save(self) -> None:
        """Write the state file."""
        data = asdict(self)
        data["dir"] = str(self.dir)
        (self.dir / "state.json").write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, state_dir: Path) -> ClusterState:
        """Read the state file; raises ClusterError when no cluster was started there."""
        path = state_dir / "state.json"
        if not path.exists():
            raise ClusterError(f"no cluster state in {state_dir} (run `make cluster-up`)")
        data = json.loads(path.read_text())
        data["dir"] = Path(data["dir"])
        return cls(**data)


def _start(name: str, args: Sequence[str], logs: Path) -> int:
    log: TextIO = (logs / f"{name}.log").open("a")
    # A new session: the processes outlive this command (`make cluster-up` returns) and are
    # stopped by PID, never by a signal to our process group.
    proc = subprocess.Popen(
        list(args),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    return proc.pid


def _ssl_context(state_dir: Path) -> ssl.SSLContext:
    pki = state_dir / "pki"
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    return context


def _get(url: str, *, context: ssl.SSLContext | None = None, timeout: float = 3) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, context=context, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except (OSError, urllib.error.URLError) as error:
        return 0, str(error)


def _wait(what: str, check: Any, *, timeout: float, pids: dict[str, int], logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        for name, pid in pids.items():
            if not alive(pid):
                tail = "\n".join((logs / f"{name}.log").read_text().splitlines()[-30:])
                raise ClusterError(f"{name} exited while waiting for {what}:\n{tail}")
        time.sleep(0.25)
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}; logs in {logs}")


def is_healthy(state_dir: Path | None = None) -> bool:
    """Whether a cluster started from ``state_dir`` is running and answers ``/readyz``."""
    state_dir = state_dir or default_state_dir()
    try:
        state = ClusterState.load(state_dir)
    except (ClusterError, OSError, ValueError, TypeError):
        return False
    if not all(alive(pid) for pid in state.pids.values()):
        return False
    code, body = _get(f"{state.server}/readyz", context=_ssl_context(state_dir))
    return code == 200 and body.strip() == "ok"


def _kubectl() -> str:
    candidate = Path(sys.executable).parent / "kubectl"
    return str(candidate) if candidate.exists() else (shutil.which("kubectl") or "kubectl")


def _kubectl_run(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [_kubectl(), "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def up(
    *, state_dir: Path | None = None, crds_dir: Path | None = None, timeout: float = 180
) -> ClusterState:
    """Start the control plane, or reuse a healthy one already started from ``state_dir``.

    Parameters
    ----------
    state_dir
        Where to keep certificates, etcd data, logs and the kubeconfig (default ``.cluster``).
    crds_dir
        CRDs to install before the controller-manager starts (its garbage collector discovers
        resources every 30 s; installing first makes owner-reference GC immediate).
        Default: the project's ``crds/``.
    timeout
        Seconds to wait for each component to become ready.

    Returns
    -------
    ClusterState
        The running cluster.

    Raises
    ------
    ClusterError
        When a binary is missing or a component fails to start (with the tail of its log).
    """
    state_dir = (state_dir or default_state_dir()).resolve()
    if is_healthy(state_dir):
        state = ClusterState.load(state_dir)
        _say(f"already up at {state.server}; kubeconfig {state.kubeconfig}")
        return state
    down(state_dir=state_dir, quiet=True)
    bin_dir = binaries_dir()
    if not _is_built():
        raise ClusterError(f"binaries missing in {bin_dir}: run `make cluster-build` first")
    started = time.monotonic()
    state_dir.mkdir(parents=True, exist_ok=True)
    logs = state_dir / "logs"
    logs.mkdir(exist_ok=True)
    pki = state_dir / "pki"
    _make_pki(pki)

    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    kcm_port, scheduler_port = free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    server = f"https://127.0.0.1:{api_port}"
    pids: dict[str, int] = {}
    state = ClusterState(state_dir, server, etcd_url, pids, time.time(), str(bin_dir))

    def save() -> None:
        state.pids = pids
        state.save()

    try:
        pids["etcd"] = _start(
            "etcd",
            [
                str(bin_dir / "etcd"),
                "--name",
                "promptloop",
                "--data-dir",
                str(state_dir / "etcd"),
                "--listen-client-urls",
                etcd_url,
                "--advertise-client-urls",
                etcd_url,
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-cluster",
                f"promptloop=http://127.0.0.1:{peer_port}",
                "--listen-metrics-urls",
                f"http://127.0.0.1:{free_port()}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
            logs,
        )
        save()
        _wait(
            "etcd",
            lambda: _get(f"{etcd_url}/health")[0] == 200,
            timeout=timeout,
            pids=pids,
            logs=logs,
        )

        pids["kube-apiserver"] = _start(
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                "--etcd-servers",
                etcd_url,
                "--bind-address",
                "127.0.0.1",
                # Without an explicit advertise address the apiserver looks for a host interface on
                # the default route, which a sandbox without one does not have.
                "--advertise-address",
                "127.0.0.1",
                # The kubernetes Service's endpoint reconciler refuses loopback addresses; nothing
                # here reaches the apiserver through that Service.
                "--endpoint-reconciler-type",
                "none",
                "--secure-port",
                str(api_port),
                "--cert-dir",
                str(pki),
                "--tls-cert-file",
                str(pki / "apiserver.crt"),
                "--tls-private-key-file",
                str(pki / "apiserver.key"),
                "--client-ca-file",
                str(pki / "ca.crt"),
                "--authorization-mode",
                "Node,RBAC",
                "--service-account-issuer",
                f"{server}/",
                "--service-account-key-file",
                str(pki / "sa.pub"),
                "--service-account-signing-key-file",
                str(pki / "sa.key"),
                "--service-cluster-ip-range",
                "10.0.0.0/24",
                # Pods get no token volumes here: no kubelet would mount them, and the admission
                # plugin would make pod creation race the serviceaccount controller.
                "--disable-admission-plugins",
                "ServiceAccount",
                "--allow-privileged=true",
                "--profiling=false",
            ],
            logs,
        )
        save()
        context = _ssl_context(state_dir)
        _wait(
            "kube-apiserver /readyz",
            lambda: _get(f"{server}/readyz", context=context) == (200, "ok"),
            timeout=timeout,
            pids=pids,
            logs=logs,
        )
        state.kubeconfig.write_text(
            _kubeconfig(
                server,
                pki / "ca.crt",
                {
                    "client-certificate": str(pki / "admin.crt"),
                    "client-key": str(pki / "admin.key"),
                },
            )
        )
        os.chmod(state.kubeconfig, 0o600)

        crds_dir = crds_dir if crds_dir is not None else project_root() / "crds"
        # Only CRD files: the directory also holds a kustomization for manifests/base.
        crd_files = [
            arg
            for path in sorted(crds_dir.glob("*.yaml"))
            if path.name != "kustomization.yaml"
            for arg in ("-f", str(path))
        ]
        if crd_files:
            _kubectl_run(state.kubeconfig, "apply", "--server-side", *crd_files)
            _kubectl_run(
                state.kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", *crd_files
            )

        kubeconfig = str(state.kubeconfig)
        common = [
            "--kubeconfig",
            kubeconfig,
            "--authentication-kubeconfig",
            kubeconfig,
            "--authorization-kubeconfig",
            kubeconfig,
            "--bind-address",
            "127.0.0.1",
            "--leader-elect=false",
        ]
        pids["kube-controller-manager"] = _start(
            "kube-controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                *common,
                "--secure-port",
                str(kcm_port),
                "--root-ca-file",
                str(pki / "ca.crt"),
                "--service-account-private-key-file",
                str(pki / "sa.key"),
                "--controllers",
                CONTROLLERS,
            ],
            logs,
        )
        pids["kube-scheduler"] = _start(
            "kube-scheduler",
            [
                str(bin_dir / "kube-scheduler"),
                *common,
                "--secure-port",
                str(scheduler_port),
            ],
            logs,
        )
        pids["kwok"] = _start(
            "kwok",
            [
                str(bin_dir / "kwok"),
                "--kubeconfig",
                kubeconfig,
                "--config",
                str(bin_dir / "kwok-stages.yaml"),
                "--manage-all-nodes=true",
                "--node-lease-duration-seconds=40",
                # The default pod CIDR overlaps the service range above.
                "--cidr=10.244.0.0/24",
                "--server-address",
                f"127.0.0.1:{free_port()}",
            ],
            logs,
        )
        save()
        _kubectl_run(
            state.kubeconfig,
            "apply",
            "-f",
            "-",
            stdin=json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": FAKE_NODE,
                        "labels": {
                            "kubernetes.io/hostname": FAKE_NODE,
                            "type": "kwok",
                            "kubernetes.io/os": "linux",
                        },
                        "annotations": {"kwok.x-k8s.io/node": "fake"},
                    },
                    "status": {
                        "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "250"},
                        "capacity": {"cpu": "32", "memory": "256Gi", "pods": "250"},
                    },
                }
            ),
        )
        _wait(
            f"node {FAKE_NODE} Ready",
            lambda: _node_ready(state.kubeconfig),
            timeout=timeout,
            pids=pids,
            logs=logs,
        )
        # The serviceaccount controller creates each namespace's `default` account; wait for it
        # so that the first test does not race it.
        _wait(
            "the default ServiceAccount",
            lambda: _exists(state.kubeconfig, "serviceaccount", "default", "default"),
            timeout=timeout,
            pids=pids,
            logs=logs,
        )
    except BaseException:
        down(state_dir=state_dir, quiet=True)
        raise
    _say(f"up in {time.monotonic() - started:.1f}s at {server}; kubeconfig {state.kubeconfig}")
    return state


def _node_ready(kubeconfig: Path) -> bool:
    try:
        out = _kubectl_run(
            kubeconfig,
            "get",
            "node",
            FAKE_NODE,
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
        )
    except ClusterError:
        return False
    return out.strip() == "True"


def _exists(kubeconfig: Path, kind: str, name: str, namespace: str) -> bool:
    try:
        _kubectl_run(kubeconfig, "get", kind, name, "-n", namespace, "-o", "name")
    except ClusterError:
        return False
    return True


def down(*, state_dir: Path | None = None, quiet: bool = False) -> None:
    """Stop every process ``up`` started from ``state_dir`` and remove its state.

    Processes are stopped by their recorded PIDs, in reverse start order: SIGTERM, then SIGKILL
    after a grace period. Nothing else on the machine is touched.
    """
    state_dir = state_dir or default_state_dir()
    try:
        state = ClusterState.load(state_dir)
    except (ClusterError, OSError, ValueError, TypeError):
        if not quiet:
            _say("no cluster running")
        return
    for name, pid in reversed(list(state.pids.items())):
        stop_pid(pid, grace=10)
        if not quiet:
            _say(f"stopped {name} (pid {pid})")
    for leftover in ("etcd", "pki", "logs", "state.json", "kubeconfig"):
        path = state_dir / leftover
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    for user_kubeconfig in state_dir.glob("kubeconfig-*"):
        user_kubeconfig.unlink(missing_ok=True)


def status(state_dir: Path | None = None) -> dict[str, Any]:
    """A summary of the cluster in ``state_dir``, for ``promptloop dev cluster status``."""
    state_dir = state_dir or default_state_dir()
    try:
        state = ClusterState.load(state_dir)
    except ClusterError:
        return {"running": False}
    return {
        "running": is_healthy(state_dir),
        "server": state.server,
        "kubeconfig": str(state.kubeconfig),
        "processes": {name: {"pid": pid, "alive": alive(pid)} for name, pid in state.pids.items()},
    }


@contextlib.contextmanager
def running(*, state_dir: Path | None = None) -> Iterator[ClusterState]:
    """A cluster for the duration of a block: reused if already up, else started and stopped."""
    state_dir = state_dir or default_state_dir()
    reused = is_healthy(state_dir)
    state = up(state_dir=state_dir)
    try:
        yield state
    finally:
        if not reused:
            down(state_dir=state_dir)


# --------------------------------------------------------------------------------------------
# Command line


def _cmd_build(args: argparse.Namespace) -> int:
    build(force=args.force)
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    build()
    up()
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    down()
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    summary = status()
    print(json.dumps(summary, indent=2))
    return 0 if summary.get("running") else 1


def register(dev_subparsers: Any) -> None:
    """Add ``promptloop dev cluster build|up|down|status``."""
    cluster = dev_subparsers.add_parser(
        "cluster", help="the local Kubernetes control plane (etcd, apiserver, KCM, scheduler, kwok)"
    )
    actions = cluster.add_subparsers(dest="cluster_action", metavar="ACTION", required=True)
    build_parser = actions.add_parser("build", help="build the binaries once (cached by version)")
    build_parser.add_argument("--force", action="store_true", help="rebuild despite the cache")
    build_parser.set_defaults(func=_cmd_build)
    actions.add_parser("up", help="build if needed, start, write .cluster/kubeconfig").set_defaults(
        func=_cmd_up
    )
    actions.add_parser("down", help="stop every process started by up").set_defaults(func=_cmd_down)
    actions.add_parser("status", help="print what is running").set_defaults(func=_cmd_status)
