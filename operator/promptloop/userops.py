"""``promptloop status|diff|approve|reject``: what a person does with a rollout.

The same commands work as the kubectl plugin (``kubectl promptloop status classifier``): the
console script ``kubectl-promptloop`` is this command line.

Usage::

    promptloop status classifier -n demo         # the live view once
    promptloop status classifier -n demo -w      # redrawn in place until Ctrl-C
    promptloop status classifier --wait --timeout 30m   # CI: exit 0 promoted, 1 failed, 2 timeout
    promptloop status classifier -o json         # the rollout and its proposal, for scripts
    promptloop diff classifier                   # stable prompt -> challenger prompt
    promptloop approve classifier                # approve the current canary's proposal
    promptloop reject classifier --reason "too terse on refunds"

``NAME`` is always the AgentRollout; approve and reject act on its current canary
(``status.canary.proposal``) unless ``--proposal`` names one. What they write:

* approve: ``spec.approved: true`` on the PromptProposal (a merge patch by the field manager
  ``promptloop-cli``, which the operator records as ``status.approval.approvedBy``). A rollout
  holding at ``AwaitingApproval`` steps to the ceiling at once; earlier, approval only removes
  the hold and skips no evidence.
* reject: the annotation ``promptloop.dev/rejected: "true"`` (and
  ``promptloop.dev/rejected-reason`` with ``--reason``), plus ``spec.approved: false`` when it
  was true. The operator rolls the challenger back at once and the proposal ends ``Rejected``.

Exit codes:

====  =========================================================================================
0     done (or nothing to do: already approved / already marked rejected); Ctrl-C under ``-w``
1     the cluster could not be reached or refused (RBAC), the stable prompt could not be read
      (``diff``), or ``--wait`` saw no reaction from the operator in time
2     usage error
3     the AgentRollout or the PromptProposal does not exist
4     nothing to act on: no canary and no ``--proposal``, a proposal of another rollout, or a
      proposal that is finished (approving or rejecting it would change nothing)
====  =========================================================================================

``status --wait`` has its own three (:mod:`promptloop.outcome`): 0 the proposal was promoted, 1 it
was rolled back, rejected or found invalid (or the rollout is Invalid), 2 the timeout passed; a
cluster that cannot be reached is 1 and a missing object 3, as above.

Kubeconfig comes from ``--kubeconfig`` or ``KUBECONFIG`` (in a pod: the ServiceAccount), the
namespace from ``-n`` or the kubeconfig context's namespace or ``default``. Secrets are never
read: a stable prompt kept in a Secret is reported as unavailable, not fetched.
"""

from __future__ import annotations

import argparse
import faulthandler
import hashlib
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import pydantic

from promptloop.api.agentrollout import AgentRollout
from promptloop.api.common import from_cluster
from promptloop.api.promptproposal import PromptProposal
from promptloop.constants import PROPOSAL_PLURAL, ROLLOUT_PLURAL
from promptloop.k8s.sync import ClusterError, KubeRequestError, SyncKube
from promptloop.output import OUTPUT_FORMATS, dump_document
from promptloop.rollout.queue import queue_key
from promptloop.view import (
    REJECT_ANNOTATION,
    REJECT_REASON_ANNOTATION,
    TERMINAL_PROPOSAL_PHASES,
    approval_refusal,
    describe_approval,
    describe_rejection,
    prompt_diff,
    rejection_refusal,
    render_diff,
    render_status,
    sanitize,
)

__all__ = [
    "EXIT_ERROR",
    "EXIT_NOTHING_TO_DO",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "FIELD_MANAGER",
    "MAX_REASON_CHARS",
    "register",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_NOTHING_TO_DO = 4

# Recorded by the API server in managedFields, which is where the operator reads "approved by".
FIELD_MANAGER = "promptloop-cli"
MAX_REASON_CHARS = 1024
# The longest single wait on the watch: how soon a Ctrl-C swallowed by a library still ends it.
_WATCH_CHUNK = 5
# The shortest gap between two redraws of `status -w`.
_MIN_REDRAW_SECONDS = 0.25
# Optimistic-concurrency retries for approve/reject (the operator writes status every tick).
_PATCH_ATTEMPTS = 4

T = TypeVar("T")
ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)


