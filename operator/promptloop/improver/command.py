"""``promptloop improve``: read failures, ask a model for a revised prompt, emit a PromptProposal.

It proposes and never deploys: the result is a ``PromptProposal`` (YAML on stdout or in a file,
created in the cluster with ``--apply``) that the operator canaries and a person approves. It never
sets ``spec.approved``.

Usage::

    promptloop improve --rollout classifier -n demo                   # failures from AgentField
    promptloop improve --rollout classifier --file failures.jsonl \\
        --stable-version 2.0.0 --stable-prompt @prompt.txt             # no cluster access
    promptloop improve --rollout classifier --evaluate --apply        # gate, then create it

Exit codes:

====  =========================================================================================
0     a proposal was written (and created, with ``--apply``)
1     the failure source, the cluster or the output could not be read or written
2     usage error
3     hold: fewer distinct failures of the stable version than ``--min-failures``, or (with
      cluster access) another proposal of the rollout is still open
4     the model failed: errors or timeouts after retries, malformed output after the fallbacks,
      or an empty, unchanged or oversized prompt
5     budget: the estimated cost exceeds ``--max-cost-usd`` (refused before any request), or
      the budget ran out before a retry
6     ``--evaluate`` refused the candidate (too many regressions, or nothing fixed)
====  =========================================================================================

Nothing is written unless the exit code is 0. ``OPENAI_API_KEY`` is read from the environment
only (a flag would end up in shell history and process lists) and never printed.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic
import yaml

from promptloop.api.common import SEMVER_PATTERN, LocalObjectReference, ObjectMeta
from promptloop.api.promptproposal import (
    Evidence,
    FailureExample,
    PromptProposal,
    PromptProposalSpec,
    ProposalSource,
)
from promptloop.constants import LABEL_ROLLOUT
from promptloop.improver import evaluate as evaluation
from promptloop.improver.failures import (
    DEFAULT_FAILURES_KEY,
    Case,
    FailureLimits,
    FailureSet,
    FailureSourceError,
    RawRecords,
    read_agentfield,
    read_jsonl,
    select_failures,
)
from promptloop.improver.llm import (
    DEFAULT_MODEL,
    NO_KEY_PLACEHOLDER,
    Budget,
    BudgetExceeded,
    ModelCaller,
    ModelError,
    ModelSettings,
    PriceTable,
    make_client,
    propose,
    render_request,
)
from promptloop.rollout.phases import PROPOSAL_CLOSED

if TYPE_CHECKING:
    from promptloop.k8s.sync import SyncKube

__all__ = [
    "CLOSED_PHASES",
    "EXIT_BUDGET",
    "EXIT_ERROR",
    "EXIT_EVALUATE",
    "EXIT_HOLD",
    "EXIT_MODEL",
    "EXIT_OK",
    "EXIT_USAGE",
    "IMPROVER_NAME",
    "MAX_EVIDENCE_EXAMPLES",
    "build_proposal",
    "dump_yaml",
    "next_free_version",
    "next_minor",
    "proposal_name",
    "register",
    "run",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_HOLD = 3
EXIT_MODEL = 4
EXIT_BUDGET = 5
EXIT_EVALUATE = 6

IMPROVER_NAME = "promptloop-improve"
# Phases after which a proposal no longer competes: a new one may be filed.
CLOSED_PHASES = frozenset(phase.value for phase in PROPOSAL_CLOSED)
MAX_EVIDENCE_EXAMPLES = 5
_EXAMPLE_INPUT_CHARS = 4096
_SEMVER = re.compile(SEMVER_PATTERN)


# ---------------------------------------------------------------------------------------------
# Versions, names and the proposal object (pure)


def next_minor(version: str) -> str:
    """The next minor version: ``2.0.0`` → ``2.1.0``, ``2.1.3-rc.1`` → ``2.2.0``.

    Raises
    ------
    ValueError
        When ``version`` is not semver.
    """
    match = _SEMVER.match(version)
    if match is None:
        raise ValueError(f"{version!r} is not a semantic version such as 2.0.0")
    major, minor = int(match.group(1)), int(match.group(2))
    return f"{major}.{minor + 1}.0"


def next_free_version(stable: str, taken: Sequence[str] | set[str] = ()) -> str:
    """The first next-minor version after ``stable`` that no proposal has taken yet."""
    candidate = next_minor(stable)
    while candidate in taken:
        candidate = next_minor(candidate)
    return candidate


def proposal_name(rollout: str, version: str) -> str:
    """``<rollout>-<version with dashes>``, a valid object name (``classifier-2-1-0``)."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"{rollout}-{version}".lower()).strip("-")
    return name[:253].rstrip("-")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def build_proposal(
    *,
    rollout: str,
    namespace: str | None,
    version: str,
    system_prompt: str,
    rationale: str,
    failure_set: FailureSet,
    model: str,
    budget: Budget,
    evaluated: evaluation.Evaluation | None = None,
) -> PromptProposal:
    """The PromptProposal object, validated by the API model; ``approved`` is never set.

    ``spec.source`` counts the tokens and cost of every request of the run, the evaluation's
    replays included; ``spec.evidence.examples`` holds the newest five failures sent.

    Raises
    ------
    pydantic.ValidationError
        When a field breaks the API's limits.
    """
    examples = [
        FailureExample(
            input=_clip(case.input, _EXAMPLE_INPUT_CHARS),
            predicted=_clip(case.predicted, 1024),
            expected=_clip(case.expected, 1024),
        )
        for case in failure_set.failures[-MAX_EVIDENCE_EXAMPLES:]
    ]
    evidence = Evidence(
        failure_count=failure_set.failure_count,
        examples=examples,
        fixed=evaluated.fixed if evaluated else None,
        regressed=evaluated.regressed if evaluated else None,
        evaluated=evaluated.evaluated if evaluated else None,
    )
    spec = PromptProposalSpec(
        rollout_ref=LocalObjectReference(name=rollout),
        version=version,
        system_prompt=system_prompt,
        rationale=rationale,
        evidence=evidence,
        source=ProposalSource(
            improver=IMPROVER_NAME,
            model=model,
            prompt_tokens=budget.prompt_tokens,
            completion_tokens=budget.completion_tokens,
            cost_usd=budget.cost_text(),
        ),
    )
    metadata = ObjectMeta(
        name=proposal_name(rollout, version),
        namespace=namespace,
        labels={LABEL_ROLLOUT: rollout},
    )
    proposal = PromptProposal(metadata=metadata, spec=spec)
    # Validate the wire form too: that is what the API server will see.
    wire = proposal.to_wire()
    wire.pop("status", None)
    return PromptProposal.model_validate(wire)


