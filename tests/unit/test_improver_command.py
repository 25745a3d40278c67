"""``promptloop improve`` end to end against the in-process simulator: the proposal it writes and
every exit code (hold 3, model error 4, budget 5, evaluation refusal 6), with nothing written on
failure."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv.llm_simulator import InProcessSimulator, classify, run_in_thread
from promptloop.api.promptproposal import PromptProposal
from promptloop.cli import main
from promptloop.improver import command

BASE = "Classify the ticket as billing, bug, or other. One word."
TICKETS = Path(__file__).resolve().parents[2] / "examples" / "tickets" / "tickets.jsonl"
SECRET = "sk-test-do-not-print-0123456789"


@pytest.fixture(scope="module")
def sim() -> Iterator[InProcessSimulator]:
    with run_in_thread() as simulator:
        yield simulator


@pytest.fixture(autouse=True)
def _env(sim: InProcessSimulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sim.reset()
    for name in ("OPENAI_BASE_URL", "OPENAI_MODEL", "AGENTFIELD_URL", "PROMPTLOOP_PRICE_TABLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    # No cluster: a kubeconfig that does not exist.
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))


def _records(version: str = "2.0.0") -> list[dict[str, Any]]:
    records = []
    for line in TICKETS.read_text(encoding="utf-8").splitlines():
        ticket = json.loads(line)
        predicted = classify(BASE, ticket["text"])
        record = {
            "text": ticket["text"],
            "predicted": predicted,
            "expected": ticket["label"],
            "version": version,
        }
        if predicted == ticket["label"]:
            record["passed"] = True
        records.append(record)
    return records


def _write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def failures_file(tmp_path: Path) -> Path:
    return _write(tmp_path / "failures.jsonl", _records())


def _args(sim: InProcessSimulator, *extra: str) -> list[str]:
    return [
        "improve",
        "--rollout",
        "classifier",
        "-n",
        "demo",
        "--stable-version",
        "2.0.0",
        "--stable-prompt",
        BASE,
        "--base-url",
        sim.base_url,
        "--model",
        "promptloop-simulator",
        "--retry-backoff",
        "0",
        "--timeout",
        "5",
        *extra,
    ]


def _no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text


def test_normal_proposal_end_to_end(
    sim: InProcessSimulator,
    failures_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "proposal.yaml"
    code = main(_args(sim, "--file", str(failures_file), "--output", str(out)))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    text = out.read_text(encoding="utf-8")
    proposal = PromptProposal.model_validate(yaml.safe_load(text))
    assert proposal.metadata.name == "classifier-2-1-0"
    assert proposal.metadata.namespace == "demo"
    spec = proposal.spec
    assert spec.version == "2.1.0"
    assert spec.rollout_ref.name == "classifier"
    assert spec.system_prompt.startswith(BASE) and "refund" in spec.system_prompt
    assert spec.rationale.startswith("misses were")
    assert spec.approved is None and "approved" not in text
    assert spec.evidence is not None
    assert spec.evidence.failure_count == 91
    assert 1 <= len(spec.evidence.examples) <= 5
    assert spec.evidence.fixed is None  # no --evaluate
    assert spec.source is not None
    assert spec.source.improver == "promptloop-improve"
    assert spec.source.model == "promptloop-simulator"
    assert spec.source.prompt_tokens and spec.source.completion_tokens
    assert spec.source.cost_usd == "0.000000"
    assert "status" not in yaml.safe_load(text)
    assert captured.out == ""
    assert "91 distinct failures" in captured.err
    _no_secret(text, captured.err)


def test_yaml_on_stdout_and_failures_on_stdin(
    sim: InProcessSimulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    stdin = "".join(json.dumps(r) + "\n" for r in _records())
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text(BASE + "\n")
    args = _args(sim, "--source", "stdin")
    args[args.index(BASE)] = f"@{prompt_file}"
    assert main(args) == 0
    proposal = PromptProposal.model_validate(yaml.safe_load(capsys.readouterr().out))
    assert proposal.spec.version == "2.1.0"


def test_only_the_stable_versions_failures_count(
    sim: InProcessSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path / "f.jsonl", _records("1.9.0") + _records("2.0.0")[:10])
    out = tmp_path / "p.yaml"
    assert main(_args(sim, "--file", str(path), "--output", str(out))) == 3
    assert "other_version=330" in capsys.readouterr().err


def test_hold_writes_nothing(
    sim: InProcessSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    few = [r for r in _records() if "passed" not in r][:5]
    path = _write(tmp_path / "few.jsonl", few)
    out = tmp_path / "p.yaml"
    assert main(_args(sim, "--file", str(path), "--output", str(out))) == command.EXIT_HOLD
    captured = capsys.readouterr()
    assert "hold: 5 distinct failures" in captured.err and "minimum of 20" in captured.err
    assert not out.exists()
    assert captured.out == ""
    assert sim.stats()["requests"] == 0


def test_budget_refusal_sends_nothing(
    sim: InProcessSimulator,
    failures_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"promptloop-simulator": {"input": 100, "output": 100}}))
    out = tmp_path / "p.yaml"
    code = main(
        _args(
            sim,
            "--file",
            str(failures_file),
            "--price-table",
            str(prices),
            "--max-cost-usd",
            "0.50",
            "--output",
            str(out),
        )
    )
    assert code == command.EXIT_BUDGET
    assert "no request sent" in capsys.readouterr().err
    assert sim.stats()["requests"] == 0
    assert not out.exists()


@pytest.mark.parametrize(
    ("mode", "requests"),
    [("malformed", 3), ("missing_fields", 3), ("empty_prompt", 1), ("unchanged", 1)],
)
def test_malformed_output_exits_4_and_writes_nothing(
    sim: InProcessSimulator,
    failures_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mode: str,
    requests: int,
) -> None:
    sim.control(mode)
    out = tmp_path / "p.yaml"
    assert main(_args(sim, "--file", str(failures_file), "--output", str(out))) == 4
    captured = capsys.readouterr()
    assert "model error" in captured.err and "nothing written" in captured.err
    assert not out.exists() and captured.out == ""
    assert sim.stats()["chat_requests"] == requests


def test_server_errors_retry_then_exit_4(
    sim: InProcessSimulator, failures_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.control("error500")
    assert main(_args(sim, "--file", str(failures_file), "--retries", "1")) == 4
    assert sim.stats()["chat_requests"] == 2
    captured = capsys.readouterr()
    assert "after 2 attempts: HTTP 500" in captured.err
    assert captured.out == ""
    _no_secret(captured.err)


def test_timeouts_retry_then_exit_4(
    sim: InProcessSimulator, failures_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.control("delay", delay_s=30)
    args = _args(sim, "--file", str(failures_file), "--retries", "1")
    args[args.index("--timeout") + 1] = "0.2"
    assert main(args) == 4
    assert sim.stats()["chat_requests"] == 2
    assert "timed out" in capsys.readouterr().err


def test_transient_error_then_success(sim: InProcessSimulator, failures_file: Path) -> None:
    sim.control("error500", count=1)
    assert main(_args(sim, "--file", str(failures_file), "--retries", "1")) == 0
    assert sim.stats()["chat_requests"] == 2


def test_json_mode_fallback(
    sim: InProcessSimulator, failures_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.control("no_structured")
    assert main(_args(sim, "--file", str(failures_file))) == 0
    captured = capsys.readouterr()
    assert "falling back to JSON mode" in captured.err
    assert (
        "refund" in PromptProposal.model_validate(yaml.safe_load(captured.out)).spec.system_prompt
    )
    assert sim.stats()["by_format"] == {"json_schema": 1, "json_object": 1}


def test_evaluate_records_fixed_and_regressed(
    sim: InProcessSimulator, failures_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_args(sim, "--file", str(failures_file), "--evaluate")) == 0
    captured = capsys.readouterr()
    evidence = PromptProposal.model_validate(yaml.safe_load(captured.out)).spec.evidence
    assert evidence is not None
    # 91 failures (85 fixable by keyword rules) and a sample of 100 passing cases, none broken.
    assert (evidence.fixed, evidence.regressed, evidence.evaluated) == (85, 0, 191)
    assert "fixed 85, regressed 0" in captured.err


def test_evaluate_refuses_a_candidate_that_breaks_passing_cases(
    sim: InProcessSimulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Subscription failures teach the rule "subscriptions are billing", which also catches a
    # newsletter question the current prompt gets right.
    records = [r for r in _records() if "passed" not in r]
    records.append(
        {
            "text": "How do I subscribe to your product newsletter?",
            "predicted": "other",
            "expected": "other",
            "version": "2.0.0",
        }
    )
    path = _write(tmp_path / "f.jsonl", records)
    out = tmp_path / "p.yaml"
    code = main(_args(sim, "--file", str(path), "--evaluate", "--output", str(out)))
    captured = capsys.readouterr()
    assert code == command.EXIT_EVALUATE
    assert "breaks 1 case(s)" in captured.err and "nothing written" in captured.err
    assert not out.exists()
    # A tolerance of one regression lets it through, and the evidence says so.
    assert (
        main(
            _args(sim, "--file", str(path), "--evaluate", "--max-regressions", "1", "-o", str(out))
        )
        == 0
    )
    evidence = PromptProposal.model_validate(yaml.safe_load(out.read_text())).spec.evidence
    assert evidence is not None and evidence.regressed == 1


def test_evaluate_budget_covers_the_replay(
    sim: InProcessSimulator, failures_file: Path, tmp_path: Path
) -> None:
    prices = tmp_path / "prices.json"
    # Cheap enough for the proposal alone, too dear for 2 x 191 replayed cases as well.
    prices.write_text(json.dumps({"promptloop-simulator": {"input": 20, "output": 20}}))
    base = _args(sim, "--file", str(failures_file), "--price-table", str(prices))
    assert main(base) == 0
    sim.reset()
    assert main([*base, "--evaluate"]) == command.EXIT_BUDGET
    assert sim.stats()["requests"] == 0


class _Memory(BaseHTTPRequestHandler):
    records: list[dict[str, Any]] = []
    bodies: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        _Memory.bodies.append(json.loads(self.rfile.read(length)))
        payload = json.dumps({"key": "failures", "scope": "global", "data": self.records})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, *_args: Any) -> None:
        pass


def test_failures_from_agentfield_memory(
    sim: InProcessSimulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _Memory.records = _records()
    _Memory.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Memory)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("AGENTFIELD_URL", f"http://127.0.0.1:{server.server_address[1]}")
        assert main(_args(sim, "--failures-key", "failures", "--max-read", "200")) == 0
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert _Memory.bodies == [{"key": "failures", "scope": "global"}]
    err = capsys.readouterr().err
    assert "AgentField global memory key 'failures'" in err
    assert "over_read_limit=130" in err


def test_no_agentfield_url_is_a_usage_error(
    sim: InProcessSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_args(sim)) == command.EXIT_USAGE
    assert "no AgentField URL" in capsys.readouterr().err


def test_unreadable_file_exits_1(
    sim: InProcessSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_args(sim, "--file", str(tmp_path / "missing.jsonl"))) == command.EXIT_ERROR
    assert "cannot read failures" in capsys.readouterr().err


def test_without_cluster_access_it_says_which_flags_to_pass(
    sim: InProcessSimulator, failures_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _args(sim, "--file", str(failures_file))
    del args[args.index("--stable-prompt") : args.index("--stable-prompt") + 2]
    assert main(args) == command.EXIT_ERROR
    assert "--stable-version and --stable-prompt" in capsys.readouterr().err


def test_bad_stable_version_is_a_usage_error(sim: InProcessSimulator, failures_file: Path) -> None:
    args = _args(sim, "--file", str(failures_file))
    args[args.index("2.0.0")] = "v2"
    assert main(args) == command.EXIT_USAGE


# --- pure helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "nxt"),
    [
        ("2.0.0", "2.1.0"),
        ("2.1.3", "2.2.0"),
        ("0.9.0-rc.1", "0.10.0"),
        ("10.4.1+build.7", "10.5.0"),
    ],
)
def test_next_minor(version: str, nxt: str) -> None:
    assert command.next_minor(version) == nxt


def test_next_free_version_skips_taken_ones() -> None:
    assert command.next_free_version("2.0.0", {"2.1.0", "2.2.0", "3.0.0"}) == "2.3.0"
    with pytest.raises(ValueError):
        command.next_minor("v2.0")


def test_proposal_name() -> None:
    assert command.proposal_name("classifier", "2.1.0") == "classifier-2-1-0"
    assert command.proposal_name("Classifier", "2.1.0-rc.1+b7") == "classifier-2-1-0-rc-1-b7"


def test_dump_yaml_round_trips_a_multiline_prompt(failures_file: Path) -> None:
    from decimal import Decimal

    from promptloop.improver.failures import FailureSet
    from promptloop.improver.llm import Budget

    proposal = command.build_proposal(
        rollout="classifier",
        namespace=None,
        version="2.1.0",
        system_prompt="line one\nline two: with 'quotes' and # hash\n  indented",
        rationale="why",
        failure_set=FailureSet((), (), 0, 0, {}, 0),
        model="m",
        budget=Budget(Decimal(1)),
    )
    text = command.dump_yaml(proposal)
    assert "systemPrompt: |" in text
    loaded = yaml.safe_load(text)
    assert loaded["spec"]["systemPrompt"] == proposal.spec.system_prompt
    assert "namespace" not in loaded["metadata"]
    assert PromptProposal.model_validate(loaded) == proposal


def test_open_proposals_hold_unless_concurrency_is_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import argparse
    from types import SimpleNamespace

    from promptloop.k8s import proposals
    from promptloop.k8s.proposals import ProposalSummary

    listing = [
        ProposalSummary("classifier-2-1-0", "2.1.0", "Rejected"),
        ProposalSummary("classifier-2-2-0", "2.2.0", "Canary"),
    ]
    monkeypatch.setattr(proposals, "list_proposals", lambda *_args: listing)
    kube = SimpleNamespace(namespace="demo")
    args = argparse.Namespace(rollout="classifier", allow_concurrent=False)
    with pytest.raises(command._Exit) as stop:
        command._existing_versions(args, kube)  # type: ignore[arg-type]
    assert stop.value.code == command.EXIT_HOLD
    assert "classifier-2-2-0 (2.2.0, Canary)" in str(stop.value)
    assert "2-1-0" not in str(stop.value)
    args.allow_concurrent = True
    taken = command._existing_versions(args, kube)  # type: ignore[arg-type]
    assert command.next_free_version("2.0.0", taken) == "2.3.0"
    listing[1] = ProposalSummary("classifier-2-2-0", "2.2.0", "Promoted")
    args.allow_concurrent = False
    assert command._existing_versions(args, kube) == {"2.1.0", "2.2.0"}  # type: ignore[arg-type]
    assert command._existing_versions(args, None) == set()


def test_auth_error_is_not_retried_and_never_shows_the_key(
    sim: InProcessSimulator, failures_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.control("error401")
    assert main(_args(sim, "--file", str(failures_file))) == command.EXIT_MODEL
    assert sim.stats()["chat_requests"] == 1
    captured = capsys.readouterr()
    assert "HTTP 401" in captured.err and "check OPENAI_API_KEY" in captured.err
    assert SECRET[:6] not in captured.err and SECRET[-4:] not in captured.err
    _no_secret(captured.err, captured.out)