class UserError(Exception):
    """A failure to report in one sentence, with the exit code it maps to."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# -- the cluster -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """What the view needs, read in one go."""

    rollout: AgentRollout
    proposal: PromptProposal | None
    proposals: list[PromptProposal]
    stable_prompt: str | None
    stable_note: str | None


class Cluster:
    """The few reads and one patch these commands make, with the errors as :class:`UserError`.

    A thin layer over :class:`promptloop.k8s.sync.SyncKube` (the one synchronous access to the
    API, shared with the improver) that turns its errors into exit codes and messages.

    Parameters
    ----------
    api
        A ``kubernetes.client.ApiClient``.
    namespace
        The namespace every object is read from.
    """

    def __init__(self, api: Any, namespace: str) -> None:
        self.kube = SyncKube(api, namespace)
        self.namespace = namespace

    @classmethod
    def connect(cls, args: argparse.Namespace) -> Cluster:
        """Load the kubeconfig (``--kubeconfig``, ``KUBECONFIG``, in-cluster) and the namespace."""
        try:
            kube = SyncKube.connect(args.kubeconfig, args.context, args.namespace)
        except ClusterError as error:
            raise UserError(EXIT_ERROR, str(error)) from None
        return cls(kube.api, kube.namespace)

    @property
    def server(self) -> str:
        """The API server's URL (for error messages; it carries no credentials)."""
        return self.kube.server

    def _call(self, function: Callable[[], T], *, missing: str | None = None) -> T:
        try:
            return function()
        except KubeRequestError as error:
            if error.status == 404 and missing is not None:
                raise UserError(EXIT_NOT_FOUND, missing) from None
            if error.status == 401:
                message = f"{error.what}: unauthorized (the kubeconfig's credentials were refused)"
            elif error.status == 403:
                message = f"{error.what}: forbidden: {error.detail}"
            elif error.status is None:
                message = f"cannot reach the Kubernetes API server at {self.server}: {error.detail}"
            else:
                message = f"{error.what}: HTTP {error.status}: {error.detail}"
            raise UserError(EXIT_ERROR, message) from None

    def raw(self, kind: str, name: str) -> dict[str, Any]:
        """An AgentRollout or PromptProposal exactly as the API server returned it (fields a
        newer CRD added included); :class:`UserError` (exit 3) when it does not exist."""
        plural = ROLLOUT_PLURAL if kind == "AgentRollout" else PROPOSAL_PLURAL
        return self._call(
            lambda: self.kube.get(plural, name, kind),
            missing=f"{kind} {name} not found in namespace {self.namespace}",
        )

    def rollouts(self, *, all_namespaces: bool) -> list[dict[str, Any]]:
        """Every AgentRollout of the namespace, or of the cluster, as returned."""
        if all_namespaces:
            return self._call(lambda: self.kube.list_all_namespaces(ROLLOUT_PLURAL, "AgentRollout"))
        return self._call(lambda: self.kube.list(ROLLOUT_PLURAL, "AgentRollout"))

    def rollout(self, name: str) -> AgentRollout:
        """The AgentRollout; :class:`UserError` (exit 3) when it does not exist."""
        raw = self.raw("AgentRollout", name)
        return _model(AgentRollout, raw, f"AgentRollout {self.namespace}/{name}")

    def proposal(self, name: str) -> PromptProposal:
        """The PromptProposal; :class:`UserError` (exit 3) when it does not exist."""
        raw = self.raw("PromptProposal", name)
        return _model(PromptProposal, raw, f"PromptProposal {self.namespace}/{name}")

    def proposals(self, rollout: str) -> list[PromptProposal]:
        """The rollout's PromptProposals, oldest first."""
        items = self._call(lambda: self.kube.list(PROPOSAL_PLURAL, "PromptProposal"))
        found: list[PromptProposal] = []
        for item in items:
            if ((item.get("spec") or {}).get("rolloutRef") or {}).get("name") != rollout:
                continue
            try:
                found.append(from_cluster(PromptProposal, item))
            except pydantic.ValidationError:
                continue  # one malformed object must not hide the others
        found.sort(key=queue_key)
        return found

    def stable_prompt(self, rollout: AgentRollout) -> tuple[str | None, str | None]:
        """The stable prompt read the way the operator reads it, or None and why not.

        The stable Deployment is ``status.stableDeployment`` (after a promotion) or
        ``spec.stable.deploymentName``; ``render.challenger.stable_prompt_source`` says where
        its prompt comes from. Secrets are never read.
        """
        from promptloop.render.challenger import RenderError, stable_prompt_source

        name = rollout.status.stable_deployment or rollout.spec.stable.deployment_name
        try:
            deployment = self._call(
                lambda: self.kube.deployment(name),
                missing=f"the stable Deployment {name} does not exist",
            )
            source = stable_prompt_source(stable_deployment=deployment, prompt=rollout.spec.prompt)
            prompt, why = self._call(lambda: self.kube.stable_prompt(source))
        except UserError as error:
            return None, str(error)
        except RenderError as error:
            return None, f"Deployment {name}: {error}"
        if prompt is None:
            return None, f"Deployment {name}: {why}"
        return prompt, None

    def patch_proposal(self, name: str, patch: dict[str, Any]) -> PromptProposal:
        """Merge-patch a PromptProposal as :data:`FIELD_MANAGER`."""
        raw = self._call(
            lambda: self.kube.patch(
                PROPOSAL_PLURAL, name, patch, "PromptProposal", field_manager=FIELD_MANAGER
            ),
            missing=f"PromptProposal {name} not found in namespace {self.namespace}",
        )
        return _model(PromptProposal, raw, f"PromptProposal {self.namespace}/{name}")

    def wait_for_rollout_change(
        self,
        name: str,
        resource_version: str | None,
        seconds: float,
        stop: threading.Event | None = None,
    ) -> None:
        """Block until the rollout changes after ``resource_version``, ``seconds`` pass, or
        ``stop`` is set.

        A watch rather than a poll, so that ``status -w`` redraws as soon as the operator writes
        (an approval is acted on within a second). The watch runs in chunks of at most
        ``_WATCH_CHUNK`` seconds so that a stop request (Ctrl-C) ends the wait promptly even if
        a library swallowed the KeyboardInterrupt. Any watch failure (RBAC without ``watch``,
        an expired resource version) degrades to sleeping out the interval.
        """
        deadline = time.monotonic() + seconds
        while not (stop is not None and stop.is_set()):
            remaining = deadline - time.monotonic()
            chunk = int(min(remaining, _WATCH_CHUNK))
            if resource_version is None or chunk < 1:
                time.sleep(max(min(remaining, 0.5), 0.1))
                if remaining <= 0.5:
                    return
                continue
            try:
                if self.kube.wait_for_change(ROLLOUT_PLURAL, name, resource_version, chunk):
                    return
            except KubeRequestError:
                resource_version = None  # sleep out the rest, in short naps

    def snapshot(self, name: str, proposal_name: str | None) -> Snapshot:
        """Everything the view shows: the rollout, its proposals, the stable prompt."""
        rollout = self.rollout(name)
        proposals = self.proposals(name)
        chosen = _choose(rollout, proposals, proposal_name)
        if proposal_name is not None and chosen is None:
            chosen = self.proposal(proposal_name)  # exists but belongs elsewhere: say so
            refuse(rollout, chosen)
        stable_prompt, note = self.stable_prompt(rollout)
        return Snapshot(rollout, chosen, proposals, stable_prompt, note)


