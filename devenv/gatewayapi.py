"""The Gateway API CRDs (standard channel, with their CEL validation) for the local control plane.

They come from the ``sigs.k8s.io/gateway-api`` Go module, which the module proxy serves (the
project's only route to them: no release download works here): ``go mod download`` fetches the
module zip once, the ``config/crd/standard/*.yaml`` files are copied into
``~/.cache/promptloop/gateway-api/<version>/``, the same cache root as the control plane, and
later runs use that copy. Installing is a server-side apply of those files, then a wait for
``Established``.

Data plane: no Gateway API implementation forwards requests here (see README, "Which routers
split traffic"): Envoy-based ones need an Envoy binary no registry here ships, NGINX Gateway Fabric
is not served by the proxy, Traefik v3.7.13 does not resolve from it, and Traefik v3.6.12 builds
but cannot reach pods (no reachable pod IPs; EndpointSlices refuse loopback addresses).
``devenv.gateway_standin`` plays the data plane's part for one route. The CRDs are what the
operator talks to; the API server validates every write with the upstream CEL rules.

Usage: ``python -m devenv.gatewayapi [--kubeconfig PATH]`` fetches (or finds) the CRDs
and, with a kubeconfig, installs them; it prints the directory.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from devenv.cluster import cache_dir
from devenv.gobuild import go_env

__all__ = ["GATEWAY_API_VERSION", "GatewayApiError", "crd_files", "fetch", "install"]

# The newest v1.6 patch the proxy serves (v1.6.x is what the issue asks for; v1.7 also exists).
GATEWAY_API_VERSION = "v1.6.3"
_MODULE = "sigs.k8s.io/gateway-api"


class GatewayApiError(RuntimeError):
    """The CRDs could not be fetched or installed."""


def _target(version: str) -> Path:
    # The cache root of devenv.cluster.cache_dir() (which adds k8s/<version>).
    return cache_dir().parent.parent / "gateway-api" / version


def crd_files(version: str = GATEWAY_API_VERSION) -> list[Path]:
    """The cached standard-channel CRD files (fetching them first when needed)."""
    return sorted(fetch(version).glob("*.yaml"))


def fetch(version: str = GATEWAY_API_VERSION) -> Path:
    """The directory holding the standard-channel CRDs of ``version``; downloads once.

    Raises
    ------
    GatewayApiError
        Go is missing, or the module proxy refused the module.
    """
    target = _target(version)
    if (target / ".complete").exists():
        return target
    if shutil.which("go") is None:
        raise GatewayApiError("the Gateway API CRDs come from the Go module proxy; install Go")
    with tempfile.TemporaryDirectory() as scratch:
        # Outside any module `go mod download mod@version` needs no go.mod.
        proc = subprocess.run(
            ["go", "mod", "download", "-json", f"{_MODULE}@{version}"],
            cwd=scratch,
            env=go_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
    try:
        info = json.loads(proc.stdout)
    except ValueError:
        info = {}
    if proc.returncode != 0 or not info.get("Dir"):
        detail = info.get("Error") or proc.stderr.strip() or proc.stdout.strip()
        raise GatewayApiError(f"go mod download {_MODULE}@{version} failed: {detail}")
    source = Path(info["Dir"]) / "config" / "crd" / "standard"
    files = sorted(source.glob("*.yaml"))
    if not files:
        raise GatewayApiError(f"{_MODULE}@{version} has no config/crd/standard/*.yaml")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for path in files:
        shutil.copyfile(path, staging / path.name)
    (staging / ".complete").write_text(f"{_MODULE}@{version}\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def install(kubeconfig: Path, *, kubectl: str, version: str = GATEWAY_API_VERSION) -> list[str]:
    """Server-side apply the CRDs and wait until the API server serves them.

    Parameters
    ----------
    kubeconfig
        An admin kubeconfig (CRDs are cluster-scoped).
    kubectl
        The kubectl binary.
    version
        The Gateway API version.

    Returns
    -------
    list of str
        The CRD names installed.
    """
    files = crd_files(version)
    args = [kubectl, "--kubeconfig", str(kubeconfig)]
    applied = subprocess.run(
        [*args, "apply", "--server-side", "--force-conflicts", *_file_args(files), "-o", "name"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if applied.returncode != 0:
        raise GatewayApiError(f"installing the Gateway API CRDs failed: {applied.stderr.strip()}")
    crds = [line for line in applied.stdout.split() if line.startswith("customresourcedefinition")]
    waited = subprocess.run(
        [*args, "wait", "--for=condition=Established", "--timeout=60s", *crds],
        capture_output=True,
        text=True,
        timeout=90,
    )
    if waited.returncode != 0:
        raise GatewayApiError(f"the Gateway API CRDs never became Established: {waited.stderr}")
    return [name.split("/", 1)[1] for name in crds]


def _file_args(files: list[Path]) -> list[str]:
    return [arg for path in files for arg in ("-f", str(path))]


def main(argv: list[str] | None = None) -> int:
    """Fetch the CRDs (and install them with ``--kubeconfig``); print their directory."""
    parser = argparse.ArgumentParser(prog="python -m devenv.gatewayapi")
    parser.add_argument("--kubeconfig", type=Path, help="install into this cluster")
    parser.add_argument("--kubectl", default=str(Path(sys.executable).parent / "kubectl"))
    parser.add_argument("--version", default=GATEWAY_API_VERSION)
    args = parser.parse_args(argv)
    try:
        directory = fetch(args.version)
        if args.kubeconfig is not None:
            names = install(args.kubeconfig, kubectl=args.kubectl, version=args.version)
            print(f"installed {len(names)} Gateway API CRDs ({args.version})", file=sys.stderr)
    except GatewayApiError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
