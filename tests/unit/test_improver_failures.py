"""Failure sources and the pure filter: version, de-duplication, limits, truncation, drop counts."""

from __future__ import annotations

import io
import json

import httpx
import pytest

from promptloop.improver.failures import (
    FailureLimits,
    FailureSourceError,
    RawRecords,
    read_agentfield,
    read_jsonl,
    select_failures,
)


def _raw(records: list[object], **dropped: int) -> RawRecords:
    return RawRecords(records=records, description="test", dropped=dropped)


def _failure(text: str, version: str | None = "2.0.0", **extra: object) -> dict[str, object]:
    record: dict[str, object] = {"input": text, "predicted": "other", "expected": "billing"}
    if version is not None:
        record["version"] = version
    record.update(extra)
    return record


def test_keeps_only_the_stable_versions_failures() -> None:
    result = select_failures(
        _raw([_failure("a"), _failure("b", "1.9.0"), _failure("c", "2.1.0"), _failure("d")]),
        stable_version="2.0.0",
    )
    assert [c.input for c in result.failures] == ["a", "d"]
    assert result.dropped["other_version"] == 2
    assert result.failure_count == 2


def test_unversioned_records_are_dropped_unless_accepted() -> None:
    raw = _raw([_failure("a", None), _failure("b")])
    assert select_failures(raw, stable_version="2.0.0").dropped["unversioned"] == 1
    accepted = select_failures(
        raw, stable_version="2.0.0", limits=FailureLimits(accept_unversioned=True)
    )
    assert accepted.failure_count == 2
    assert accepted.dropped["unversioned"] == 0


def test_duplicates_keep_the_newest_and_are_counted() -> None:
    result = select_failures(
        _raw(
            [_failure("Refund  please", predicted="bug"), _failure("b"), _failure("refund please")]
        ),
        stable_version="2.0.0",
    )
    assert [c.input for c in result.failures] == ["b", "refund please"]
    assert result.failures[1].predicted == "other"  # the newest record's answer
    assert result.dropped["duplicate"] == 1


def test_same_text_with_another_expected_label_is_not_a_duplicate() -> None:
    result = select_failures(
        _raw([_failure("x"), _failure("x", expected="bug")]), stable_version="2.0.0"
    )
    assert result.failure_count == 2


def test_aliases_text_label_and_correct_label() -> None:
    result = select_failures(
        _raw(
            [
                {"text": "a", "predicted": "other", "label": "bug", "version": "2.0.0"},
                {"text": "b", "predicted": "other", "correct_label": "billing", "version": "2.0.0"},
            ]
        ),
        stable_version="2.0.0",
    )
    assert [(c.input, c.expected) for c in result.failures] == [("a", "bug"), ("b", "billing")]


def test_malformed_records_are_counted() -> None:
    result = select_failures(
        _raw(
            [
                "not an object",
                {"predicted": "x", "expected": "y", "version": "2.0.0"},  # no input
                {"input": "   ", "expected": "y", "version": "2.0.0"},  # blank input
                {"input": "no label", "predicted": "bug", "version": "2.0.0"},  # no expected
                {"input": ["a list"], "expected": "bug", "version": "2.0.0"},
                _failure("ok"),
            ]
        ),
        stable_version="2.0.0",
    )
    assert result.dropped["malformed"] == 5
    assert result.failure_count == 1


@pytest.mark.parametrize(
    ("extra", "passing"),
    [
        ({"passed": True}, True),
        ({"correct": True}, True),
        ({"passed": False, "predicted": "billing"}, False),  # the flag beats the comparison
        ({"predicted": "Billing"}, True),  # predicted == expected: a passing case
        ({}, False),
    ],
)
def test_passing_cases(extra: dict[str, object], passing: bool) -> None:
    result = select_failures(_raw([_failure("t", **extra)]), stable_version="2.0.0")
    assert (len(result.passing), len(result.failures)) == ((1, 0) if passing else (0, 1))


def test_passing_case_without_expected_takes_predicted() -> None:
    record = {"input": "t", "predicted": "bug", "passed": True, "version": "2.0.0"}
    result = select_failures(_raw([record]), stable_version="2.0.0")
    assert result.passing[0].expected == "bug"