def _model(model: type[ModelT], raw: Any, what: str) -> ModelT:
    try:
        return from_cluster(model, raw)
    except pydantic.ValidationError as error:
        raise UserError(EXIT_ERROR, f"{what} does not have the expected shape: {error}") from None


def _choose(
    rollout: AgentRollout, proposals: list[PromptProposal], explicit: str | None
) -> PromptProposal | None:
    """The proposal to show: the one named, else the canary's, else the newest open one."""
    by_name = {p.metadata.name: p for p in proposals}
    if explicit is not None:
        return by_name.get(explicit)
    canary = rollout.status.canary
    if canary is not None and canary.proposal in by_name:
        return by_name[canary.proposal]
    open_ = [p for p in proposals if p.status.phase not in TERMINAL_PROPOSAL_PHASES]
    return open_[-1] if open_ else None


def refuse(rollout: AgentRollout, proposal: PromptProposal) -> None:
    """Raise exit 4 when a named proposal is not one of the rollout's."""
    if proposal.spec.rollout_ref.name != rollout.metadata.name:
        raise UserError(
            EXIT_NOTHING_TO_DO,
            f"PromptProposal {proposal.metadata.name} belongs to AgentRollout "
            f"{proposal.spec.rollout_ref.name}, not {rollout.metadata.name}",
        )


