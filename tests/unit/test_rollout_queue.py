"""Queue order: oldest first to the second, then semver precedence, then name (the chaos
suite's load test filed many proposals within one second and they started in name order)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from promptloop.api import PromptProposal
from promptloop.rollout.queue import queue_key, semver_key


def _proposal(name: str, version: str, created: str) -> PromptProposal:
    return PromptProposal.model_validate(
        {
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"rolloutRef": {"name": "r"}, "version": version, "systemPrompt": "p"},
        }
    )


def test_same_second_sorts_by_version_not_name() -> None:
    same = "2026-12-02T21:00:00Z"
    proposals = [
        _proposal("zz", "2.9.0", same),
        _proposal("aa", "2.10.0", same),
        _proposal("mm", "2.9.0-rc.1", same),
        _proposal("old", "9.0.0", "2026-12-02T20:59:59Z"),
    ]
    assert [p.metadata.name for p in sorted(proposals, key=queue_key)] == ["old", "mm", "zz", "aa"]


def test_semver_precedence_follows_the_spec() -> None:
    # semver.org item 11's example, in order.
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.10.0",
    ]
    assert sorted(ordered, key=lambda v: semver_key(v) or ()) == ordered
    assert semver_key("1.0.0+build.5") == semver_key("1.0.0")
    assert semver_key("not-a-version") is None


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(0, 30)), min_size=1))
def test_releases_sort_numerically(versions: list[tuple[int, int, int]]) -> None:
    texts = [f"{a}.{b}.{c}" for a, b, c in versions]
    assert [semver_key(t) for t in sorted(texts, key=lambda v: semver_key(v) or ())] == sorted(
        semver_key(t) for t in texts
    )
    assert sorted(versions) == [
        tuple(map(int, t.split("."))) for t in sorted(texts, key=lambda v: semver_key(v) or ())
    ]
