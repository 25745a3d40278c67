"""The transition tables, set_condition, append_history and iso: the rules every status change
goes through."""

from __future__ import annotations

import enum
import itertools
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptloop.api import Condition, ConditionStatus, HistoryEntry, ProposalPhase, RolloutPhase
from promptloop.api.agentrollout import HISTORY_LIMIT
from promptloop.rollout.phases import (
    PROPOSAL_TERMINAL,
    PROPOSAL_TRANSITIONS,
    ROLLOUT_TRANSITIONS,
    IllegalTransition,
    append_history,
    iso,
    proposal_transition,
    rollout_transition,
    set_condition,
)
from promptloop.rollout.plan import parse_time

P = ProposalPhase
R = RolloutPhase
NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)


def _reachable(table: Mapping[Any, frozenset[Any]], start: Any) -> set[Any]:
    seen: set[Any] = {start}
    todo = deque([start])
    while todo:
        for nxt in table[todo.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


# --- the tables -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "phases"),
    [(ROLLOUT_TRANSITIONS, RolloutPhase), (PROPOSAL_TRANSITIONS, ProposalPhase)],
    ids=["rollout", "proposal"],
)
def test_every_phase_has_a_row_and_is_reachable_from_nothing(
    table: Mapping[Any, frozenset[Any]], phases: type[enum.Enum]
) -> None:
    assert set(table) == {None, *phases}
    assert _reachable(table, None) == {None, *phases}
    # No row leads back to "no phase at all".
    assert all(None not in targets for targets in table.values())


def test_rollout_phases_have_no_dead_ends() -> None:
    for phase in RolloutPhase:
        assert ROLLOUT_TRANSITIONS[phase], f"{phase} has no way out"
        # Whatever happens, a rollout can get back to serving its stable version.
        assert R.STABLE in _reachable(ROLLOUT_TRANSITIONS, phase)


def test_the_only_proposal_dead_ends_are_terminal_phases() -> None:
    dead_ends = {phase for phase in ProposalPhase if not PROPOSAL_TRANSITIONS[phase]}
    assert dead_ends == {P.ROLLED_BACK, P.REJECTED, P.SUPERSEDED}
    assert dead_ends <= PROPOSAL_TERMINAL
    # Every phase that is not terminal can still end: nothing loops forever without an exit.
    for phase in set(ProposalPhase) - PROPOSAL_TERMINAL:
        assert _reachable(PROPOSAL_TRANSITIONS, phase) & PROPOSAL_TERMINAL, phase


def test_a_terminal_proposal_never_takes_traffic_again() -> None:
    for phase in PROPOSAL_TERMINAL:
        assert _reachable(PROPOSAL_TRANSITIONS, phase) <= PROPOSAL_TERMINAL, phase


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (P.ROLLED_BACK, P.PROMOTED),
        (P.ROLLED_BACK, P.CANARY),
        (P.REJECTED, P.CANARY),
        (P.REJECTED, P.PROMOTED),
        (P.PROMOTED, P.CANARY),
        (P.PROMOTED, P.ROLLED_BACK),
        (P.SUPERSEDED, P.PROMOTED),
        (P.PENDING, P.PROMOTED),  # promotion needs a canary first
        (P.RENDERED, P.PROMOTED),
        (P.INVALID, P.CANARY),
    ],
)
def test_proposal_moves_that_must_never_happen(current: P, target: P) -> None:
    with pytest.raises(IllegalTransition, match="PromptProposal"):
        proposal_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (R.STABLE, R.PROMOTING),  # promotion needs a canary first
        (R.STABLE, R.AWAITING_APPROVAL),
        (R.STABLE, R.ROLLED_BACK),
        (R.PENDING, R.PROMOTING),
        (R.ROLLED_BACK, R.PROMOTING),
        (R.ROLLED_BACK, R.AWAITING_APPROVAL),
        (R.PROMOTING, R.AWAITING_APPROVAL),  # past the ceiling there is nothing left to approve
    ],
)
def test_rollout_moves_that_must_never_happen(current: R, target: R) -> None:
    with pytest.raises(IllegalTransition, match="AgentRollout"):
        rollout_transition(current, target)


@pytest.mark.parametrize(
    ("move", "table", "phases"),
    [
        (proposal_transition, PROPOSAL_TRANSITIONS, ProposalPhase),
        (rollout_transition, ROLLOUT_TRANSITIONS, RolloutPhase),
    ],
    ids=["proposal", "rollout"],
)
def test_the_transition_functions_follow_their_table_for_every_pair(
    move: Callable[[Any, Any], Any], table: Mapping[Any, frozenset[Any]], phases: type[enum.Enum]
) -> None:
    for current, target in itertools.product([None, *phases], phases):
        if current == target or target in table[current]:
            assert move(current, target) is target
        else:
            with pytest.raises(IllegalTransition, match=f"from {current} to {target}"):
                move(current, target)


def test_staying_is_always_allowed_even_in_a_terminal_phase() -> None:
    for phase in ProposalPhase:
        assert proposal_transition(phase, phase) is phase
    for rphase in RolloutPhase:
        assert rollout_transition(rphase, rphase) is rphase


# --- set_condition ----------------------------------------------------------------------------