# -- output helpers ------------------------------------------------------------------------------


def _say(message: str) -> None:
    print(message, flush=True)


def _note(message: str) -> None:
    print(f"promptloop: {message}", file=sys.stderr, flush=True)


def _use_color(choice: str, stream: Any) -> bool:
    if choice == "always":
        return True
    if choice == "never":
        return False
    # https://no-color.org, and terminals that cannot show colour at all.
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def _width() -> int:
    return max(40, shutil.get_terminal_size((100, 40)).columns)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# -- status ----------------------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    cluster = Cluster.connect(args)
    if args.wait:
        return _wait_outcome(cluster, args)
    interactive = sys.stdout.isatty()
    if args.watch and not interactive:
        _note("-w needs a terminal; printing the view once")
    snapshot = cluster.snapshot(args.name, args.proposal)
    if args.output:
        # Machine-readable: the objects as the API server returned them, not the view.
        proposal = snapshot.proposal
        document = {
            "rollout": cluster.raw("AgentRollout", args.name),
            "proposal": cluster.raw("PromptProposal", proposal.metadata.name) if proposal else None,
        }
        sys.stdout.write(dump_document(document, args.output))
        return EXIT_OK
    if not args.watch or not interactive:
        sys.stdout.write(_render(snapshot, args, color=_use_color(args.color, sys.stdout)))
        return EXIT_OK
    return _watch(cluster, args, snapshot)


def _wait_outcome(cluster: Cluster, args: argparse.Namespace) -> int:
    """``status --wait``: block until the proposal is promoted (0), fails (1) or time runs out
    (2); see :mod:`promptloop.outcome`."""
    from promptloop import outcome

    deadline = time.monotonic() + args.timeout
    target: str | None = args.proposal
    announced = False
    while True:
        rollout = cluster.rollout(args.name)
        proposals = cluster.proposals(args.name)
        if target is None:
            target = outcome.choose(rollout, proposals)
        chosen = next((p for p in proposals if p.metadata.name == target), None)
        if target is not None and chosen is None and args.proposal is not None:
            chosen = cluster.proposal(target)  # exists but belongs elsewhere: say so (exit 4)
            refuse(rollout, chosen)
        if target is not None and not announced:
            _note(f"waiting up to {args.timeout:g}s for PromptProposal {target}")
            announced = True
        ended = outcome.outcome(rollout, chosen)
        if ended is not None:
            _say(sanitize(ended.message))
            return ended.code
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            phase = chosen.status.phase.value if chosen and chosen.status.phase else "no phase"
            what = f"PromptProposal {target} is {phase}" if target else "no PromptProposal yet"
            _note(f"timed out after {args.timeout:g}s: {what}")
            return outcome.EXIT_TIMEOUT
        # Proposal phases are written right after the rollout's status: the rollout's watch
        # wakes this loop on every pass that changes anything.
        cluster.wait_for_rollout_change(
            args.name, rollout.metadata.resource_version, min(remaining, 2.0)
        )


