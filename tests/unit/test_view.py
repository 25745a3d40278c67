"""The live view and what approve/reject say: pure functions, no cluster.

Assertions are on content (what a person must be able to read), not on exact bytes, so that a
layout tweak does not break them while a lost piece of information does.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from promptloop.api import AgentRollout, PromptProposal
from promptloop.view import (
    REJECT_ANNOTATION,
    approval_refusal,
    describe_approval,
    describe_rejection,
    prompt_diff,
    rejection_refusal,
    render_diff,
    render_status,
    sanitize,
    wilson_interval,
)

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
NOW = datetime(2025, 1, 1, 0, 0, 30, tzinfo=UTC)
STABLE_PROMPT = "Classify the ticket as billing, bug, or other.\nOne word."
CHALLENGER_PROMPT = (
    "Classify the ticket as billing, bug, or other.\nRefunds are billing.\nOne word."
)


def rollout_dict(**status: Any) -> dict[str, Any]:
    """An AgentRollout mid-canary, awaiting approval; ``status`` keys override."""
    base: dict[str, Any] = {
        "phase": "AwaitingApproval",
        "message": "2.1.0 holds at 30% until a person approves",
        "stableVersion": "2.0.0",
        "canary": {
            "proposal": "classifier-2-1-0",
            "version": "2.1.0",
            "weight": 30,
            "steps": 2,
            "approved": False,
        },
        "weights": [
            {"version": "2.1.0", "percent": 30.0, "raw": 3000, "role": "canary"},
            {"version": "2.0.0", "percent": 70.0, "raw": 7000, "role": "stable"},
            {"version": "1.9.0", "percent": 0.01, "raw": 1, "role": "other"},
        ],
        "counts": {
            "stable": {"version": "2.0.0", "total": 140, "failed": 42, "rate": 0.3},
            "canary": {"version": "2.1.0", "total": 60, "failed": 1, "rate": 1 / 60},
        },
        "decision": {
            "verdict": "await-approval",
            "reason": "2.1.0 is at least as good; the next step needs approval",
            "statistic": 3.2109,
            "samplesNeeded": 17,
            "decidedAt": "2025-01-01T00:00:20Z",
        },
        "history": [
            {"at": f"2025-01-01T00:00:0{i}Z", "event": event, "version": "2.1.0", "weight": w}
            for i, (event, w) in enumerate(
                [
                    ("canary", None),
                    ("seed", 10),
                    ("step", 20),
                    ("step", 30),
                    ("hold", 30),
                    ("await-approval", 30),
                ]
            )
        ],
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Ok"},
            {
                "type": "TrafficVerified",
                "status": "False",
                "reason": "NotHonoured",
                "message": "the router does not seem to honour weights",
            },
            {"type": "MetricsAvailable", "status": "Unknown", "reason": "NoData"},
        ],
    }
    base.update(status)
    return {
        "apiVersion": "promptloop.dev/v1alpha1",
        "kind": "AgentRollout",
        "metadata": {"name": "classifier", "namespace": "demo"},
        "spec": {
            "agent": {"nodeId": "classifier"},
            "stable": {"version": "2.0.0", "deploymentName": "classifier"},
            "router": {
                "agentfield": {
                    "url": "http://agentfield:8080",
                    "tokenSecretRef": {"name": "connector", "key": "token"},
                }
            },
            "metrics": {"http": {"url": "http://metrics/{{ version }}"}},
            "canary": {"ceiling": 50, "minSamples": 30, "maxFailureRate": 0.4},
        },
        "status": base,
    }


def rollout(**status: Any) -> AgentRollout:
    return AgentRollout.model_validate(rollout_dict(**status))


def proposal(
    *,
    name: str = "classifier-2-1-0",
    prompt: str = CHALLENGER_PROMPT,
    phase: str | None = "AwaitingApproval",
    approved: bool | None = None,
    rollout_name: str = "classifier",
    annotations: dict[str, str] | None = None,
) -> PromptProposal:
    spec: dict[str, Any] = {
        "rolloutRef": {"name": rollout_name},
        "version": "2.1.0",
        "systemPrompt": prompt,
        "rationale": "refunds were misfiled as other",
    }
    if approved is not None:
        spec["approved"] = approved
    return PromptProposal.model_validate(
        {
            "metadata": {"name": name, "namespace": "demo", "annotations": annotations or {}},
            "spec": spec,
            "status": {"phase": phase, "weight": 30} if phase else {},
        }
    )


def view(width: int = 110, color: bool = False, **kwargs: Any) -> str:
    target = kwargs.pop("rollout", None) or rollout()
    challenger = kwargs.pop("proposal", proposal())
    stable = kwargs.pop("stable_prompt", STABLE_PROMPT)
    return render_status(target, challenger, stable, width=width, color=color, now=NOW, **kwargs)


def lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def section(text: str, heading: str) -> list[str]:
    """The lines under a heading, up to the next blank line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start + 1 : end]


