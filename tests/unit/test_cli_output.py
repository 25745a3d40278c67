"""``promptloop --version``, ``list``'s table and ``-o json|yaml`` without a cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from promptloop.api import AgentRollout
from promptloop.api.common import from_cluster
from promptloop.cli import build_parser, main, version
from promptloop.output import age, dump_document, rollout_table

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)


def _rollout(name: str, namespace: str, **status: object) -> dict:  # type: ignore[type-arg]
    raw = yaml.safe_load((ROOT / "examples" / "samples" / "agentrollout.yaml").read_text())
    raw["metadata"].update(name=name, namespace=namespace, creationTimestamp="2026-12-02T09:00:00Z")
    raw["status"] = status
    return raw  # type: ignore[no-any-return]


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert version() == declared
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"promptloop {declared}\n"
    # The console script, as kubectl's plugin mechanism runs it.
    out = subprocess.run(
        [str(Path(sys.executable).parent / "kubectl-promptloop"), "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == f"promptloop {declared}\n"


def test_list_and_status_take_output_formats() -> None:
    parser = build_parser("list")
    args = parser.parse_args(["list", "-A", "-o", "yaml"])
    assert args.all_namespaces and args.output == "yaml"
    args = build_parser("status").parse_args(["status", "classifier", "-o", "json"])
    assert args.output == "json"
    with pytest.raises(SystemExit):
        build_parser("list").parse_args(["list", "-o", "wide"])


def test_the_table_shows_one_line_per_rollout_and_namespaces_with_all() -> None:
    canary = {
        "phase": "AwaitingApproval",
        "stableVersion": "2.0.0",
        "canary": {"proposal": "classifier-2-1-0", "version": "2.1.0", "weight": 30},
        "someNewerField": True,
    }
    rollouts = [
        from_cluster(AgentRollout, _rollout("classifier", "team-a", **canary)),
        from_cluster(AgentRollout, _rollout("router", "team-b")),
    ]
    table = rollout_table(rollouts, all_namespaces=True, now=NOW).splitlines()
    assert table[0].split() == [
        "NAMESPACE",
        "NAME",
        "PHASE",
        "STABLE",
        "CANARY",
        "WEIGHT",
        "PROPOSAL",
        "AGE",
    ]
    assert table[1].split() == [
        "team-a",
        "classifier",
        "AwaitingApproval",
        "2.0.0",
        "2.1.0",
        "30%",
        "classifier-2-1-0",
        "3h",
    ]
    # Not reconciled yet: the spec's stable version, no canary.
    assert table[2].split() == ["team-b", "router", "<pending>", "2.0.0", "-", "-", "-", "3h"]
    # Columns line up: every cell of a column starts at the same offset.
    assert len({line.index(line.split()[3]) for line in table}) == 1
    narrow = rollout_table(rollouts[:1], all_namespaces=False, now=NOW).splitlines()
    assert narrow[0].split()[0] == "NAME" and narrow[1].split()[0] == "classifier"


@pytest.mark.parametrize(
    ("created", "expected"),
    [
        ("2026-12-02T11:59:15Z", "45s"),
        ("2026-12-02T11:48:00Z", "12m"),
        ("2026-12-02T10:30:00Z", "90m"),
        ("2026-12-02T07:00:00Z", "5h"),
        ("2026-11-29T12:00:00Z", "3d"),
        (None, "<unknown>"),
        ("yesterday", "<unknown>"),
    ],
)
def test_age_reads_like_kubectls(created: str | None, expected: str) -> None:
    assert age(created, NOW) == expected


def test_documents_keep_every_field_and_their_order() -> None:
    raw = _rollout("classifier", "team-a", phase="Stable", fieldFromTheFuture={"x": 1})
    as_json = json.loads(dump_document({"rollout": raw, "proposal": None}, "json"))
    assert as_json["rollout"]["status"]["fieldFromTheFuture"] == {"x": 1}
    assert as_json["proposal"] is None
    text = dump_document(raw, "yaml")
    assert yaml.safe_load(text) == raw
    assert text.index("apiVersion") < text.index("metadata") < text.index("spec")
    with pytest.raises(ValueError, match="unknown output format"):
        dump_document(raw, "toml")