def _duration_seconds(text: str) -> float:
    from promptloop.api.common import parse_duration

    try:
        value = float(text)
    except ValueError:
        try:
            value = parse_duration(text).total_seconds()
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _render(
    snapshot: Snapshot,
    args: argparse.Namespace,
    *,
    color: bool,
    width: int | None = None,
    max_diff_lines: int | None = None,
    error: str | None = None,
) -> str:
    return render_status(
        snapshot.rollout,
        snapshot.proposal,
        snapshot.stable_prompt,
        width=width or _width(),
        color=color,
        now=datetime.now(UTC),
        proposals=snapshot.proposals,
        stable_prompt_note=snapshot.stable_note,
        history=args.history,
        max_diff_lines=max_diff_lines,
        error=error,
    )


def _watch(cluster: Cluster, args: argparse.Namespace, snapshot: Snapshot) -> int:
    """Redraw in place (alternate screen) on every change and at least every interval."""
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    console = Console(highlight=False, markup=False, emoji=False)
    color = _use_color(args.color, sys.stdout)
    error: str | None = None

    def frame() -> str:
        width, height = console.size
        header = f"every {args.interval:g}s and on change · Ctrl-C to quit"
        text = _render(snapshot, args, color=color, width=width, error=error)
        if text.count("\n") + 1 > height:  # + 1: the header line
            # The screen crops at the bottom, where the diff is: cut the diff instead, with a
            # line saying so, rather than lose that line to the crop.
            fixed = _render(snapshot, args, color=color, width=width, max_diff_lines=0).count("\n")
            text = _render(
                snapshot,
                args,
                color=color,
                width=width,
                max_diff_lines=max(1, height - fixed - 3),
                error=error,
            )
        return f"{header}\n{text}"

    shown = ""
    # Ctrl-C ends the view: the handler records the request and raises as usual; the loop also
    # checks the record between short waits, so the view ends even if a library swallowed the
    # KeyboardInterrupt (seen once in CI: the process kept watching after SIGINT).
    interrupted = threading.Event()
    previous_handler = signal.getsignal(signal.SIGINT)

    def on_interrupt(signum: int, frame: Any) -> None:
        interrupted.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_interrupt)
    # `kill -USR1 <pid>` prints every thread's Python stack: a hung view explains itself.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        with Live(console=console, screen=True, auto_refresh=False, transient=True) as live:
            while not interrupted.is_set():
                current = frame()
                # The loop turns when the rollout changes or the interval passes (the watch's
                # timeout); an identical frame (same second, same objects) is not redrawn.
                if current != shown:
                    live.update(Text.from_ansi(current), refresh=True)
                    shown = current
                turned = time.monotonic()
                if error is None:
                    resource_version = snapshot.rollout.metadata.resource_version
                    cluster.wait_for_rollout_change(
                        args.name, resource_version, args.interval, stop=interrupted
                    )
                else:
                    # A failing API (or a deleted rollout, whose watch would answer at once
                    # every time) is retried at the interval, never in a tight loop.
                    interrupted.wait(args.interval)
                # An operator writing status many times a second must not turn into flicker.
                time.sleep(max(0.0, _MIN_REDRAW_SECONDS - (time.monotonic() - turned)))
                try:
                    snapshot = cluster.snapshot(args.name, args.proposal)
                    error = None
                except UserError as problem:
                    # Keep the last good view with the problem on top; the API may come back.
                    error = f"refresh failed ({time.strftime('%H:%M:%S')}): {problem}"
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    # Leave the last view on the normal screen, as `watch` users expect to keep it.
    sys.stdout.write(_render(snapshot, args, color=color, error=error))
    return EXIT_OK


# -- diff ------------------------------------------------------------------------------------------