# -- Wilson interval ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failed", "total", "low", "high"),
    [
        # Reference values (Wilson 1927; e.g. Newcombe 1998, table I, method 3).
        (0, 10, 0.0, 0.2775),
        (5, 10, 0.2366, 0.7634),
        (81, 263, 0.2553, 0.3662),
        (10, 10, 0.7225, 1.0),
        (1, 60, 0.0029, 0.0886),
    ],
)
def test_wilson_interval_matches_reference_values(
    failed: int, total: int, low: float, high: float
) -> None:
    interval = wilson_interval(failed, total)
    assert interval is not None
    assert interval[0] == pytest.approx(low, abs=1e-4)
    assert interval[1] == pytest.approx(high, abs=1e-4)


def test_wilson_interval_contains_the_rate_and_narrows_with_samples() -> None:
    widths = []
    for total in (10, 100, 1000, 10000):
        failed = total // 10
        interval = wilson_interval(failed, total)
        assert interval is not None
        assert 0 <= interval[0] <= failed / total <= interval[1] <= 1
        widths.append(interval[1] - interval[0])
    assert widths == sorted(widths, reverse=True)
    # Narrower with a smaller z (a lower confidence level).
    wide, narrow = wilson_interval(5, 50), wilson_interval(5, 50, z=1.0)
    assert wide is not None and narrow is not None
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def test_wilson_interval_without_samples_is_none_and_bad_counts_raise() -> None:
    assert wilson_interval(0, 0) is None
    for failed, total in ((3, 2), (-1, 5), (0, -1)):
        with pytest.raises(ValueError):
            wilson_interval(failed, total)
    interval = wilson_interval(0, 1)
    assert interval is not None and all(math.isfinite(x) for x in interval)


# -- diff --------------------------------------------------------------------------------------


def test_prompt_diff_is_a_unified_diff_with_labels() -> None:
    diff = prompt_diff(
        STABLE_PROMPT, CHALLENGER_PROMPT, from_label="stable 2.0.0", to_label="2.1.0"
    )
    lines = diff.splitlines()
    assert lines[:2] == ["--- stable 2.0.0", "+++ 2.1.0"]
    assert lines[2].startswith("@@ ")
    assert "+Refunds are billing." in lines
    assert " One word." in lines
    assert not [line for line in lines if line.startswith("-") and not line.startswith("---")]
    assert diff.endswith("\n")


def test_prompt_diff_of_identical_prompts_is_empty_and_trailing_newline_is_no_change() -> None:
    assert prompt_diff(STABLE_PROMPT, STABLE_PROMPT) == ""
    assert prompt_diff(STABLE_PROMPT, STABLE_PROMPT + "\n") == ""