class _Dumper(yaml.SafeDumper):
    """Safe YAML with multi-line strings (the prompt) as readable literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(proposal: PromptProposal) -> str:
    """The proposal as YAML for ``kubectl apply -f`` (no ``status``, no ``approved``)."""
    wire = proposal.to_wire()
    wire.pop("status", None)
    wire["metadata"] = {k: v for k, v in wire["metadata"].items() if v not in ({}, None)}
    wire["spec"].pop("approved", None)
    return yaml.dump(wire, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


# ---------------------------------------------------------------------------------------------
# The command


def _say(message: str) -> None:
    print(f"promptloop improve: {message}", file=sys.stderr, flush=True)


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _threshold(text: str) -> evaluation.Threshold:
    try:
        return evaluation.Threshold.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def register(subparsers: Any) -> None:
    """Add the ``improve`` subcommand."""
    parser = subparsers.add_parser(
        "improve",
        help="propose a revised prompt from recorded failures (writes a PromptProposal)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = parser.add_argument_group("target")
    target.add_argument("--rollout", required=True, help="the AgentRollout the proposal is for")
    target.add_argument("-n", "--namespace", help="its namespace (default: the context's)")
    target.add_argument("--kubeconfig", default=None, help="kubeconfig (default: $KUBECONFIG)")
    target.add_argument("--context", default=None, help="kubeconfig context")
    target.add_argument(
        "--stable-prompt",
        metavar="TEXT|@FILE",
        help="the stable prompt (default: read from the rollout's stable Deployment)",
    )
    target.add_argument(
        "--stable-version", help="the stable version (default: read from the rollout)"
    )
    target.add_argument(
        "--proposal-version",
        help="the proposal's version (default: the next free minor after the stable one)",
    )

    source = parser.add_argument_group("failures")
    source.add_argument(
        "--source",
        choices=("agentfield", "file", "stdin"),
        default=None,
        help="where failures come from (default: file when --file is given, else agentfield)",
    )
    source.add_argument("--file", metavar="PATH", help="a JSONL file of failures; - for stdin")
    source.add_argument(
        "--agentfield-url",
        default=None,
        help="AgentField base URL (default: $AGENTFIELD_URL, else the rollout's router URL)",
    )
    source.add_argument("--failures-key", default=DEFAULT_FAILURES_KEY, help="memory key")
    source.add_argument("--min-failures", type=int, default=20, help="hold below this (20)")
    source.add_argument("--max-read", type=_positive_int, default=500, help="records read (500)")
    source.add_argument("--max-send", type=_positive_int, default=100, help="failures sent (100)")
    source.add_argument(
        "--max-text-chars", type=_positive_int, default=2000, help="cut each text here (2000)"
    )
    source.add_argument(
        "--accept-unversioned",
        action="store_true",
        help="keep records that carry no version (default: drop them)",
    )

    model = parser.add_argument_group("model (OPENAI_API_KEY is read from the environment only)")
    model.add_argument("--model", default=None, help=f"default: $OPENAI_MODEL or {DEFAULT_MODEL}")
    model.add_argument("--base-url", default=None, help="default: $OPENAI_BASE_URL")
    model.add_argument(
        "--max-cost-usd", type=_decimal, default=Decimal("0.50"), help="budget per run (0.50)"
    )
    model.add_argument(
        "--price-table",
        default=None,
        metavar="FILE",
        help="JSON/YAML {model: {input, output}} in USD per 1M tokens ($PROMPTLOOP_PRICE_TABLE)",
    )
    model.add_argument("--timeout", type=float, default=60.0, help="seconds per request (60)")
    model.add_argument("--retries", type=int, default=2, help="retries per request (2)")
    model.add_argument(
        "--retry-backoff", type=float, default=1.0, help="first retry wait, doubling (1.0 s)"
    )
    model.add_argument(
        "--max-completion-tokens",
        type=_positive_int,
        default=ModelSettings.max_completion_tokens,
        help=f"cap on the answer ({ModelSettings.max_completion_tokens})",
    )
    model.add_argument("--temperature", type=float, default=None, help="sent when given")

    gate = parser.add_argument_group("evaluation")
    gate.add_argument(
        "--evaluate",
        action="store_true",
        help="replay failures and passing cases with both prompts before proposing",
    )
    gate.add_argument(
        "--max-regressions",
        type=_threshold,
        default=evaluation.Threshold.parse(evaluation.DEFAULT_MAX_REGRESSIONS),
        metavar="N|FRACTION",
        help="refuse beyond this many regressed cases: a count or a fraction like 0.02 (0)",
    )
    gate.add_argument(
        "--min-fixed", type=int, default=evaluation.DEFAULT_MIN_FIXED, help="refuse below (1)"
    )
    gate.add_argument(
        "--eval-passing",
        type=int,
        default=evaluation.DEFAULT_PASSING_SAMPLE,
        help="passing cases sampled (100)",
    )
    gate.add_argument("--eval-seed", type=int, default=0, help="seed of that sample (0)")
    gate.add_argument("--eval-concurrency", type=_positive_int, default=4, help="in flight (4)")

    out = parser.add_argument_group("output")
    out.add_argument("-o", "--output", default="-", help="- (stdout, default) or a file")
    out.add_argument("--apply", action="store_true", help="create the PromptProposal in-cluster")
    out.add_argument(
        "--allow-concurrent",
        action="store_true",
        help="propose even while another proposal of the rollout is still open",
    )
    parser.set_defaults(func=run)


@dataclass(frozen=True)
class _Stable:
    version: str
    prompt: str
    agentfield_url: str | None = None


class _Exit(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _read_prompt_arg(value: str) -> str:
    if not value.startswith("@"):
        return value
    path = Path(value[1:])
    try:
        # A prompt file normally ends with a newline that is not part of the prompt.
        return path.read_text(encoding="utf-8").removesuffix("\n")
    except OSError as error:
        raise _Exit(EXIT_ERROR, f"cannot read the stable prompt from {path}: {error}") from error


def _cluster(args: argparse.Namespace) -> SyncKube:
    # Imported here so that the improver runs with no cluster libraries configured at all.
    from promptloop.k8s.sync import SyncKube

    return SyncKube.connect(args.kubeconfig, args.context, args.namespace)


def _resolve_stable(args: argparse.Namespace, cluster: SyncKube | None) -> _Stable:
    if args.stable_version is not None and not _SEMVER.match(args.stable_version):
        raise _Exit(EXIT_USAGE, f"--stable-version {args.stable_version!r} is not semver")
    prompt = _read_prompt_arg(args.stable_prompt) if args.stable_prompt is not None else None
    if prompt is not None and args.stable_version is not None:
        return _Stable(version=args.stable_version, prompt=prompt)
    assert cluster is not None
    from promptloop.k8s import proposals

    try:
        info = proposals.read_stable(cluster, args.rollout)
    except proposals.ClusterError as error:
        raise _Exit(EXIT_ERROR, f"{error} (or pass --stable-version and --stable-prompt)") from None
    return _Stable(
        version=args.stable_version or info.version,
        prompt=prompt if prompt is not None else info.prompt,
        agentfield_url=info.agentfield_url,
    )


def _read_failures(args: argparse.Namespace, stable: _Stable, limits: FailureLimits) -> RawRecords:
    source = args.source or ("file" if args.file else "agentfield")
    if source == "stdin" or (source == "file" and args.file == "-"):
        return read_jsonl(sys.stdin, description="stdin", limits=limits)
    if source == "file":
        if not args.file:
            raise _Exit(EXIT_USAGE, "--source file needs --file PATH")
        try:
            with open(args.file, encoding="utf-8") as stream:
                return read_jsonl(stream, description=args.file, limits=limits)
        except OSError as error:
            raise _Exit(EXIT_ERROR, f"cannot read failures from {args.file}: {error}") from None
    url = args.agentfield_url or os.environ.get("AGENTFIELD_URL") or stable.agentfield_url
    if not url:
        raise _Exit(
            EXIT_USAGE,
            "no AgentField URL: pass --agentfield-url, set AGENTFIELD_URL, or read the rollout",
        )
    try:
        return read_agentfield(
            url, key=args.failures_key, limits=limits, timeout_s=min(args.timeout, 30.0)
        )
    except FailureSourceError as error:
        raise _Exit(EXIT_ERROR, f"cannot read failures: {error}") from None


def _write_output(target: str, text: str) -> None:
    if target == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    path = Path(target)
    # Written to a temporary file and renamed, so a reader never sees half a proposal.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cases_text(cases: Sequence[Case]) -> list[dict[str, str]]:
    return [case.as_failure() for case in cases]


def run(args: argparse.Namespace, *, sleep: Callable[[float], None] | None = None) -> int:
    """Run ``promptloop improve``; returns the exit code (see the module docstring)."""
    try:
        return _run(args, sleep=sleep)
    except _Exit as stop:
        _say(str(stop))
        return stop.code


def _existing_versions(args: argparse.Namespace, cluster: SyncKube | None) -> set[str]:
    """Versions the rollout's proposals already use; holds while one of them is still open."""
    if cluster is None:
        return set()
    from promptloop.k8s import proposals

    try:
        existing = proposals.list_proposals(cluster, args.rollout)
    except proposals.ClusterError as error:
        raise _Exit(EXIT_ERROR, str(error)) from None
    still_open = [p for p in existing if p.phase not in CLOSED_PHASES]
    if still_open and not args.allow_concurrent:
        names = ", ".join(
            f"{p.name} ({p.version}, {p.phase or 'no phase yet'})" for p in still_open
        )
        # One candidate at a time: a scheduled improver must not pile up proposals while the
        # operator is still canarying (or a person is still reviewing) the last one.
        raise _Exit(
            EXIT_HOLD,
            f"hold: rollout {args.rollout} already has an open proposal: {names}; nothing "
            "written (--allow-concurrent proposes anyway)",
        )
    return {p.version for p in existing}