def _diff(args: argparse.Namespace) -> int:
    cluster = Cluster.connect(args)
    snapshot = cluster.snapshot(args.name, args.proposal)
    proposal = snapshot.proposal
    if proposal is None:
        raise UserError(
            EXIT_NOTHING_TO_DO,
            f"AgentRollout {args.name} has no canary and no open proposal; "
            "name one with --proposal",
        )
    if snapshot.stable_prompt is None:
        raise UserError(EXIT_ERROR, f"cannot read the stable prompt: {snapshot.stable_note}")
    stable_version = snapshot.rollout.status.stable_version or (
        snapshot.rollout.spec.stable.version
    )
    text = prompt_diff(
        snapshot.stable_prompt,
        proposal.spec.system_prompt,
        from_label=f"stable {stable_version}",
        to_label=f"{proposal.metadata.name} {proposal.spec.version}",
    )
    if not text:
        _note(f"{proposal.metadata.name}'s prompt is identical to the stable prompt")
        return EXIT_OK
    sys.stdout.write(render_diff(text, color=_use_color(args.color, sys.stdout)))
    return EXIT_OK


# -- approve and reject ----------------------------------------------------------------------------


def _target(cluster: Cluster, args: argparse.Namespace, verb: str) -> tuple[AgentRollout, str]:
    rollout = cluster.rollout(args.name)
    if args.proposal:
        return rollout, str(args.proposal)
    canary = rollout.status.canary
    if canary is None or not canary.proposal:
        phase = rollout.status.phase.value if rollout.status.phase else "not reconciled yet"
        why = f": {rollout.status.message}" if rollout.status.message else ""
        raise UserError(
            EXIT_NOTHING_TO_DO,
            f"AgentRollout {cluster.namespace}/{args.name} has no canary to {verb} "
            f"(phase {phase}{why}); name a proposal with --proposal",
        )
    weight = "not yet seeded" if canary.weight is None else f"at {canary.weight}%"
    _say(
        f"{verb[:-1] if verb.endswith('e') else verb}ing {canary.proposal}, the current canary of "
        f"AgentRollout {cluster.namespace}/{args.name} ({canary.version}, {weight})"
    )
    return rollout, canary.proposal


def _patch_checked(
    cluster: Cluster,
    name: str,
    check: Callable[[PromptProposal], dict[str, Any] | None],
) -> tuple[PromptProposal, PromptProposal | None]:
    """Read, check, and patch with the read's resourceVersion, retrying on conflicts.

    The precondition makes the check and the write one step: a proposal that the operator
    rolled back between our read and our write is not approved by accident.

    Returns
    -------
    tuple
        The proposal as checked, and as patched (None when ``check`` wanted no change).
    """
    for attempt in range(_PATCH_ATTEMPTS):
        proposal = cluster.proposal(name)
        patch = check(proposal)
        if patch is None:
            return proposal, None
        patch.setdefault("metadata", {})["resourceVersion"] = proposal.metadata.resource_version
        try:
            return proposal, cluster.patch_proposal(name, patch)
        except UserError as error:
            if "HTTP 409" not in str(error) or attempt == _PATCH_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _approve(args: argparse.Namespace) -> int:
    cluster = Cluster.connect(args)
    rollout, name = _target(cluster, args, "approve")

    def check(proposal: PromptProposal) -> dict[str, Any] | None:
        refusal = approval_refusal(rollout, proposal)
        if refusal is not None:
            raise UserError(EXIT_NOTHING_TO_DO, refusal)
        if proposal.spec.approved is True:
            return None
        return {"spec": {"approved": True}}

    proposal, patched = _patch_checked(cluster, name, check)
    where = f"PromptProposal {cluster.namespace}/{name}"
    digest = _digest(proposal.spec.system_prompt)
    if patched is None:
        recorded = proposal.status.approval
        seen = (
            f"; the operator recorded it at {recorded.approved_at} (by {recorded.approved_by})"
            if recorded and recorded.approved_at
            else "; the operator has not recorded it yet"
        )
        _say(f"{where} is already approved (spec.approved is true); nothing changed{seen}")
        return EXIT_OK
    _say(
        f"approved: set spec.approved=true on {where} (version {proposal.spec.version}, "
        f"prompt sha256 {digest[:16]}…) as {FIELD_MANAGER}"
    )
    _say(describe_approval(rollout, proposal))
    if args.wait > 0:
        return _wait_approval(cluster, args, rollout, name)
    return EXIT_OK