def test_prompt_diff_of_a_one_line_prompt_shows_both_lines_and_context_is_bounded() -> None:
    diff = prompt_diff("Be brief.", "Be brief and polite.")
    assert "-Be brief.\n" in diff and "+Be brief and polite.\n" in diff
    long_stable = "\n".join(f"line {i}" for i in range(40))
    long_new = long_stable.replace("line 20", "line twenty")
    diff = prompt_diff(long_stable, long_new, context=2)
    assert "line 17" not in diff and " line 18" in diff and " line 22" in diff
    assert "line 23" not in diff


def test_render_diff_colours_only_when_asked_and_never_wraps() -> None:
    diff = prompt_diff("a" * 300, "b" * 300)
    plain = render_diff(diff, color=False)
    assert plain == diff
    coloured = render_diff(diff, color=True)
    assert "\x1b[" in coloured
    assert ANSI.sub("", coloured).rstrip("\n") == diff.rstrip("\n")
    assert render_diff("", color=True) == ""


def test_coloured_diff_marks_the_changed_words_of_a_rewritten_line() -> None:
    stable = "Classify the ticket as billing, bug, or other. One word."
    new = "Classify the ticket as billing, bug, or other. Refunds are billing. One word."
    coloured = render_diff(prompt_diff(stable, new), color=True)
    marked = re.findall(r"\x1b\[7;32m([^\x1b]*)\x1b\[0m", coloured)
    assert marked == ["Refunds are billing."]
    assert "\x1b[7;31m" not in coloured  # nothing was removed from the old line
    # Unrelated lines are not marked word by word: the whole line is the change.
    rewrite = render_diff(prompt_diff("alpha beta gamma", "one two three"), color=True)
    assert "\x1b[7;" not in rewrite


def test_only_the_first_two_lines_are_diff_headers() -> None:
    diff = prompt_diff("keep\n--flag\nend", "keep\nend")
    assert "---flag" in diff.splitlines()
    coloured = render_diff(diff, color=True)
    assert "\x1b[31m---flag" in coloured or "\x1b[31m-\x1b[0m\x1b[31m--flag" in coloured
    assert "\x1b[1m---flag" not in coloured


# -- sanitising ------------------------------------------------------------------------------


def test_sanitize_escapes_terminal_controls_and_bidi_overrides_but_keeps_layout() -> None:
    hostile = "ok\tline\n\x1b]0;pwned\x07\x1b[2J\u202eevil\u2066\r\x9b"
    cleaned = sanitize(hostile)
    assert "\x1b" not in cleaned and "\x07" not in cleaned and "\u202e" not in cleaned
    assert "\r" not in cleaned and "\x9b" not in cleaned and "\u2066" not in cleaned
    assert "\\x1b]0;pwned\\x07" in cleaned and "\\u202e" in cleaned
    assert cleaned.startswith("ok\tline\n")
    assert sanitize("Grüße, 日本語 ✓") == "Grüße, 日本語 ✓"


def test_a_hostile_prompt_cannot_reach_the_terminal_raw() -> None:
    evil = proposal(prompt="Classify.\n\x1b[2J\x1b]0;title\x07 \u202eTXT")
    out = view(proposal=evil, color=True)
    # The only escape sequences are the view's own SGR colour codes.
    assert set(re.findall(r"\x1b(.)", out)) <= {"["}
    assert not re.search(r"\x1b\[[0-9;]*[^0-9;m]", out)
    assert "\x07" not in out and "\u202e" not in out
    assert "\\x1b[2J" in ANSI.sub("", out)


# -- the view ----------------------------------------------------------------------------------


def test_view_shows_phase_versions_and_message() -> None:
    out = view()
    assert "AgentRollout demo/classifier" in out
    assert "phase AwaitingApproval" in out
    assert "stable 2.0.0" in out and "canary 2.1.0" in out
    assert "proposal classifier-2-1-0" in out
    assert "2.1.0 holds at 30% until a person approves" in out