def _run(args: argparse.Namespace, *, sleep: Callable[[float], None] | None) -> int:
    needs_cluster = args.apply or args.stable_prompt is None or args.stable_version is None
    cluster = None
    if needs_cluster:
        try:
            cluster = _cluster(args)
        except Exception as error:  # ClusterError, or the client's own configuration errors
            raise _Exit(
                EXIT_ERROR,
                f"{error}; without cluster access pass --stable-version and --stable-prompt "
                "(and no --apply)",
            ) from None
    namespace = cluster.namespace if cluster else args.namespace
    stable = _resolve_stable(args, cluster)
    _say(f"rollout {args.rollout}: stable version {stable.version}")
    taken = _existing_versions(args, cluster)

    limits = FailureLimits(
        max_read=args.max_read,
        max_send=args.max_send,
        max_text_chars=args.max_text_chars,
        accept_unversioned=args.accept_unversioned,
    )
    raw = _read_failures(args, stable, limits)
    failure_set = select_failures(raw, stable_version=stable.version, limits=limits)
    _say(f"{raw.description}: {failure_set.summary()}")
    unversioned = failure_set.dropped.get("unversioned", 0)
    if unversioned:
        _say(f"{unversioned} records carry no version; --accept-unversioned keeps them")
    minimum = max(args.min_failures, 1)
    if failure_set.failure_count < minimum:
        _say(
            f"hold: {failure_set.failure_count} distinct failures of version {stable.version}, "
            f"fewer than the minimum of {minimum}; not enough to learn from, nothing written"
        )
        return EXIT_HOLD

    model_name = args.model or os.environ.get("OPENAI_MODEL") or DEFAULT_MODEL
    settings = ModelSettings(
        model=model_name,
        base_url=args.base_url or os.environ.get("OPENAI_BASE_URL") or None,
        api_key=os.environ.get("OPENAI_API_KEY") or NO_KEY_PLACEHOLDER,
        timeout_s=args.timeout,
        retries=max(args.retries, 0),
        backoff_s=max(args.retry_backoff, 0.0),
        max_completion_tokens=args.max_completion_tokens,
        temperature=args.temperature,
    )
    try:
        prices = PriceTable.load(args.price_table)
    except (OSError, ValueError) as error:
        raise _Exit(EXIT_USAGE, f"price table: {error}") from None
    _price, known = prices.lookup(model_name)
    if not known:
        _say(
            f"model {model_name!r} is not in the price table; priced conservatively "
            "(pass --price-table for its real price)"
        )
    budget = Budget(limit_usd=args.max_cost_usd)
    caller = ModelCaller(
        make_client(settings),
        settings,
        prices,
        budget,
        sleep=sleep if sleep is not None else time.sleep,
        log=_say,
    )

    failures = _cases_text(failure_set.failures)
    cases: list[evaluation.EvalCase] = []
    estimate = caller.worst_case(
        render_request(stable.prompt, failures, failure_count=failure_set.failure_count).messages,
        settings.max_completion_tokens,
    )
    if args.evaluate:
        cases = evaluation.select_cases(
            failure_set.failures,
            failure_set.passing,
            sample=max(args.eval_passing, 0),
            seed=args.eval_seed,
        )
        # The candidate is not known yet: assume the current prompt's size here, and check
        # again with the real candidate before replaying.
        estimate += evaluation.estimate_cost(caller, [stable.prompt, stable.prompt], cases)
    if estimate > args.max_cost_usd:
        _say(
            f"refused: the run may cost up to ${estimate:.6f} with {model_name} "
            f"(characters/4 token estimate, at most {settings.max_completion_tokens} completion "
            f"tokens), more than --max-cost-usd {args.max_cost_usd}; no request sent, "
            "nothing written"
        )
        return EXIT_BUDGET

    try:
        outcome = propose(caller, stable.prompt, failures, failure_count=failure_set.failure_count)
    except BudgetExceeded as error:
        _say(f"refused: {error}; nothing written")
        return EXIT_BUDGET
    except ModelError as error:
        _say(f"model error: {error}; nothing written")
        return EXIT_MODEL
    candidate = outcome.proposal.revised_system_prompt
    _say(f"proposal ({outcome.mode}): {outcome.proposal.rationale}")

    evaluated: evaluation.Evaluation | None = None
    if args.evaluate:
        if not failure_set.passing:
            _say("no passing cases in the source: regressions are measured on the failures only")
        replay_cost = evaluation.estimate_cost(caller, [stable.prompt, candidate], cases)
        if not budget.affordable(replay_cost):
            _say(
                f"refused: replaying {len(cases)} cases may cost up to ${replay_cost:.6f}, more "
                f"than the ${budget.remaining():.6f} left of --max-cost-usd; nothing written"
            )
            return EXIT_BUDGET
        try:
            evaluated = evaluation.evaluate(
                caller,
                current_prompt=stable.prompt,
                candidate_prompt=candidate,
                cases=cases,
                concurrency=args.eval_concurrency,
            )
        except BudgetExceeded as error:
            _say(f"refused: {error}; nothing written")
            return EXIT_BUDGET
        except ModelError as error:
            _say(f"model error while evaluating: {error}; nothing written")
            return EXIT_MODEL
        _say(evaluated.summary())
        refusal = evaluated.refusal(args.max_regressions, args.min_fixed)
        if refusal:
            _say(f"evaluation refused the candidate: {refusal}; nothing written")
            return EXIT_EVALUATE

    version = args.proposal_version or next_free_version(stable.version, taken)
    if not _SEMVER.match(version):
        raise _Exit(EXIT_USAGE, f"--proposal-version {version!r} is not semver")
    try:
        proposal = build_proposal(
            rollout=args.rollout,
            namespace=namespace,
            version=version,
            system_prompt=candidate,
            rationale=outcome.proposal.rationale,
            failure_set=failure_set,
            model=model_name,
            budget=budget,
            evaluated=evaluated,
        )
    except pydantic.ValidationError as error:
        _say(f"the proposal does not validate as a PromptProposal: {error}; nothing written")
        return EXIT_MODEL
    text = dump_yaml(proposal)

    if args.apply and cluster is not None:
        from promptloop.k8s import proposals

        body: Mapping[str, Any] = yaml.safe_load(text)
        try:
            proposals.create_proposal(cluster, body)
        except proposals.ClusterError as error:
            raise _Exit(EXIT_ERROR, f"{error}; nothing written") from None
        _say(f"created PromptProposal {cluster.namespace}/{proposal.metadata.name}")
    try:
        _write_output(args.output, text)
    except OSError as error:
        raise _Exit(EXIT_ERROR, f"cannot write {args.output}: {error}") from None
    _say(
        f"proposed {args.rollout} {version} ({budget.requests} requests, "
        f"{budget.prompt_tokens}+{budget.completion_tokens} tokens, ${budget.cost_text()})"
    )
    return EXIT_OK
