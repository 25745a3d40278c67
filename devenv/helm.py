"""helm for the chart's tests and ``make helm``/``chart-lint``, built from the Go module proxy.

There is no release download here (the sandbox and CI reach only package registries), so helm is
``go install``-ed once per version into ``~/.cache/promptloop/tools/helm-<version>/helm``, the same
cache root as the control plane's binaries. ``helm.sh/helm/v3``'s go.mod has no ``replace``
directives, so a plain ``go install`` works (``shared/notes/control-plane.md`` §5).

The ldflags mirror helm's Makefile: the version string, and the Kubernetes version helm assumes
when it renders without a cluster (``helm template``/``lint``). Without them a go-installed helm
assumes Kubernetes v1.20 and refuses any chart whose ``kubeVersion`` asks for more.

Usage: ``python -m devenv.helm`` builds (or finds) it and prints its path.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devenv.gobuild import go_env, run_go

__all__ = ["HELM_VERSION", "HelmBuildError", "build", "helm_path", "main"]

# The newest v3 the module proxy served when this was written (`go list -m -versions
# helm.sh/helm/v3`); v3 because the chart is apiVersion v2 and v3 is what users run today.
HELM_VERSION = "v3.22.0"
_MODULE = "helm.sh/helm/v3"


class HelmBuildError(RuntimeError):
    """helm could not be built (no Go, the proxy refused the module, or the build failed)."""


def _tools_dir() -> Path:
    # Same root as devenv.cluster.cache_dir(): one cache to clear, outside the tree.
    base = os.environ.get("PROMPTLOOP_CACHE") or os.environ.get("XDG_CACHE_HOME")
    root = Path(base) / "promptloop" if base else Path.home() / ".cache" / "promptloop"
    return root / "tools"


def helm_path(version: str = HELM_VERSION) -> Path:
    """Where the helm binary of ``version`` lives (whether or not it is built yet)."""
    return _tools_dir() / f"helm-{version}" / "helm"


def _say(message: str) -> None:
    print(f"[helm] {message}", flush=True)


def _kubernetes_minor(version: str) -> str:
    """The Kubernetes minor helm's own client libraries target (k8s.io/client-go v0.X.Y → X)."""
    proc = subprocess.run(
        ["go", "mod", "download", "-json", f"{_MODULE}@{version}"],
        cwd=tempfile.gettempdir(),
        env=go_env(),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise HelmBuildError(f"the module proxy refused {_MODULE}@{version}: {proc.stderr.strip()}")
    go_mod = Path(json.loads(proc.stdout)["GoMod"]).read_text()
    match = re.search(r"^\s*k8s\.io/client-go v0\.(\d+)\.", go_mod, re.MULTILINE)
    if match is None:
        raise HelmBuildError(f"{_MODULE}@{version}'s go.mod names no k8s.io/client-go version")
    return match.group(1)


def build(version: str = HELM_VERSION, *, force: bool = False) -> Path:
    """Build helm once; later calls return the cached binary at once.

    Parameters
    ----------
    version
        A helm v3 version the module proxy serves.
    force
        Rebuild although the binary exists.

    Returns
    -------
    Path
        The helm binary.

    Raises
    ------
    HelmBuildError
        When Go is missing or the build fails (the message carries the tail of the log).
    """
    target = helm_path(version)
    if target.exists() and not force:
        return target
    if shutil.which("go") is None:
        raise HelmBuildError("Go is required to build helm (Go 1.24+ on PATH)")
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    _say(
        f"building helm {version} from the Go module proxy into {target.parent}; a cold build "
        "took about 6 minutes on two cores here, later runs reuse it"
    )
    minor = _kubernetes_minor(version)
    ldflags = " ".join(
        [
            "-s -w",
            f"-X {_MODULE}/internal/version.version={version}",
            f"-X {_MODULE}/pkg/chartutil.k8sVersionMajor=1",
            f"-X {_MODULE}/pkg/chartutil.k8sVersionMinor={minor}",
            f"-X {_MODULE}/pkg/lint/rules.k8sVersionMajor=1",
            f"-X {_MODULE}/pkg/lint/rules.k8sVersionMinor={minor}",
        ]
    )
    env = go_env()
    # Built into a scratch directory and renamed: a half-written binary is never "cached".
    scratch = Path(tempfile.mkdtemp(prefix="helm-build-", dir=target.parent))
    env["GOBIN"] = str(scratch)
    try:
        run_go(
            [
                "install",
                "-v",
                "-trimpath",
                "-ldflags",
                ldflags,
                f"{_MODULE}/cmd/helm@{version}",
            ],
            cwd=tempfile.gettempdir(),
            label=f"helm {version}",
            log_path=target.parent / "build.log",
            say=_say,
            error=HelmBuildError,
            env=env,
        )
        (scratch / "helm").replace(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _say(f"built helm {version} in {time.monotonic() - started:.0f}s: {target}")
    return target


def main(argv: list[str] | None = None) -> int:
    """Build (or find) helm and print its path on stdout."""
    parser = argparse.ArgumentParser(prog="python -m devenv.helm", description=__doc__)
    parser.add_argument("--version", default=HELM_VERSION, help=f"default {HELM_VERSION}")
    parser.add_argument("--force", action="store_true", help="rebuild despite the cache")
    args = parser.parse_args(argv)
    try:
        path = build(args.version, force=args.force)
    except HelmBuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
