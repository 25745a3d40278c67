"""The krew plugin manifest (krew/promptloop.yaml) and the archive it points at.

Checked: the fields krew's own validation requires (name, a v-prefixed semver equal to the
package's, a short description, platforms with a selector, uri, sha256 and a relative bin that
the archive contains), that the sha256 is the digest of the archive built from the launcher in
the tree (`make krew` rewrites it; the build is reproducible), and that the launcher hands over
to the promptloop CLI, or says how to install it and exits 1.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import re
import subprocess
import tarfile
from pathlib import Path
from types import ModuleType

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("krew_build", ROOT / "krew" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_manifest_has_what_krew_validates() -> None:
    build = _build()
    manifest = yaml.safe_load((ROOT / "krew" / "promptloop.yaml").read_text())
    assert manifest["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert manifest["kind"] == "Plugin"
    assert manifest["metadata"]["name"] == "promptloop"  # `kubectl promptloop`
    spec = manifest["spec"]
    assert spec["version"] == f"v{build.project_version()}"
    assert re.fullmatch(r"v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", spec["version"])
    assert 0 < len(spec["shortDescription"]) <= 50
    assert spec["description"].strip() and "pipx install promptloop" in spec["caveats"]
    [platform] = spec["platforms"]
    [expression] = platform["selector"]["matchExpressions"]
    assert expression == {"key": "os", "operator": "In", "values": ["linux", "darwin"]}
    name = build.archive_name(build.project_version())
    assert platform["uri"] == f"{build.RELEASES}/{spec['version']}/{name}"
    data = build.archive_bytes()
    assert platform["sha256"] == hashlib.sha256(data).hexdigest(), "run `make krew`"
    assert not Path(platform["bin"]).is_absolute()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.getmember(platform["bin"])
        assert member.mode & 0o111, "the bin must be executable"
        assert tar.extractfile(member).read() == (ROOT / "krew" / "kubectl-promptloop").read_bytes()  # type: ignore[union-attr]
    assert [f["from"] for f in platform["files"]] == [platform["bin"]]


def test_the_archive_is_reproducible() -> None:
    build = _build()
    assert build.archive_bytes() == build.archive_bytes()


def test_launcher_hands_over_to_the_cli_or_says_how_to_install(tmp_path: Path) -> None:
    launcher = str(ROOT / "krew" / "kubectl-promptloop")
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    missing = subprocess.run([launcher, "list"], capture_output=True, text=True, env=bare)
    assert missing.returncode == 1
    assert "pipx install promptloop" in missing.stderr
    fake = tmp_path / "bin" / "promptloop"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "promptloop got: $*"\nexit 7\n')
    fake.chmod(0o755)
    env = {**bare, "PATH": f"{fake.parent}{os.pathsep}/usr/bin:/bin"}
    ran = subprocess.run([launcher, "list", "-A"], capture_output=True, text=True, env=env)
    assert (ran.returncode, ran.stdout) == (7, "promptloop got: list -A\n")
