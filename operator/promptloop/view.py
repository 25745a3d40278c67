"""The live view of one AgentRollout, and the sentences the CLI says about approval and rejection.

Everything here is pure: objects in, text out. No cluster, no clock (the caller passes ``now``), no
environment (the rich console is told its width and colour instead of guessing them from the
terminal), so ``promptloop status`` and the tests render exactly the same thing.

What the view shows, top to bottom:

* the rollout's phase, stable and canary versions, and the operator's ``message``;
* one bar per version from ``status.weights`` (what the router reported, not what was intended),
  stable first, the challenger next, any other registered version after;
* per-version failure rates in the current window with a Wilson 95 % interval and the sample
  counts. The interval is descriptive: the verdict comes from the rollout's own sequential test,
  which stays valid although it is checked on every tick;
* the last verdict, its reason, its statistic and the samples still needed;
* conditions that are not True, the last few history entries, the rollout's proposals;
* the challenger's prompt as a unified diff against the stable prompt.

Text that comes from the cluster (prompts, messages, reasons) is shown with control characters
and bidirectional overrides escaped: a prompt written by a model must not be able to move the
cursor, retitle the terminal or make a diff read differently from what it is.
"""

from __future__ import annotations

import difflib
import io
import math
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from promptloop.api.agentrollout import AgentRollout, HistoryEntry, WindowCounts
from promptloop.api.common import ConditionStatus
from promptloop.api.promptproposal import PromptProposal, ProposalPhase
from promptloop.constants import REJECT_ANNOTATION, REJECT_REASON_ANNOTATION
from promptloop.rollout.phases import PROPOSAL_CLOSED

__all__ = [
    "REJECT_ANNOTATION",
    "REJECT_REASON_ANNOTATION",
    "TERMINAL_PROPOSAL_PHASES",
    "Z95",
    "approval_refusal",
    "build_view",
    "describe_approval",
    "describe_rejection",
    "prompt_diff",
    "rejection_refusal",
    "render_diff",
    "render_status",
    "sanitize",
    "wilson_interval",
]


# The 97.5th percentile of the standard normal: a two-sided 95 % interval.
Z95: Final = 1.959963984540054

# A proposal in one of these phases never takes traffic again: approving or rejecting it would
# change nothing the operator acts on.
TERMINAL_PROPOSAL_PHASES: Final = PROPOSAL_CLOSED

_BAR_FULL: Final = "█"
_BAR_EMPTY: Final = "░"
# C0/C1 controls (tab and newline are layout, kept), DEL, and the Unicode bidi controls that
# "Trojan Source" uses to make text display in an order other than the one it is read in.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

# The end of a line made only of blanks and style codes (rich pads styled and unstyled cells);
# the blanks go, the codes stay so that every style is still closed.
_SGR = re.compile(r"\x1b\[[0-9;]*m")
# Words, runs of blanks and single punctuation marks: the units a prompt change is read in.
_WORD = re.compile(r"\s+|\w+|[^\w\s]")
_TRAILING_BLANKS = re.compile(r"(?:[ ]|\x1b\[[0-9;]*m)+$", re.MULTILINE)

_PHASE_STYLE: Final = {
    "Stable": "green",
    "Progressing": "cyan",
    "AwaitingApproval": "bold yellow",
    "Promoting": "bold blue",
    "RolledBack": "red",
    "Invalid": "bold red",
    "Pending": "dim",
    "Promoted": "green",
    "Rejected": "red",
    "Canary": "cyan",
    "Rendered": "dim",
    "Superseded": "dim",
}
_VERDICT_STYLE: Final = {
    "step": "green",
    "promote": "bold green",
    "hold": "yellow",
    "await-approval": "bold yellow",
    "rollback": "bold red",
}
_ROLE_STYLE: Final = {"stable": "blue", "canary": "magenta", "other": "dim"}


# -- small pure helpers ---------------------------------------------------------------------