def test_read_and_send_limits_keep_the_newest() -> None:
    records: list[object] = [_failure(f"t{i}") for i in range(20)]
    result = select_failures(
        _raw(records), stable_version="2.0.0", limits=FailureLimits(max_read=15, max_send=10)
    )
    assert result.read == 15
    assert result.dropped["over_read_limit"] == 5
    assert result.failure_count == 15
    assert result.dropped["over_send_limit"] == 5
    assert [c.input for c in result.failures] == [f"t{i}" for i in range(10, 20)]


def test_texts_are_truncated_and_counted() -> None:
    result = select_failures(
        _raw([_failure("x" * 50), _failure("short")]),
        stable_version="2.0.0",
        limits=FailureLimits(max_text_chars=10),
    )
    assert result.failures[0].input == "x" * 9 + "…"
    assert len(result.failures[0].input) == 10
    assert result.truncated == 1


def test_summary_lists_every_reason_with_a_count() -> None:
    result = select_failures(
        _raw([_failure("a"), _failure("a"), _failure("b", "1.0.0")], undecodable=2),
        stable_version="2.0.0",
    )
    summary = result.summary()
    assert "1 distinct failures" in summary
    assert "undecodable=2" in summary
    assert "duplicate=1" in summary
    assert "other_version=1" in summary


# --- JSONL ---------------------------------------------------------------------------------------


def test_jsonl_keeps_the_newest_lines_and_counts_bad_ones() -> None:
    lines = [json.dumps(_failure(f"t{i}")) for i in range(6)]
    lines[4] = "{not json"
    lines[5] = json.dumps(_failure("y" * 200))
    text = "\n".join(["", *lines, "   "]) + "\n"
    raw = read_jsonl(
        io.StringIO(text), description="s", limits=FailureLimits(max_read=4, max_line_chars=150)
    )
    assert raw.dropped == {"over_read_limit": 2, "undecodable": 1, "oversized_line": 1}
    assert [r["input"] for r in raw.records if isinstance(r, dict)] == ["t2", "t3"]


# --- AgentField memory ---------------------------------------------------------------------------


def _agentfield(handler: object) -> httpx.MockTransport:
    assert callable(handler)
    return httpx.MockTransport(handler)


def test_agentfield_reads_global_scope() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        data = [_failure(f"t{i}") for i in range(5)]
        return httpx.Response(200, json={"key": "failures", "scope": "global", "data": data})

    raw = read_agentfield(
        "http://af:8080/",
        key="failures",
        limits=FailureLimits(max_read=3),
        api_key="",
        transport=_agentfield(handler),
    )
    assert str(seen[0].url) == "http://af:8080/api/v1/memory/get"
    assert json.loads(seen[0].content) == {"key": "failures", "scope": "global"}
    assert "x-api-key" not in seen[0].headers
    assert raw.dropped == {"over_read_limit": 2}
    assert len(raw.records) == 3


def test_agentfield_sends_the_api_key_header() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["x-api-key"] == "k"
        return httpx.Response(200, json={"data": json.dumps([_failure("a")])})

    raw = read_agentfield("http://af", api_key="k", transport=_agentfield(handler))
    assert len(raw.records) == 1  # a JSON-encoded string is decoded


def test_agentfield_missing_key_is_empty() -> None:
    def handler(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": "not_found", "code": 404})

    raw = read_agentfield("http://af", api_key="", transport=_agentfield(handler))
    assert raw.records == []
    assert "no such key" in raw.description


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(500, text="boom"), "HTTP 500"),
        (httpx.Response(200, json={"data": {"not": "a list"}}), "expected a list"),
        (httpx.Response(200, text="<html>"), "not JSON"),
        (httpx.Response(200, content=b"[" + b"1," * 600 + b"1]"), "larger than"),
    ],
)
def test_agentfield_errors(response: httpx.Response, message: str) -> None:
    with pytest.raises(FailureSourceError, match=message):
        read_agentfield(
            "http://af",
            api_key="",
            limits=FailureLimits(max_response_bytes=1000),
            transport=_agentfield(lambda _request: response),
        )


def test_agentfield_unreachable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(FailureSourceError, match="ConnectError"):
        read_agentfield("http://af", api_key="", transport=_agentfield(handler))