def test_view_draws_one_weight_bar_per_version_stable_first() -> None:
    out = view()
    bars = [line for line in out.splitlines() if "█" in line or "░" in line]
    assert [line.split()[0] for line in bars] == ["2.0.0", "2.1.0", "1.9.0"]
    stable, canary, other = bars
    assert "70.0%" in stable and "30.0%" in canary
    assert stable.count("█") > canary.count("█") > 0
    # A minimum share is a visible sliver and does not read as "0.0%".
    assert other.count("█") == 1 and "<0.1%" in other
    assert "ceiling 50%" in canary and "needs approval" in canary


def test_view_shows_rates_with_wilson_intervals_and_sample_counts() -> None:
    out = view()
    assert "Wilson 95%" in out
    rows = section(out, "Failure rates this window")
    stable = next(line for line in rows if line.split()[:2] == ["2.0.0", "stable"])
    canary = next(line for line in rows if line.split()[:2] == ["2.1.0", "canary"])
    assert "42/140" in stable and "30.0%" in stable
    low, high = wilson_interval(42, 140) or (0, 0)
    assert f"[{low * 100:.1f}%, {high * 100:.1f}%]" in stable
    assert "1/60" in canary and "1.7%" in canary and "[0.3%, 8.9%]" in canary
    # The interval plot: a marker between two ends, on a shared axis.
    assert re.search("├─*●─*┤", stable) and re.search("[├●]─*┤", canary)
    assert "at least 30 samples per version" in out and "above 40.0% rolls back" in out


def test_view_shows_verdict_reason_samples_needed_and_how_to_approve() -> None:
    out = view()
    assert "await-approval: 2.1.0 is at least as good; the next step needs approval" in out
    assert "samples still needed: about 17 per version" in out
    assert "statistic 3.21" in out
    assert "decided 10s ago" in out
    assert "promptloop approve classifier" in out and "promptloop reject classifier" in out


def test_view_lists_only_conditions_that_are_not_true() -> None:
    out = view()
    assert "TrafficVerified=False (NotHonoured): the router does not seem to honour weights" in out
    assert "MetricsAvailable=Unknown (NoData)" in out
    assert "Ready=" not in out
    all_true = view(
        rollout=rollout(conditions=[{"type": "Ready", "status": "True"}]),
    )
    assert "Conditions not True" not in all_true and "all True (Ready)" in all_true


def test_view_shows_the_last_history_entries_only() -> None:
    out = view(history=3)
    rows = section(out, "History (last 3 of 6)")
    assert rows[0].split()[:2] == ["when", "event"]
    assert [row.split()[2] for row in rows[1:]] == ["step", "hold", "await-approval"]
    assert [row.split()[0] for row in rows[1:]] == ["27s", "26s", "25s"]
    assert "History" not in view(history=0)


def test_view_shows_the_prompt_diff_against_the_stable_prompt() -> None:
    out = view()
    assert "Prompt diff: stable 2.0.0 → challenger 2.1.0 (classifier-2-1-0)" in out
    assert "rationale: refunds were misfiled as other" in out
    assert "--- stable 2.0.0" in out and "+++ challenger 2.1.0" in out
    assert "+Refunds are billing." in out


def test_view_cuts_a_long_diff_and_says_so() -> None:
    long_prompt = "\n".join(f"rule {i}" for i in range(100))
    out = view(proposal=proposal(prompt=long_prompt), max_diff_lines=10)
    assert "rule 9" not in out
    assert "more line(s): promptloop diff shows them all" in out


def test_view_without_a_stable_prompt_says_why_and_shows_the_challenger() -> None:
    out = view(stable_prompt=None, stable_prompt_note="the prompt comes from a Secret")
    assert "stable prompt unavailable: the prompt comes from a Secret" in out
    assert "+Refunds are billing." in out


def test_view_of_identical_prompts_says_so() -> None:
    out = view(stable_prompt=CHALLENGER_PROMPT)
    assert "identical to the stable prompt" in out


