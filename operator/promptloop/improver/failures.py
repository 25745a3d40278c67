"""Where the improver's failures come from, and which of them it keeps.

Sources (all bounded, all explicit about what they drop):

- **AgentField global memory**: ``POST {url}/api/v1/memory/get`` with ``{"key": KEY, "scope":
  "global"}`` (key ``failures`` by default). The Memory object's ``data`` is the agent's failure
  log, a JSON list appended to over time (oldest first).
- **A JSONL file** or **stdin**: one JSON object per line, oldest first.

A record is an object with these fields (aliases in brackets):

``input`` [``text``]
    What the agent was given (required).
``expected`` [``label``, ``correct_label``]
    What it should have answered (required for a failure).
``predicted``
    What it answered.
``version``
    The agent version that answered. Only the current stable version's records are kept; records
    without a version are dropped unless ``accept_unversioned`` is set.
``passed`` or ``correct`` (booleans)
    ``true`` marks a **passing case** (the agent was right), ``false`` a failure. Without either
    flag a record is a failure, unless ``predicted`` equals ``expected`` (case-insensitively), which
    makes it a passing case. Passing cases are never sent to the improver; ``--evaluate`` replays a
    sample of them to catch regressions.

The I/O functions (:func:`read_agentfield`, :func:`read_jsonl`) only fetch and decode, within
limits; :func:`select_failures` is the pure filter: newest first, current version only,
de-duplicated (same normalised input and expected label), at most ``max_send`` failures sent, each
text truncated to ``max_text_chars``. Every record that does not make it is counted under a reason
in :attr:`FailureSet.dropped`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import httpx

__all__ = [
    "DEFAULT_FAILURES_KEY",
    "DROP_REASONS",
    "Case",
    "FailureLimits",
    "FailureSet",
    "FailureSourceError",
    "RawRecords",
    "read_agentfield",
    "read_jsonl",
    "select_failures",
]

DEFAULT_FAILURES_KEY = "failures"

# Why a record was not used, in the order a record meets the filters.
DROP_REASONS = (
    "over_read_limit",  # older than the newest max_read records
    "oversized_line",  # a JSONL line longer than the line limit, never decoded
    "undecodable",  # a JSONL line that is not JSON
    "malformed",  # not an object, or no input, or a failure without an expected label
    "unversioned",  # no version field (kept with accept_unversioned)
    "other_version",  # recorded by a version other than the stable one
    "duplicate",  # same input and expected label as a newer record
    "over_send_limit",  # a valid failure beyond the newest max_send
)

_LABEL_CHARS = 200


class FailureSourceError(Exception):
    """The failure source could not be read (unreachable, refused, or not a list)."""


@dataclass(frozen=True)
class FailureLimits:
    """Bounds on what is read and sent.

    Attributes
    ----------
    max_read
        Newest records read from the source; older ones are counted as ``over_read_limit``.
    max_send
        Newest distinct failures sent to the model.
    max_text_chars
        Each input is cut to this many characters (an ellipsis marks the cut).
    accept_unversioned
        Keep records that carry no ``version``.
    max_line_chars
        A JSONL line longer than this is not decoded (``oversized_line``).
    max_response_bytes
        The AgentField response is refused beyond this size.
    """

    max_read: int = 500
    max_send: int = 100
    max_text_chars: int = 2000
    accept_unversioned: bool = False
    max_line_chars: int = 256 * 1024
    max_response_bytes: int = 32 * 1024 * 1024


@dataclass(frozen=True)
class Case:
    """One recorded case: a failure, or a passing case kept for evaluation."""

    input: str
    expected: str
    predicted: str = ""
    version: str | None = None
    passed: bool = False

    def as_failure(self) -> dict[str, str]:
        """The case as the improver request shows it."""
        return {"input": self.input, "predicted": self.predicted, "expected": self.expected}


@dataclass(frozen=True)
class RawRecords:
    """What a source returned: decoded records (oldest first) and what the reader already dropped.

    Attributes
    ----------
    records
        Decoded JSON values, oldest first; at most ``max_read`` of them.
    description
        Where they came from, for messages.
    dropped
        Counts per reason (``over_read_limit``, ``oversized_line``, ``undecodable``).
    """

    records: list[object]
    description: str
    dropped: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class FailureSet:
    """The filtered result.

    Attributes
    ----------
    failures
        Failures to send to the model, oldest first (at most ``max_send``).
    passing
        Distinct passing cases of the stable version (for ``--evaluate``), oldest first.
    failure_count
        Distinct failures of the stable version, before the send limit.
    read
        Records examined (after the read limit).
    dropped
        Records not used, per reason (see :data:`DROP_REASONS`).
    truncated
        Kept cases whose input was cut to ``max_text_chars``.
    """

    failures: tuple[Case, ...]
    passing: tuple[Case, ...]
    failure_count: int
    read: int
    dropped: Mapping[str, int]
    truncated: int

    def summary(self) -> str:
        """One line for the operator's log: what was kept and what was dropped, and why."""
        dropped = ", ".join(f"{reason}={n}" for reason, n in self.dropped.items() if n)
        parts = [
            f"{self.failure_count} distinct failures",
            f"{len(self.failures)} to send",
            f"{len(self.passing)} passing cases",
            f"{self.truncated} truncated",
        ]
        text = f"read {self.read} records: " + ", ".join(parts)
        return text + (f"; dropped {dropped}" if dropped else "; dropped none")


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _first(record: Mapping[str, Any], *names: str) -> str | None:
    for name in names:
        if name in record and record[name] is not None:
            return _text(record[name])
    return None