def _wait_approval(
    cluster: Cluster, args: argparse.Namespace, before: AgentRollout, name: str
) -> int:
    ceiling = before.spec.canary.ceiling
    holding = before.status.phase is not None and before.status.phase.value == "AwaitingApproval"

    def acted() -> str | None:
        proposal = cluster.proposal(name)
        if proposal.status.approval is None:
            return None
        if not holding:
            return f"the operator recorded the approval ({proposal.status.phase})"
        rollout = cluster.rollout(args.name)
        canary = rollout.status.canary
        if canary is not None and canary.proposal == name and (canary.weight or 0) >= ceiling:
            return f"the operator set {proposal.spec.version} to {canary.weight}%"
        if canary is None or canary.proposal != name:
            return f"the canary moved on: {rollout.status.message}"
        return None

    return _wait(args.wait, acted)


def _reject(args: argparse.Namespace) -> int:
    reason = args.reason
    if reason is not None and (not reason.strip() or len(reason) > MAX_REASON_CHARS):
        raise UserError(EXIT_USAGE, f"--reason must be 1 to {MAX_REASON_CHARS} characters")
    cluster = Cluster.connect(args)
    rollout, name = _target(cluster, args, "reject")
    withdrew = False

    def check(proposal: PromptProposal) -> dict[str, Any] | None:
        nonlocal withdrew
        refusal = rejection_refusal(rollout, proposal)
        if refusal is not None:
            raise UserError(EXIT_NOTHING_TO_DO, refusal)
        annotations = proposal.metadata.annotations
        marked = annotations.get(REJECT_ANNOTATION) == "true"
        same_reason = reason is None or annotations.get(REJECT_REASON_ANNOTATION) == reason
        if marked and same_reason and proposal.spec.approved is not True:
            return None
        patch: dict[str, Any] = {"metadata": {"annotations": {REJECT_ANNOTATION: "true"}}}
        if reason is not None:
            patch["metadata"]["annotations"][REJECT_REASON_ANNOTATION] = reason
        withdrew = proposal.spec.approved is True
        if withdrew:
            patch["spec"] = {"approved": False}
        return patch

    proposal, patched = _patch_checked(cluster, name, check)
    where = f"PromptProposal {cluster.namespace}/{name}"
    if patched is None:
        _say(f"{where} is already marked rejected; nothing changed")
        return EXIT_OK
    written = [f'{REJECT_ANNOTATION}="true"']
    if reason is not None:
        written.append(f"{REJECT_REASON_ANNOTATION}={sanitize(reason)!r}")
    if withdrew:
        written.append("spec.approved=false (the approval is withdrawn)")
    _say(f"rejected: set {', '.join(written)} on {where} (version {proposal.spec.version})")
    _say(describe_rejection(rollout, proposal))
    if args.wait > 0:

        def acted() -> str | None:
            current = cluster.proposal(name).status
            if current.phase is not None and current.phase.value == "Rejected":
                return f"the operator rejected it: {current.message}"
            return None

        return _wait(args.wait, acted)
    return EXIT_OK


def _wait(seconds: float, acted: Callable[[], str | None]) -> int:
    deadline = time.monotonic() + seconds
    while True:
        outcome = acted()
        if outcome is not None:
            _say(sanitize(outcome))
            return EXIT_OK
        if time.monotonic() >= deadline:
            _note(f"the operator did not react within {seconds:g}s (is it running?)")
            return EXIT_ERROR
        time.sleep(0.2)


# -- registration ----------------------------------------------------------------------------------


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn :class:`UserError` into a one-line message and its exit code."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except UserError as error:
            _note(f"error: {sanitize(str(error))}")
            return error.code
        except KeyboardInterrupt:
            return 130

    run.__doc__ = handler.__doc__
    return run


