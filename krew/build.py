"""Build the krew plugin archive and write its URL and sha256 into krew/promptloop.yaml.

``make krew`` runs this. The archive is byte-for-byte reproducible (fixed mtime, owner and
modes, gzip header without a timestamp), so the sha256 in the checked-in manifest can be checked
against the launcher in the tree (tests/unit/test_krew.py) and a release build gives the same
digest. Upload ``dist/kubectl-promptloop-v<version>.tar.gz`` to the release named in the URL.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import sys
import tarfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KREW = ROOT / "krew"
MANIFEST = KREW / "promptloop.yaml"
LAUNCHER = KREW / "kubectl-promptloop"
RELEASES = "https://github.com/promptloop/promptloop/releases/download"


def project_version() -> str:
    """The version in pyproject.toml (the CLI's ``--version``)."""
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def archive_name(version: str) -> str:
    """The release asset's file name."""
    return f"kubectl-promptloop-v{version}.tar.gz"


def archive_bytes() -> bytes:
    """The plugin archive: the launcher, executable, with nothing that varies between builds."""
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        data = LAUNCHER.read_bytes()
        info = tarfile.TarInfo("kubectl-promptloop")
        info.size, info.mode, info.mtime = len(data), 0o755, 0
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        tar.addfile(info, io.BytesIO(data))
    compressed = io.BytesIO()
    with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0, filename="") as out:
        out.write(payload.getvalue())
    return compressed.getvalue()


def manifest_text(version: str, sha256: str) -> str:
    """The checked-in manifest with this version's URL and digest filled in."""
    text = MANIFEST.read_text()
    text = re.sub(r"(?m)^(  version: )v\S+$", rf"\g<1>v{version}", text)
    text = re.sub(
        r"(?m)^(\s+uri: ).*$", rf"\g<1>{RELEASES}/v{version}/{archive_name(version)}", text
    )
    return re.sub(r"(?m)^(\s+sha256: ).*$", rf"\g<1>{sha256}", text)


def main() -> int:
    """Write dist/<archive> and update the manifest in place."""
    version = project_version()
    data = archive_bytes()
    dist = ROOT / "dist"
    dist.mkdir(exist_ok=True)
    (dist / archive_name(version)).write_bytes(data)
    MANIFEST.write_text(manifest_text(version, hashlib.sha256(data).hexdigest()))
    print(f"dist/{archive_name(version)}  sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