def _cond(type_: str, status: ConditionStatus, at: str = "2025-01-01T00:00:00Z") -> Condition:
    return Condition(type=type_, status=status, reason="R", message="m", last_transition_time=at)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, ConditionStatus.TRUE), (False, ConditionStatus.FALSE), (None, ConditionStatus.UNKNOWN)],
)
def test_a_new_condition_starts_now(value: bool | None, expected: ConditionStatus) -> None:
    (condition,) = set_condition(
        [], type_="Ready", status=value, reason="Why", message="because", now=NOW, generation=3
    )
    assert condition.type == "Ready"
    assert condition.status is expected
    assert (condition.reason, condition.message) == ("Why", "because")
    assert condition.last_transition_time == "2025-03-01T12:00:00Z"
    assert condition.observed_generation == 3


def test_same_status_keeps_the_transition_time_but_takes_the_new_words() -> None:
    first = set_condition([], type_="Ready", status=True, reason="A", message="a", now=NOW)
    second = set_condition(first, type_="Ready", status=True, reason="B", message="b", now=LATER)
    (condition,) = second
    assert condition.last_transition_time == iso(NOW)
    assert (condition.reason, condition.message) == ("B", "b")


@pytest.mark.parametrize(
    ("before", "after"),
    [(True, False), (False, True), (True, None), (None, True), (None, False), (False, None)],
)
def test_a_status_change_moves_the_transition_time(before: bool | None, after: bool | None) -> None:
    first = set_condition([], type_="X", status=before, reason="A", message="", now=NOW)
    (condition,) = set_condition(first, type_="X", status=after, reason="B", message="", now=LATER)
    assert condition.last_transition_time == iso(LATER)


def test_set_condition_touches_only_its_type_and_never_its_input() -> None:
    others = [
        _cond("Ready", ConditionStatus.TRUE),
        _cond("TrafficVerified", ConditionStatus.FALSE),
        _cond("AwaitingApproval", ConditionStatus.TRUE),
    ]
    snapshot = [c.model_copy(deep=True) for c in others]
    updated = set_condition(
        others, type_="TrafficVerified", status=True, reason="Verified", message="ok", now=LATER
    )
    assert others == snapshot
    assert sorted(c.type for c in updated) == sorted(c.type for c in others)
    by_type = {c.type: c for c in updated}
    assert by_type["Ready"] == snapshot[0]
    assert by_type["AwaitingApproval"] == snapshot[2]
    assert by_type["TrafficVerified"].status is ConditionStatus.TRUE
    assert by_type["TrafficVerified"].last_transition_time == iso(LATER)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Ready", "RouterReachable", "TrafficVerified"]),
            st.sampled_from([True, False, None]),
        ),
        max_size=30,
    )
)
def test_condition_time_marks_the_last_change_of_status(
    updates: list[tuple[str, bool | None]],
) -> None:
    conditions: list[Condition] = []
    last_change: dict[str, tuple[bool | None, datetime]] = {}
    for i, (type_, value) in enumerate(updates):
        now = NOW + timedelta(seconds=i)
        conditions = set_condition(
            conditions, type_=type_, status=value, reason="R", message=str(i), now=now
        )
        if type_ not in last_change or last_change[type_][0] != value:
            last_change[type_] = (value, now)
    assert len(conditions) == len({c.type for c in conditions}) == len(last_change)
    for condition in conditions:
        assert condition.last_transition_time == iso(last_change[condition.type][1])


# --- append_history ---------------------------------------------------------------------------


def _entry(i: int) -> HistoryEntry:
    return HistoryEntry(at=iso(NOW + timedelta(seconds=i)), event="step", weight=i, message=str(i))


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 3 * HISTORY_LIMIT))
def test_history_keeps_the_newest_entries_in_order_up_to_the_limit(existing: int) -> None:
    history = [_entry(i) for i in range(existing)]
    snapshot = list(history)
    updated = append_history(history, _entry(existing))
    assert history == snapshot
    assert len(updated) == min(existing + 1, HISTORY_LIMIT)
    assert updated[-1] == _entry(existing)
    assert [e.weight for e in updated] == list(range(existing + 1))[-HISTORY_LIMIT:]


def test_history_limit_is_what_the_status_schema_accepts() -> None:
    from promptloop.api import AgentRolloutStatus

    history: list[HistoryEntry] = []
    for i in range(HISTORY_LIMIT * 2):
        history = append_history(history, _entry(i))
    AgentRolloutStatus(history=history)  # at the limit: accepted
    with pytest.raises(ValueError, match="history"):
        AgentRolloutStatus(history=[*history, _entry(-1)])


# --- iso --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC), "2025-03-01T12:00:00Z"),
        (datetime(2025, 3, 1, 12, 0, 0, 999_999, tzinfo=UTC), "2025-03-01T12:00:00Z"),
        (datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC), "2025-12-31T23:59:59Z"),
        # An aware time in another zone is written in UTC: the Z must not lie.
        (
            datetime(2025, 3, 1, 14, 0, 0, tzinfo=timezone(timedelta(hours=2))),
            "2025-03-01T12:00:00Z",
        ),
        (
            datetime(2025, 3, 1, 7, 30, 0, tzinfo=timezone(timedelta(hours=-5))),
            "2025-03-01T12:30:00Z",
        ),
    ],
)
def test_iso_writes_rfc3339_utc_with_a_z(moment: datetime, expected: str) -> None:
    assert iso(moment) == expected


@settings(max_examples=100, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2100, 1, 1),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
    )
)
def test_iso_round_trips_through_parse_time_to_the_second(moment: datetime) -> None:
    parsed = parse_time(iso(moment))
    assert parsed is not None
    assert parsed.tzinfo is not None
    assert timedelta(0) <= moment - parsed < timedelta(seconds=1)