def _common() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("cluster")
    group.add_argument("-n", "--namespace", help="the rollout's namespace (default: the context's)")
    group.add_argument("--kubeconfig", default=None, help="kubeconfig (default: $KUBECONFIG)")
    group.add_argument("--context", default=None, help="kubeconfig context")
    return parent


def register(subparsers: Any) -> None:
    """Add the ``status``, ``diff``, ``approve`` and ``reject`` subcommands."""
    common = _common()
    color = argparse.ArgumentParser(add_help=False)
    color.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour output (auto: on a terminal, unless NO_COLOR is set)",
    )

    status = subparsers.add_parser(
        "status",
        parents=[common, color],
        help="the live view of an AgentRollout: weights, failure rates, verdict, prompt diff",
        description=(
            "Show an AgentRollout's weights, failure rates with 95% intervals, the current "
            "verdict and the challenger's prompt diff. With -w, redraw in place until Ctrl-C."
        ),
    )
    status.add_argument("name", metavar="NAME", help="the AgentRollout")
    mode = status.add_mutually_exclusive_group()
    mode.add_argument("-w", "--watch", action="store_true", help="redraw until Ctrl-C")
    mode.add_argument(
        "--wait",
        action="store_true",
        help=(
            "for CI: wait for the canary's proposal (or --proposal) to finish; exit 0 when "
            "promoted, 1 when rolled back, rejected or invalid, 2 on timeout"
        ),
    )
    status.add_argument(
        "--timeout",
        type=_duration_seconds,
        default=1800.0,
        metavar="D",
        help="with --wait: give up after D (30m, 90s, 1h30m or seconds; default 30m)",
    )
    status.add_argument(
        "--interval",
        type=_positive,
        default=2.0,
        metavar="S",
        help="with -w: redraw at least this often, in seconds (changes redraw at once; default 2)",
    )
    status.add_argument("--proposal", metavar="PP", help="show this proposal instead")
    status.add_argument(
        "-o",
        "--output",
        choices=OUTPUT_FORMATS,
        help="print {rollout, proposal} as the API server returned them instead of the view",
    )
    status.add_argument(
        "--history", type=int, default=5, metavar="N", help="history entries to show (default 5)"
    )
    status.set_defaults(func=_guarded(_status))

    diff = subparsers.add_parser(
        "diff",
        parents=[common, color],
        help="the unified diff from the stable prompt to the challenger's",
        description=(
            "Print the unified diff from the stable prompt (read from the stable Deployment, as "
            "the operator reads it) to the challenger's spec.systemPrompt."
        ),
    )
    diff.add_argument("name", metavar="NAME", help="the AgentRollout")
    diff.add_argument(
        "--proposal", metavar="PP", help="diff this proposal (default: the current canary's)"
    )
    diff.set_defaults(func=_guarded(_diff))

    approve = subparsers.add_parser(
        "approve",
        parents=[common],
        help="approve the rollout's canary (spec.approved: true on its PromptProposal)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    approve.add_argument("name", metavar="NAME", help="the AgentRollout")
    approve.add_argument(
        "--proposal", metavar="PP", help="approve this proposal (default: the current canary's)"
    )
    approve.add_argument(
        "--wait",
        type=_non_negative,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for the operator to act on it (default: do not wait)",
    )
    approve.set_defaults(func=_guarded(_approve))

    reject = subparsers.add_parser(
        "reject",
        parents=[common],
        help="reject the rollout's canary: the operator rolls it back at once",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    reject.add_argument("name", metavar="NAME", help="the AgentRollout")
    reject.add_argument(
        "--proposal", metavar="PP", help="reject this proposal (default: the current canary's)"
    )
    reject.add_argument(
        "--reason", metavar="TEXT", help=f"why (annotation {REJECT_REASON_ANNOTATION})"
    )
    reject.add_argument(
        "--wait",
        type=_non_negative,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for the operator to mark it Rejected (default: do not wait)",
    )
    reject.set_defaults(func=_guarded(_reject))