def sanitize(text: str) -> str:
    """Make cluster-supplied text safe to print on a terminal.

    Parameters
    ----------
    text
        Any text read from the cluster: a prompt, a message, a reason.

    Returns
    -------
    str
        The same text with control characters (other than tab and newline) and bidirectional
        overrides replaced by visible escapes such as ``\\x1b`` and ``\\u202e``.
    """

    def escape(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _UNSAFE.sub(escape, text)


def wilson_interval(failed: int, total: int, *, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a failure rate.

    Wilson rather than the textbook normal interval because canary windows are small and rates
    near zero are the interesting case: the normal interval collapses to a point at 0 failures
    and strays below 0, Wilson stays inside [0, 1] and keeps an honest upper bound.

    Parameters
    ----------
    failed
        Failures observed.
    total
        Requests observed (``failed <= total``).
    z
        The normal quantile; the default gives a two-sided 95 % interval.

    Returns
    -------
    tuple of float, or None
        ``(low, high)`` as fractions in [0, 1]; None when ``total`` is 0 (no evidence at all).

    Raises
    ------
    ValueError
        When the counts are negative or ``failed > total``.
    """
    if failed < 0 or total < 0 or failed > total:
        raise ValueError(f"need 0 <= failed <= total, got failed={failed} total={total}")
    if total == 0:
        return None
    rate = failed / total
    z2 = z * z
    denominator = 1 + z2 / total
    centre = (rate + z2 / (2 * total)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / total + z2 / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def prompt_diff(
    stable: str,
    challenger: str,
    *,
    from_label: str = "stable",
    to_label: str = "challenger",
    context: int = 3,
) -> str:
    """The unified diff from the stable prompt to the challenger's, line by line.

    Parameters
    ----------
    stable
        The stable prompt.
    challenger
        The challenger's ``spec.systemPrompt``.
    from_label, to_label
        The names on the ``---`` and ``+++`` lines.
    context
        Unchanged lines kept around each change.

    Returns
    -------
    str
        The diff, newline-terminated; the empty string when the prompts are identical. Line
        endings are not part of the comparison (a trailing newline alone is no change an agent
        would notice, and the operator compares prompts without surrounding whitespace).
    """
    lines = list(
        difflib.unified_diff(
            stable.splitlines(),
            challenger.splitlines(),
            fromfile=from_label,
            tofile=to_label,
            n=context,
            lineterm="",
        )
    )
    return "\n".join(lines) + "\n" if lines else ""


def _percent(fraction: float | None) -> str:
    if fraction is None:
        return "—"
    # AgentField's minimum share (1 in 10000) must not read as "0.0%", i.e. not routed at all.
    if 0 < fraction < 0.0005:
        return "<0.1%"
    return f"{fraction * 100:.1f}%"


def _age(moment: str | None, now: datetime | None) -> str:
    if not moment:
        return ""
    if now is None:
        return moment
    try:
        then = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    except ValueError:
        return moment
    seconds = int((now - then).total_seconds())
    if seconds < 0:
        return moment
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    if seconds < 172800:
        return f"{seconds // 3600}h ago"
    return f"{seconds // 86400}d ago"


def _bar(percent: float, width: int) -> str:
    filled = round(max(0.0, min(100.0, percent)) / 100 * width)
    # A version that holds any share at all gets a visible sliver: AgentField's minimum share is
    # 1/10000, which would otherwise draw as an empty bar indistinguishable from "not routed".
    if percent > 0 and filled == 0:
        filled = 1
    return _BAR_FULL * filled + _BAR_EMPTY * (width - filled)


def _interval_plot(
    rate: float | None, bounds: tuple[float, float] | None, scale: float, width: int
) -> str:
    """A one-line picture of an interval on the axis [0, scale]: ``  ├──●───┤   ``."""
    if bounds is None or rate is None or scale <= 0:
        return " " * width
    last = width - 1

    def column(value: float) -> int:
        return max(0, min(last, round(value / scale * last)))

    low, high, mid = column(bounds[0]), column(bounds[1]), column(rate)
    cells = [" "] * width
    for index in range(low, high + 1):
        cells[index] = "─"
    cells[low] = "├"
    cells[high] = "┤"
    cells[mid] = "●"
    return "".join(cells)


def _nice_scale(upper: float) -> float:
    """Round an axis maximum up to a readable step (5 % up to 50 %, then 100 %)."""
    if upper <= 0:
        return 0.05
    steps = [0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 1.0]
    return next((s for s in steps if upper <= s), 1.0)


# -- the view ----------------------------------------------------------------------------------


def _heading(title: str) -> Text:
    return Text(title, style="bold underline")


def _header(rollout: AgentRollout) -> list[RenderableType]:
    meta = rollout.metadata
    status = rollout.status
    phase = status.phase.value if status.phase is not None else "(not reconciled yet)"
    title = Text()
    title.append(f"AgentRollout {meta.namespace or 'default'}/{sanitize(meta.name)}", "bold")
    title.append("  phase ")
    title.append(phase, _PHASE_STYLE.get(phase, "bold"))
    title.append(f"  node {sanitize(rollout.spec.agent.node_id)}", "dim")
    stable_version = status.stable_version or rollout.spec.stable.version
    stable_deployment = status.stable_deployment or rollout.spec.stable.deployment_name
    line = Text()
    line.append("stable ")
    line.append(sanitize(stable_version), _ROLE_STYLE["stable"])
    line.append(f" (Deployment {sanitize(stable_deployment)})")
    canary = status.canary
    if canary is not None and canary.version:
        line.append("   canary ")
        line.append(sanitize(canary.version), _ROLE_STYLE["canary"])
        line.append(f" (proposal {sanitize(canary.proposal or '?')})")
        weight = "not yet seeded" if canary.weight is None else f"{canary.weight}%"
        line.append(f" weight {weight}, {canary.steps} step(s)")
        line.append(", approved" if canary.approved else ", not approved")
        if canary.rolled_back:
            line.append(", rolled back to the floor", "red")
    else:
        line.append("   no canary", "dim")
    parts: list[RenderableType] = [title, line]
    if status.message:
        parts.append(Text(sanitize(status.message), style="italic"))
    return parts


def _traffic(rollout: AgentRollout, width: int) -> list[RenderableType]:
    status = rollout.status
    policy = rollout.spec.canary
    parts: list[RenderableType] = [_heading("Traffic (weights read back from the router)")]
    if not status.weights:
        parts.append(Text("no weights read back yet", style="dim"))
        return parts
    stable_version = status.stable_version or rollout.spec.stable.version
    canary_version = status.canary.version if status.canary else None

    def role(version: str, given: str | None) -> str:
        if given:
            return given
        if version == stable_version:
            return "stable"
        return "canary" if version == canary_version else "other"

    order = {"stable": 0, "canary": 1}
    rows = sorted(
        ((w, role(w.version, w.role)) for w in status.weights),
        key=lambda item: (order.get(item[1], 2), item[0].version),
    )
    bar_width = max(10, min(50, width - 40))
    table = Table.grid(padding=(0, 1))
    for _ in range(4):
        table.add_column(no_wrap=True)
    table.add_column()
    for weight, kind in rows:
        note = ""
        if kind == "canary" and status.canary is not None and status.canary.weight is not None:
            note = f"set {status.canary.weight}%, ceiling {policy.ceiling}%"
            if not status.canary.approved:
                note += " (needs approval)"
        elif weight.raw is not None:
            note = f"share {weight.raw}"
        table.add_row(
            Text(sanitize(weight.version), style=_ROLE_STYLE.get(kind, "")),
            Text(kind, style="dim"),
            Text(_bar(weight.percent, bar_width), style=_ROLE_STYLE.get(kind, "")),
            Text(f"{_percent(weight.percent / 100):>6}"),
            Text(note, style="dim"),
        )
    parts.append(table)
    return parts


def _rates(rollout: AgentRollout, width: int) -> list[RenderableType]:
    status = rollout.status
    policy = rollout.spec.canary
    parts: list[RenderableType] = [
        _heading("Failure rates this window (Wilson 95% interval; the verdict uses its own test)")
    ]
    counts = status.counts
    rows: list[tuple[str, WindowCounts]] = []
    if counts is not None:
        if counts.stable is not None:
            rows.append(("stable", counts.stable))
        if counts.canary is not None:
            rows.append(("canary", counts.canary))
    if not rows:
        parts.append(Text("no counts in this window yet", style="dim"))
        return parts
    intervals = []
    for _, window in rows:
        failed = min(window.failed, window.total)  # a skewed counter must not break the view
        rate = (
            window.rate
            if window.rate is not None
            else (failed / window.total if window.total else None)
        )
        intervals.append((rate, wilson_interval(failed, window.total)))
    scale = _nice_scale(max((b[1] for _, b in intervals if b is not None), default=0.0))
    plot_width = max(10, min(30, width - 70))
    table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold")
    table.add_column("version", no_wrap=True)
    table.add_column("role", no_wrap=True)
    table.add_column("failed/total", justify="right", no_wrap=True)
    table.add_column("rate", justify="right", no_wrap=True)
    table.add_column("95% interval", no_wrap=True)
    table.add_column(
        f"0%{' ' * (plot_width - 2 - len(_percent(scale)))}{_percent(scale)}", no_wrap=True
    )
    for (kind, window), (rate, bounds) in zip(rows, intervals, strict=True):
        interval = "—" if bounds is None else f"[{_percent(bounds[0])}, {_percent(bounds[1])}]"
        table.add_row(
            Text(sanitize(window.version), style=_ROLE_STYLE[kind]),
            Text(kind, style="dim"),
            f"{window.failed}/{window.total}",
            _percent(rate),
            interval,
            Text(_interval_plot(rate, bounds, scale, plot_width), style=_ROLE_STYLE[kind]),
        )
    parts.append(table)
    guard = f"at least {policy.min_samples} samples per version before any verdict"
    if policy.max_failure_rate is not None:
        guard += f"; a challenger above {_percent(policy.max_failure_rate)} rolls back"
    parts.append(Text(guard, style="dim"))
    return parts


def _decision(rollout: AgentRollout, now: datetime | None) -> list[RenderableType]:
    decision = rollout.status.decision
    parts: list[RenderableType] = [_heading("Decision")]
    if decision is None:
        parts.append(Text("no verdict yet", style="dim"))
        return parts
    line = Text()
    line.append(decision.verdict, _VERDICT_STYLE.get(decision.verdict, "bold"))
    if decision.reason:
        line.append(f": {sanitize(decision.reason)}")
    parts.append(line)
    details = []
    if decision.samples_needed is not None:
        details.append(f"samples still needed: about {decision.samples_needed} per version")
    if decision.statistic is not None:
        details.append(f"statistic {decision.statistic:.3g}")
    if decision.decided_at:
        details.append(f"decided {_age(decision.decided_at, now)}")
    if details:
        parts.append(Text("; ".join(details), style="dim"))
    if rollout.status.phase is not None and rollout.status.phase.value == "AwaitingApproval":
        name = sanitize(rollout.metadata.name)
        parts.append(
            Text(
                f"holding below the ceiling for a person: promptloop approve {name}"
                f"  (or: promptloop reject {name})",
                style="bold yellow",
            )
        )
    return parts


def _conditions(rollout: AgentRollout) -> list[RenderableType]:
    conditions = rollout.status.conditions
    failing = [c for c in conditions if c.status is not ConditionStatus.TRUE]
    if not conditions:
        return []
    if not failing:
        names = ", ".join(sorted(c.type for c in conditions))
        return [Text(f"conditions: all True ({names})", style="dim")]
    parts: list[RenderableType] = [_heading("Conditions not True")]
    for condition in failing:
        line = Text()
        line.append(f"{condition.type}={condition.status.value}", "red")
        if condition.reason:
            line.append(f" ({sanitize(condition.reason)})")
        if condition.message:
            line.append(f": {sanitize(condition.message)}")
        parts.append(line)
    return parts


def _history(
    entries: Sequence[HistoryEntry], limit: int, now: datetime | None
) -> list[RenderableType]:
    if not entries or limit <= 0:
        return []
    table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold")
    table.add_column("when", no_wrap=True, style="dim")
    table.add_column("event", no_wrap=True)
    table.add_column("version", no_wrap=True)
    table.add_column("weight", justify="right", no_wrap=True)
    table.add_column("message")
    for entry in entries[-limit:]:
        table.add_row(
            _age(entry.at, now),
            Text(sanitize(entry.event), style=_VERDICT_STYLE.get(entry.event, "")),
            sanitize(entry.version or ""),
            "" if entry.weight is None else f"{entry.weight}%",
            sanitize(entry.message),
        )
    return [_heading(f"History (last {min(limit, len(entries))} of {len(entries)})"), table]


def _proposals(proposals: Sequence[PromptProposal], limit: int) -> list[RenderableType]:
    if not proposals:
        return []
    table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold")
    for column in ("proposal", "version", "phase", "weight", "approved"):
        table.add_column(column, no_wrap=column != "proposal")
    table.add_column("message")
    shown = list(proposals)[-limit:]
    for proposal in shown:
        phase = proposal.status.phase.value if proposal.status.phase else ""
        weight = proposal.status.weight
        table.add_row(
            sanitize(proposal.metadata.name),
            sanitize(proposal.spec.version),
            Text(phase, style=_PHASE_STYLE.get(phase, "")),
            "" if weight is None else f"{weight}%",
            "yes" if proposal.spec.approved else "no",
            sanitize(proposal.status.message or ""),
        )
    return [_heading(f"Proposals (last {len(shown)} of {len(proposals)})"), table]


def _tokens(line: str) -> list[str]:
    return _WORD.findall(line)


def _word_changes(old: str, new: str) -> tuple[list[str], set[int], list[str], set[int]] | None:
    """Tokens of a removed and an added line and which of them differ, or None if unrelated."""
    a, b = _tokens(old), _tokens(new)
    # Below this share of common words the lines are unrelated and word marks would only say
    # "everything": the whole line is the change. Blanks are left out, as they always match.
    words = difflib.SequenceMatcher(
        None,
        [t for t in a if not t.isspace()],
        [t for t in b if not t.isspace()],
        autojunk=False,
    )
    if words.ratio() < 0.4:
        return None
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    changed_a: set[int] = set()
    changed_b: set[int] = set()
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            changed_a.update(range(i1, i2))
            changed_b.update(range(j1, j2))
    return a, changed_a, b, changed_b


def _marked_line(prefix: str, tokens: list[str], changed: set[int], style: str) -> Text:
    def strong(index: int) -> bool:
        # A blank is marked only inside a changed phrase: marked alone at the edge of one, it
        # reads as noise rather than as part of the change.
        if tokens[index].isspace():
            return {index - 1, index, index + 1} <= changed
        return index in changed

    line = Text(prefix, style)
    run: list[str] = []
    marked = False
    for index, token in enumerate(tokens):
        if strong(index) != marked and run:
            line.append(sanitize("".join(run)), f"{style} reverse" if marked else style)
            run = []
        marked = strong(index)
        run.append(token)
    if run:
        line.append(sanitize("".join(run)), f"{style} reverse" if marked else style)
    return line


def _diff_text(diff: str, max_lines: int | None) -> Text:
    """A unified diff as styled text; paired removed/added lines get their changed words marked.

    Prompts are often one long paragraph, where a line diff only says "this line changed":
    marking the words that differ is what makes such a change readable. The marks are style
    only (reverse video), so without colour the text is the plain unified diff.
    """
    lines = diff.splitlines()
    hidden = 0
    if max_lines is not None and len(lines) > max_lines:
        hidden = len(lines) - max_lines
        lines = lines[:max_lines]
    rendered: list[Text] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        # Only the first two lines are the file headers; a prompt line that starts with "--"
        # shows up later as "---..." and is an ordinary removal.
        if index < 2 and line.startswith(("---", "+++")):
            rendered.append(Text(sanitize(line), "bold"))
        elif line.startswith("@@"):
            rendered.append(Text(sanitize(line), "cyan"))
        elif line.startswith("-"):
            removed = [line]
            while index + len(removed) < len(lines) and lines[index + len(removed)][:1] == "-":
                removed.append(lines[index + len(removed)])
            after = index + len(removed)
            added: list[str] = []
            while after + len(added) < len(lines) and lines[after + len(added)][:1] == "+":
                added.append(lines[after + len(added)])
            marks: list[tuple[list[str], set[int], list[str], set[int]] | None]
            marks = [None] * max(len(removed), len(added))
            if len(removed) == len(added):  # a line-for-line rewrite: mark words per pair
                marks = [_word_changes(r[1:], a[1:]) for r, a in zip(removed, added, strict=True)]
            for offset, old in enumerate(removed):
                mark = marks[offset]
                rendered.append(
                    _marked_line("-", mark[0], mark[1], "red")
                    if mark
                    else Text(sanitize(old), "red")
                )
            for offset, new in enumerate(added):
                mark = marks[offset]
                rendered.append(
                    _marked_line("+", mark[2], mark[3], "green")
                    if mark
                    else Text(sanitize(new), "green")
                )
            index = after + len(added)
            continue
        elif line.startswith("+"):
            rendered.append(Text(sanitize(line), "green"))
        else:
            rendered.append(Text(sanitize(line)))
        index += 1
    if hidden:
        rendered.append(Text(f"… {hidden} more line(s): promptloop diff shows them all", "dim"))
    return Text("\n").join(rendered)


def _prompt(
    rollout: AgentRollout,
    proposal: PromptProposal | None,
    stable_prompt: str | None,
    stable_prompt_note: str | None,
    max_diff_lines: int | None,
) -> list[RenderableType]:
    if proposal is None:
        return [_heading("Prompt"), Text("no challenger to compare", style="dim")]
    stable_version = rollout.status.stable_version or rollout.spec.stable.version
    title = (
        f"Prompt diff: stable {sanitize(stable_version)} → challenger "
        f"{sanitize(proposal.spec.version)} ({sanitize(proposal.metadata.name)})"
    )
    parts: list[RenderableType] = [_heading(title)]
    if proposal.spec.rationale:
        parts.append(Text(f"rationale: {sanitize(proposal.spec.rationale)}", style="italic"))
    if stable_prompt is None:
        note = stable_prompt_note or "the stable prompt could not be read"
        parts.append(Text(f"stable prompt unavailable: {sanitize(note)}", style="yellow"))
        parts.append(Text("challenger prompt:", style="bold"))
        parts.append(
            _diff_text(
                "\n".join("+" + line for line in proposal.spec.system_prompt.splitlines()),
                max_diff_lines,
            )
        )
        return parts
    diff = prompt_diff(
        stable_prompt,
        proposal.spec.system_prompt,
        from_label=f"stable {stable_version}",
        to_label=f"challenger {proposal.spec.version}",
    )
    if not diff:
        parts.append(Text("(identical to the stable prompt)", style="dim"))
    else:
        parts.append(_diff_text(diff, max_diff_lines))
    return parts


def build_view(
    rollout: AgentRollout,
    proposal: PromptProposal | None,
    stable_prompt: str | None,
    *,
    width: int = 100,
    now: datetime | None = None,
    proposals: Sequence[PromptProposal] = (),
    stable_prompt_note: str | None = None,
    history: int = 5,
    max_diff_lines: int | None = None,
    error: str | None = None,
) -> RenderableType:
    """The view as a rich renderable (what ``status -w`` hands to its live display).

    Parameters are those of :func:`render_status`.
    """
    sections: list[list[RenderableType]] = [
        _header(rollout),
        _traffic(rollout, width),
        _rates(rollout, width),
        _decision(rollout, now),
        _conditions(rollout),
        _history(rollout.status.history, history, now),
        _proposals(proposals, 5),
        _prompt(rollout, proposal, stable_prompt, stable_prompt_note, max_diff_lines),
    ]
    items: list[RenderableType] = []
    if error:
        items.append(Text(f"! {sanitize(error)}", style="bold red"))
    for section in sections:
        if not section:
            continue
        if items:
            items.append(Text(""))
        items.extend(section)
    return Group(*items)


def render_status(
    rollout: AgentRollout,
    proposal: PromptProposal | None,
    stable_prompt: str | None,
    *,
    width: int,
    color: bool,
    now: datetime | None = None,
    proposals: Sequence[PromptProposal] = (),
    stable_prompt_note: str | None = None,
    history: int = 5,
    max_diff_lines: int | None = None,
    error: str | None = None,
) -> str:
    """Render the live view of a rollout as text.

    Parameters
    ----------
    rollout
        The AgentRollout, status included.
    proposal
        The challenger's PromptProposal (normally ``status.canary.proposal``), or None.
    stable_prompt
        The stable prompt, as the operator reads it from the stable Deployment; None when it
        cannot be read (``stable_prompt_note`` says why).
    width
        The width in terminal cells; lines are wrapped to fit.
    color
        Whether to emit ANSI colour and style codes.
    now
        The current time, for ages such as "12s ago"; None shows timestamps as written.
    proposals
        The rollout's PromptProposals, oldest first, for the proposals table (empty: no table).
    stable_prompt_note
        Why the stable prompt is unavailable.
    history
        How many of the latest history entries to show.
    max_diff_lines
        Cut the prompt diff after this many lines (None: the whole diff).
    error
        A problem to show at the top (a failed refresh while watching).

    Returns
    -------
    str
        The rendered view, newline-terminated.
    """
    view = build_view(
        rollout,
        proposal,
        stable_prompt,
        width=width,
        now=now,
        proposals=proposals,
        stable_prompt_note=stable_prompt_note,
        history=history,
        max_diff_lines=max_diff_lines,
        error=error,
    )
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=width,
        force_terminal=color,
        color_system="standard" if color else None,
        no_color=not color,
        highlight=False,
        markup=False,
        emoji=False,
        legacy_windows=False,
        # Purity: no COLUMNS, NO_COLOR, TERM or FORCE_COLOR from the caller's environment.
        _environ={},
    )
    console.print(view)
    # Tables pad every cell to its column's width; trailing blanks only get in the way of
    # copying and of reading the text in a log.
    return _TRAILING_BLANKS.sub(lambda tail: "".join(_SGR.findall(tail.group())), buffer.getvalue())


def render_diff(diff: str, *, color: bool) -> str:
    """A unified diff (from :func:`prompt_diff`) made safe for a terminal, coloured when asked.

    Parameters
    ----------
    diff
        The diff text.
    color
        Whether to colour removed, added and hunk lines.

    Returns
    -------
    str
        The diff with control characters escaped (:func:`sanitize`); lines are never wrapped,
        so the text stays a valid diff.
    """
    if not diff:
        return ""
    if not color:
        return sanitize(diff)
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=200,
        force_terminal=True,
        color_system="standard",
        highlight=False,
        markup=False,
        emoji=False,
        legacy_windows=False,
        _environ={},
    )
    console.print(_diff_text(diff, None), soft_wrap=True)
    return buffer.getvalue()


# -- what approve and reject say -----------------------------------------------------------------


def approval_refusal(rollout: AgentRollout, proposal: PromptProposal) -> str | None:
    """Why ``promptloop approve`` must not touch this proposal, or None when it may.

    Parameters
    ----------
    rollout
        The AgentRollout named on the command line.
    proposal
        The proposal to approve.

    Returns
    -------
    str or None
        A sentence for the user, or None.
    """
    name, rollout_name = proposal.metadata.name, rollout.metadata.name
    if proposal.spec.rollout_ref.name != rollout_name:
        return (
            f"PromptProposal {name} belongs to AgentRollout {proposal.spec.rollout_ref.name}, "
            f"not {rollout_name}"
        )
    phase = proposal.status.phase
    if phase in TERMINAL_PROPOSAL_PHASES:
        assert phase is not None
        return (
            f"PromptProposal {name} is {phase.value}: the operator will not canary it again, so "
            "approving it would change nothing"
            + (f" ({proposal.status.message})" if proposal.status.message else "")
        )
    if proposal.metadata.annotations.get(REJECT_ANNOTATION) == "true":
        return f"PromptProposal {name} was rejected ({REJECT_ANNOTATION}); file a new proposal"
    return None


def rejection_refusal(rollout: AgentRollout, proposal: PromptProposal) -> str | None:
    """Why ``promptloop reject`` must not touch this proposal, or None when it may.

    Parameters
    ----------
    rollout
        The AgentRollout named on the command line.
    proposal
        The proposal to reject.

    Returns
    -------
    str or None
        A sentence for the user, or None.
    """
    name, rollout_name = proposal.metadata.name, rollout.metadata.name
    if proposal.spec.rollout_ref.name != rollout_name:
        return (
            f"PromptProposal {name} belongs to AgentRollout {proposal.spec.rollout_ref.name}, "
            f"not {rollout_name}"
        )
    phase = proposal.status.phase
    if phase is ProposalPhase.PROMOTED or phase is ProposalPhase.SUPERSEDED:
        return (
            f"PromptProposal {name} is {phase.value}: it is (or was) the stable version, and "
            "rejection only applies before promotion. To go back, propose the previous prompt "
            "as a new version"
        )
    if phase in TERMINAL_PROPOSAL_PHASES and phase is not ProposalPhase.INVALID:
        assert phase is not None
        return f"PromptProposal {name} is already {phase.value}; it takes no traffic"
    return None


def describe_approval(rollout: AgentRollout, proposal: PromptProposal) -> str:
    """What the operator does when this proposal is approved now, in a sentence or two.

    Parameters
    ----------
    rollout
        The AgentRollout, as read just before the approval.
    proposal
        The proposal being approved.

    Returns
    -------
    str
        The expected reaction.
    """
    policy = rollout.spec.canary
    status = rollout.status
    canary = status.canary
    version = proposal.spec.version
    in_canary = canary is not None and canary.proposal == proposal.metadata.name
    if in_canary and status.phase is not None and status.phase.value == "AwaitingApproval":
        assert canary is not None
        return (
            f"The rollout is holding for this approval: the operator acts on it at once and "
            f"steps {version} from {canary.weight}% to the ceiling {policy.ceiling}%, then on to "
            "100% and promotion only while the evidence keeps supporting it (a worse challenger "
            "still rolls back)."
        )
    if in_canary:
        weight = (
            "not yet seeded"
            if canary is None or canary.weight is None
            else (f"at {canary.weight}%")
        )
        return (
            f"{version} is in the canary ({weight}). Approval is recorded now and skips no "
            f"evidence: the weight keeps stepping only on evidence and passes the ceiling "
            f"{policy.ceiling}% without holding there for a person."
        )
    return (
        f"{version} is not in the canary yet (proposal phase "
        f"{proposal.status.phase.value if proposal.status.phase else 'not reconciled yet'}). "
        f"When it is, it steps on evidence and does not hold at the ceiling {policy.ceiling}%."
    )


def describe_rejection(rollout: AgentRollout, proposal: PromptProposal) -> str:
    """What the operator does when this proposal is rejected now, in a sentence or two.

    Parameters
    ----------
    rollout
        The AgentRollout, as read just before the rejection.
    proposal
        The proposal being rejected.

    Returns
    -------
    str
        The expected reaction.
    """
    status = rollout.status
    canary = status.canary
    version = proposal.spec.version
    stable = status.stable_version or rollout.spec.stable.version
    if canary is not None and canary.proposal == proposal.metadata.name:
        weight = "" if canary.weight is None else f" from {canary.weight}%"
        return (
            f"The operator rolls back at once: {version} is taken out of rotation{weight} (its "
            f"Deployment is scaled to zero), {stable} serves all traffic again, the rollout's "
            f"phase becomes RolledBack and the proposal's Rejected, for good."
        )
    return (
        f"{version} is not in the canary: it will never take traffic, and the operator marks it "
        f"Rejected when it reaches it; {stable} keeps serving."
    )