def test_view_of_a_fresh_rollout_renders_without_status() -> None:
    raw = rollout_dict()
    raw["status"] = {}
    out = render_status(AgentRollout.model_validate(raw), None, None, width=80, color=False)
    assert "not reconciled yet" in out
    assert "no canary" in out
    assert "no weights read back yet" in out and "no counts in this window yet" in out
    assert "no verdict yet" in out and "no challenger to compare" in out


def test_view_of_a_stable_rollout_after_rollback() -> None:
    target = rollout(
        phase="RolledBack",
        canary=None,
        message="2.1.0 rejected (scaled to zero): rejected",
        decision=None,
    )
    out = view(rollout=target, proposal=None)
    assert "phase RolledBack" in out and "no canary" in out
    assert "2.1.0 rejected (scaled to zero)" in out
    assert "promptloop approve" not in out


def test_view_shows_proposals_and_an_error_banner() -> None:
    queued = proposal(name="classifier-2-2-0", phase="Pending")
    out = view(proposals=[proposal(), queued], error="refresh failed: connection refused")
    assert out.splitlines()[0] == "! refresh failed: connection refused"
    assert "Proposals (last 2 of 2)" in out
    assert lines_with(out, "classifier-2-2-0")[0].split()[2] == "Pending"


def test_view_fits_its_width_and_has_no_colour_unless_asked() -> None:
    for width in (60, 80, 140):
        out = view(width=width)
        assert max(len(line) for line in out.splitlines()) <= width
        assert "\x1b" not in out
        assert not [line for line in out.splitlines() if line != line.rstrip()]
    coloured = view(color=True)
    assert "\x1b[" in coloured
    assert ANSI.sub("", coloured) == view()


def test_view_is_deterministic() -> None:
    assert view() == view()


# -- approve and reject ----------------------------------------------------------------------------


def test_approval_is_refused_for_finished_foreign_or_rejected_proposals() -> None:
    target = rollout()
    assert approval_refusal(target, proposal()) is None
    for phase in ("Promoted", "RolledBack", "Rejected", "Superseded", "Invalid"):
        refusal = approval_refusal(target, proposal(phase=phase))
        assert refusal is not None and f"is {phase}" in refusal
    foreign = approval_refusal(target, proposal(rollout_name="other"))
    assert foreign is not None and "belongs to AgentRollout other" in foreign
    marked = approval_refusal(target, proposal(annotations={REJECT_ANNOTATION: "true"}))
    assert marked is not None and "was rejected" in marked


def test_rejection_is_refused_after_promotion_and_when_finished() -> None:
    target = rollout()
    assert rejection_refusal(target, proposal()) is None
    assert rejection_refusal(target, proposal(phase="Pending")) is None
    promoted = rejection_refusal(target, proposal(phase="Promoted"))
    assert promoted is not None and "before promotion" in promoted
    done = rejection_refusal(target, proposal(phase="RolledBack"))
    assert done is not None and "already RolledBack" in done
    foreign = rejection_refusal(target, proposal(rollout_name="other"))
    assert foreign is not None and "belongs to AgentRollout other" in foreign


def test_describe_approval_says_what_the_operator_does_in_each_situation() -> None:
    holding = describe_approval(rollout(), proposal())
    assert "acts on it at once" in holding and "from 30% to the ceiling 50%" in holding
    early = describe_approval(rollout(phase="Progressing"), proposal(phase="Canary"))
    assert "skips no evidence" in early and "at 30%" in early
    queued = describe_approval(rollout(), proposal(name="classifier-2-2-0", phase="Pending"))
    assert "not in the canary yet" in queued and "Pending" in queued


def test_describe_rejection_says_what_the_operator_does() -> None:
    live = describe_rejection(rollout(), proposal())
    assert "rolls back at once" in live and "from 30%" in live and "2.0.0 serves all" in live
    assert "Rejected" in live
    queued = describe_rejection(rollout(), proposal(name="classifier-2-2-0", phase="Pending"))
    assert "not in the canary" in queued and "never take traffic" in queued