def _truncate(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    # The ellipsis tells the model (and a reviewer) that the text was cut here.
    return text[: max(limit - 1, 0)] + "…", True


def _normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


def _is_passing(record: Mapping[str, Any], predicted: str, expected: str) -> bool:
    for flag in ("passed", "correct"):
        value = record.get(flag)
        if isinstance(value, bool):
            return value
    return bool(predicted and expected) and predicted.strip().lower() == expected.strip().lower()


def select_failures(
    raw: RawRecords,
    *,
    stable_version: str,
    limits: FailureLimits | None = None,
) -> FailureSet:
    """Keep the stable version's distinct failures, newest first, within the limits.

    Parameters
    ----------
    raw
        Records as a source returned them (oldest first).
    stable_version
        The version whose failures count; other versions' records are dropped.
    limits
        Bounds; the defaults read 500, send 100 and cut texts at 2,000 characters.

    Returns
    -------
    FailureSet
        The failures to send, the passing cases, and counts of everything dropped.
    """
    limits = limits or FailureLimits()
    dropped: Counter[str] = Counter({reason: 0 for reason in DROP_REASONS})
    dropped.update(raw.dropped)
    records = raw.records
    if len(records) > limits.max_read:
        dropped["over_read_limit"] += len(records) - limits.max_read
        records = records[-limits.max_read :]
    version = stable_version.strip()
    seen: set[tuple[str, str, bool]] = set()
    failures: list[Case] = []
    passing: list[Case] = []
    truncated = 0
    # Newest first, so that de-duplication and the send limit keep the most recent cases.
    for record in reversed(records):
        if not isinstance(record, Mapping):
            dropped["malformed"] += 1
            continue
        text = _first(record, "input", "text")
        expected = (_first(record, "expected", "label", "correct_label") or "").strip()
        predicted = (_first(record, "predicted") or "").strip()
        passed = _is_passing(record, predicted, expected)
        if passed and not expected:
            expected = predicted
        if not text or not text.strip() or not expected:
            dropped["malformed"] += 1
            continue
        record_version = _first(record, "version")
        if record_version is None or not record_version.strip():
            if not limits.accept_unversioned:
                dropped["unversioned"] += 1
                continue
            record_version = None
        elif record_version.strip() != version:
            dropped["other_version"] += 1
            continue
        key = (_normalise(text), expected.casefold(), passed)
        if key in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(key)
        cut, was_cut = _truncate(text, limits.max_text_chars)
        case = Case(
            input=cut,
            expected=_truncate(expected, _LABEL_CHARS)[0],
            predicted=_truncate(predicted, _LABEL_CHARS)[0],
            version=record_version.strip() if record_version else None,
            passed=passed,
        )
        (passing if passed else failures).append(case)
        truncated += was_cut
    failure_count = len(failures)
    sent = failures[: limits.max_send]
    dropped["over_send_limit"] += failure_count - len(sent)
    return FailureSet(
        failures=tuple(reversed(sent)),
        passing=tuple(reversed(passing)),
        failure_count=failure_count,
        read=len(records),
        dropped=dict(dropped),
        truncated=truncated,
    )


def read_jsonl(
    stream: Iterable[str] | IO[str],
    *,
    description: str,
    limits: FailureLimits | None = None,
) -> RawRecords:
    """Read the newest ``max_read`` records of a JSONL stream, in bounded memory.

    Parameters
    ----------
    stream
        Lines of JSON (a file, ``sys.stdin``, or any iterable of strings). Blank lines are skipped.
    description
        Where the lines come from, for messages.
    limits
        ``max_read`` and ``max_line_chars`` apply.

    Returns
    -------
    RawRecords
        The decoded records, oldest first, with ``over_read_limit``, ``oversized_line`` and
        ``undecodable`` counts.
    """
    limits = limits or FailureLimits()
    # Only the newest max_read lines are kept; a sentinel stands for a line too long to decode,
    # so that it is counted where it was (inside or outside the read window).
    window: deque[str | None] = deque(maxlen=limits.max_read)
    total = 0
    for line in stream:
        if not line.strip():
            continue
        total += 1
        window.append(None if len(line) > limits.max_line_chars else line)
    dropped: Counter[str] = Counter(over_read_limit=total - len(window))
    records: list[object] = []
    for entry in window:
        if entry is None:
            dropped["oversized_line"] += 1
            continue
        try:
            records.append(json.loads(entry))
        except json.JSONDecodeError:
            dropped["undecodable"] += 1
    return RawRecords(records=records, description=description, dropped=dict(dropped))


def read_agentfield(
    url: str,
    *,
    key: str = DEFAULT_FAILURES_KEY,
    limits: FailureLimits | None = None,
    timeout_s: float = 10.0,
    api_key: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> RawRecords:
    """Read the failure log from AgentField's global memory scope.

    Parameters
    ----------
    url
        The control plane's base URL, e.g. ``http://agentfield:8080``.
    key
        The memory key holding the log.
    limits
        ``max_read`` and ``max_response_bytes`` apply.
    timeout_s
        Connect and read timeout.
    api_key
        Sent as ``X-API-Key`` when the control plane requires one (default: the
        ``AGENTFIELD_API_KEY`` environment variable). Never logged.
    transport
        An httpx transport (tests).

    Returns
    -------
    RawRecords
        The newest ``max_read`` entries of the list, oldest first. A missing key gives no records.

    Raises
    ------
    FailureSourceError
        When the control plane is unreachable, answers an error, or ``data`` is not a list.
    """
    limits = limits or FailureLimits()
    endpoint = url.rstrip("/") + "/api/v1/memory/get"
    description = f"AgentField global memory key {key!r} at {url.rstrip('/')}"
    api_key = api_key if api_key is not None else os.environ.get("AGENTFIELD_API_KEY")
    headers = {"X-API-Key": api_key} if api_key else {}
    try:
        with (
            httpx.Client(timeout=timeout_s, transport=transport) as client,
            client.stream(
                "POST", endpoint, json={"key": key, "scope": "global"}, headers=headers
            ) as response,
        ):
            if response.status_code == 404:
                return RawRecords(records=[], description=description + " (no such key)")
            if response.status_code != 200:
                response.read()
                raise FailureSourceError(
                    f"{description}: HTTP {response.status_code}: {response.text[:200]}"
                )
            body = bytearray()
            for chunk in response.iter_bytes():
                body.extend(chunk)
                if len(body) > limits.max_response_bytes:
                    raise FailureSourceError(
                        f"{description}: response larger than {limits.max_response_bytes} bytes"
                    )
    except httpx.HTTPError as error:
        raise FailureSourceError(f"{description}: {type(error).__name__}: {error}") from error
    try:
        memory = json.loads(bytes(body))
    except json.JSONDecodeError as error:
        raise FailureSourceError(f"{description}: the answer is not JSON") from error
    data = memory.get("data") if isinstance(memory, Mapping) else None
    if isinstance(data, str):
        # Some writers store the list JSON-encoded as a string.
        with contextlib.suppress(json.JSONDecodeError):
            data = json.loads(data)
    if data is None:
        return RawRecords(records=[], description=description + " (empty)")
    if not isinstance(data, list):
        raise FailureSourceError(
            f"{description}: data is a {type(data).__name__}, expected a list of failures"
        )
    over = max(len(data) - limits.max_read, 0)
    return RawRecords(
        records=list(data[over:]),
        description=description,
        dropped={"over_read_limit": over} if over else {},
    )
