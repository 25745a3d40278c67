"""The pure core: :func:`promptloop.rollout.advance.advance`, one pass from observations to a step.

The table (one row per transition) reads as documentation of what a pass does in each situation.
The property test at the end drives the real function through random lives of a rollout
(evidence, approvals early, late and withdrawn, rejections, new and deleted proposals, and crashes
modelled as a pass whose effects stop part-way, replayed from the last written status) and checks
the invariants users rely on after every pass. Nothing here copies a guard from the code under
test: the world below only carries effects out, as the reconciler does.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptloop.api import (
    AgentRollout,
    AgentRolloutStatus,
    CanaryStatus,
    ConditionStatus,
    PromptProposal,
    ProposalPhase,
    RetiringDeployment,
    RolloutPhase,
    VersionWeight,
)
from promptloop.constants import REJECT_ANNOTATION
from promptloop.rollout.advance import (
    RouterResult,
    advance,
    after_router,
    orphaned,
    weights_drifted,
)
from promptloop.rollout.effects import (
    ApplyManifests,
    AssertWeights,
    CountDecision,
    PostEvent,
    ScaleToZero,
    Step,
    WriteProposalStatus,
    WriteRolloutStatus,
)
from promptloop.rollout.observations import Counters, Observations, Rendering, RouterVersion
from promptloop.rollout.phases import (
    PROPOSAL_TERMINAL,
    PROPOSAL_TRANSITIONS,
    ROLLOUT_TRANSITIONS,
    iso,
    iso_precise,
)
from promptloop.routers.base import Readiness

P = ProposalPhase
R = RolloutPhase
NS = "agents"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
STABLE = "2.0.0"


def make_rollout(status: dict[str, Any] | None = None, **canary: Any) -> AgentRollout:
    policy = {"initialWeight": 10, "maxStep": 20, "ceiling": 50, "interval": "10s"}
    return AgentRollout.model_validate(
        {
            "apiVersion": "promptloop.dev/v1alpha1",
            "kind": "AgentRollout",
            "metadata": {"name": "classifier", "namespace": NS, "generation": 1, "uid": "r-1"},
            "spec": {
                "agent": {"nodeId": "classifier"},
                "stable": {"version": STABLE, "deploymentName": "classifier"},
                "router": {
                    "agentfield": {
                        "url": "http://127.0.0.1:1",
                        "tokenSecretRef": {"name": "af", "key": "token"},
                    }
                },
                "metrics": {"http": {"url": "http://127.0.0.1:1/{{ version }}"}},
                "canary": {**policy, **canary},
            },
            "status": status or {},
        }
    )


def make_proposal(
    name: str = "p1",
    version: str = "2.1.0",
    *,
    status: dict[str, Any] | None = None,
    approved: bool | None = None,
    annotations: dict[str, str] | None = None,
    created: str = "2026-03-01T11:00:00Z",
) -> PromptProposal:
    spec: dict[str, Any] = {
        "rolloutRef": {"name": "classifier"},
        "version": version,
        "systemPrompt": f"Classify the ticket ({version}).",
    }
    if approved is not None:
        spec["approved"] = approved
    return PromptProposal.model_validate(
        {
            "metadata": {
                "name": name,
                "namespace": NS,
                "uid": f"u-{name}",
                "generation": 1,
                "creationTimestamp": created,
                "annotations": annotations or {},
            },
            "spec": spec,
            "status": status or {},
        }
    )


def rendering(version: str) -> Rendering:
    deployment = f"classifier-v{version.replace('.', '-')}"
    return Rendering(
        deployment=deployment,
        config_map=f"{deployment}-cm",
        digest="d" * 64,
        manifests=(
            {"kind": "ConfigMap", "metadata": {"name": f"{deployment}-cm"}},
            {"kind": "Deployment", "metadata": {"name": deployment, "labels": {"v": version}}},
        ),
    )


READY: dict[str, Any] = {
    "metadata": {"name": "c", "generation": 1},
    "spec": {"replicas": 1},
    "status": {"observedGeneration": 1, "availableReplicas": 1},
}
STABLE_DEPLOYMENT: dict[str, Any] = {"metadata": {"name": "classifier"}}


def observe(
    rollout: AgentRollout,
    *proposals: PromptProposal,
    now: datetime = NOW,
    registered: tuple[str, ...] = (STABLE,),
    **overrides: Any,
) -> Observations:
    values: dict[str, Any] = {
        "rollout": rollout,
        "now": now,
        "proposals": proposals,
        "stable_deployment": STABLE_DEPLOYMENT,
        "stable_prompt": "Classify the ticket.",
        "versions": tuple(RouterVersion(v, 100, now) for v in registered),
        "renderings": {p.metadata.name: rendering(p.spec.version) for p in proposals},
        "challenger_readiness": router_readiness(rollout, registered),
    }
    return Observations(**{**values, **overrides})


def settled(obs: Observations) -> Observations:
    """The observations with each proposal's conditions as an identical earlier pass wrote them
    (conditions are derived every pass; a row about a pass that leaves a proposal alone starts
    from proposals whose conditions are already written)."""
    step = advance(obs)
    proposals = tuple(
        p.model_copy(
            update={
                "status": p.status.model_copy(
                    update={"conditions": step.proposals[p.metadata.name].conditions}
                )
            }
        )
        if p.metadata.name in step.proposals
        else p
        for p in obs.proposals
    )
    return replace(obs, proposals=proposals)


def router_readiness(rollout: AgentRollout, registered: tuple[str, ...]) -> Readiness | None:
    """What the router says about the canary's version in these tests' worlds: ready once
    registered (the real probe of its own address is tested in test_router_protocol.py)."""
    canary = rollout.status.canary
    if canary is None or not canary.version:
        return None
    if canary.version in registered:
        return Readiness(True, "Ready", f"{canary.version} registered and answers /health")
    return Readiness(False, "NotRegistered", f"version {canary.version} is not registered")


def canary_status(**values: Any) -> dict[str, Any]:
    base = {
        "proposal": "p1",
        "version": "2.1.0",
        "deployment": "classifier-v2-1-0",
        "promptDigest": "d" * 64,
        "startedAt": iso_precise(NOW - timedelta(minutes=5)),
        "lastStepAt": iso_precise(NOW - timedelta(minutes=1)),
        "weight": 10,
    }
    return {**base, **values}


def in_canary(phase: str = "Progressing", *, window: bool = True, **canary: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": phase,
        "stableVersion": STABLE,
        "stableDeployment": "classifier",
        "canary": canary_status(**canary),
    }
    if window:
        # The evidence window opened at zero counters five minutes ago. Its one stratum holds
        # no requests but the per-read sums of eleven reads whose failures were as variable as
        # independent requests (dispersion 1), so the decision may rule on this pass's read
        # (rollout/decision.py: no verdict before the dispersion is estimated).
        opened = iso(NOW - timedelta(minutes=5))
        status["evidence"] = {
            "startedAt": opened,
            "readAt": iso(NOW - timedelta(seconds=30)),
            "stableLast": {"total": 0, "failed": 0},
            "canaryLast": {"total": 0, "failed": 0},
            "strata": [
                {
                    "weight": status["canary"]["weight"] or 0,
                    "since": opened,
                    "ticks": 11,
                    "dispersion": [9.0, 0.0, 100.0, 10.0, 100.0],
                }
            ],
        }
    return status


def proposal_in(phase: str, weight: int | None = 10, **kw: Any) -> PromptProposal:
    return make_proposal(
        status={"phase": phase, "weight": weight, "deploymentName": "classifier-v2-1-0"}, **kw
    )


def evidence(kind: str, weight: int = 10) -> Counters:
    """Cumulative counters since the window opened at zero, split as the weight says."""
    total = 4000
    canary_n = total * weight // 100
    stable_n = total - canary_n
    rates = {"better": (0.30, 0.01), "worse": (0.01, 0.30), "unsure": (0.10, 0.10)}[kind]
    return Counters(stable_n, int(stable_n * rates[0]), canary_n, int(canary_n * rates[1]))


def kinds(step: Step) -> list[str]:
    return [type(e).__name__ for e in step.effects]


def events(step: Step) -> list[tuple[str, str]]:
    return [(e.involved["kind"], e.reason) for e in step.effects if isinstance(e, PostEvent)]


def proposal_phase(step: Step, name: str = "p1") -> ProposalPhase | None:
    return step.proposals[name].phase if name in step.proposals else None


# --- one row per transition ------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """Given these observations, a pass leads to these phases and effects."""

    name: str
    observations: Observations
    rollout_phase: RolloutPhase | None
    proposal_phase: ProposalPhase | None
    effects: list[str]
    weight: int | None = None
    posted: list[tuple[str, str]] = field(default_factory=list)


CANARY_10 = make_rollout(in_canary())
TABLE = [
    Row(
        "no proposal: the stable version serves all traffic",
        observe(make_rollout({"phase": "Pending"})),
        R.STABLE,
        None,
        ["WriteRolloutStatus", "AssertWeights", "PostEvent"],
        posted=[("AgentRollout", "Stable")],
    ),
    Row(
        "a new proposal: its challenger is rendered (applied before the status says so)",
        observe(make_rollout({"phase": "Stable"}), make_proposal()),
        R.PROGRESSING,
        P.RENDERED,
        ["ApplyManifests", "WriteRolloutStatus", "AssertWeights", "WriteProposalStatus"],
        posted=[("PromptProposal", "Rendered")],
    ),
    Row(
        "the challenger is ready: seeded at the initial weight",
        observe(
            make_rollout(in_canary(weight=None, window=False)),
            proposal_in("Rendered", None),
            registered=(STABLE, "2.1.0"),
            challenger_deployment=READY,
        ),
        R.PROGRESSING,
        P.CANARY,
        ["WriteRolloutStatus", "AssertWeights", "WriteProposalStatus"],
        weight=10,
        posted=[("AgentRollout", "CanaryStarted"), ("PromptProposal", "CanaryStarted")],
    ),
    Row(
        "the challenger is not ready within progressDeadline: rolled back and scaled to zero",
        observe(
            make_rollout(
                {
                    **in_canary(weight=None, startedAt=iso_precise(NOW - timedelta(minutes=11))),
                    "conditions": [
                        {
                            "type": "ChallengerReady",
                            "status": "False",
                            "reason": "NotReady",
                            "lastTransitionTime": iso(NOW - timedelta(minutes=10)),
                        }
                    ],
                }
            ),
            proposal_in("Rendered", None),
        ),
        R.ROLLED_BACK,
        P.ROLLED_BACK,
        ["ScaleToZero", "WriteRolloutStatus", "AssertWeights", "WriteProposalStatus"],
        posted=[("AgentRollout", "RolledBack"), ("PromptProposal", "RolledBack")],
    ),
    Row(
        "evidence that the canary is at least as good: one step up",
        observe(
            CANARY_10,
            proposal_in("Canary"),
            registered=(STABLE, "2.1.0"),
            challenger_deployment=READY,
            counters=evidence("better"),
        ),
        R.PROGRESSING,
        P.CANARY,
        ["WriteRolloutStatus", "AssertWeights", "WriteProposalStatus", "CountDecision"],
        weight=30,
        posted=[("AgentRollout", "Stepped")],
    ),
    Row(
        "good evidence, but the interval since the last step has not passed: hold",
        settled(
            observe(
                make_rollout(in_canary(lastStepAt=iso_precise(NOW - timedelta(seconds=3)))),
                proposal_in("Canary"),
                registered=(STABLE, "2.1.0"),
                challenger_deployment=READY,
                counters=evidence("better"),
            )
        ),
        R.PROGRESSING,
        None,
        ["WriteRolloutStatus", "AssertWeights", "CountDecision"],
        weight=10,
    ),
    Row(
        "the next step would reach the ceiling: await approval, say how, once",
        observe(
            make_rollout(in_canary(weight=30)),
            proposal_in("Canary", 30),
            registered=(STABLE, "2.1.0"),
            challenger_deployment=READY,
            counters=evidence("better", 30),
        ),
        R.AWAITING_APPROVAL,
        P.AWAITING_APPROVAL,
        ["WriteRolloutStatus", "AssertWeights", "WriteProposalStatus", "CountDecision"],
        weight=30,
        posted=[("AgentRollout", "AwaitingApproval"), ("PromptProposal", "AwaitingApproval")],
    ),
    Row(
        "approval while waiting: the ceiling at once, evidence not read in the approval pass",
        observe(
            make_rollout(in_canary("AwaitingApproval", weight=30)),
            proposal_in("AwaitingApproval", 30, approved=True),
            registered=(STABLE, "2.1.0"),
            cause="approval",
        ),
        R.PROMOTING,
        P.CANARY,
        ["WriteRolloutStatus", "AssertWeights", "WriteProposalStatus"],
        weight=50,
        posted=[
            ("PromptProposal", "Approved"),
            ("AgentRollout", "Approved"),
            ("PromptProposal", "Approved"),
        ],
    ),
    Row(
        "approval given early: recorded, skips no evidence",
        observe(
            CANARY_10,
            proposal_in("Canary", approved=True),
            registered=(STABLE, "2.1.0"),
            cause="approval",
            challenger_deployment=READY,
            counters=evidence("unsure"),
        ),
        R.PROGRESSING,
        P.CANARY,
        ["WriteRolloutStatus", "AssertWeights", "WriteProposalStatus", "CountDecision"],
        weight=10,
        posted=[("PromptProposal", "Approved")],
    ),
    Row(
        "approval withdrawn (spec.approved back to false): rejected, drained, scaled to zero",
        observe(
            make_rollout(in_canary("Promoting", weight=50, approved=True)),
            make_proposal(
                approved=False,
                status={
                    "phase": "Canary",
                    "weight": 50,
                    "approval": {"approvedAt": iso(NOW), "promptDigest": "d"},
                },
            ),
            registered=(STABLE, "2.1.0"),
            cause="approval",
        ),
        R.ROLLED_BACK,
        P.REJECTED,
        ["ScaleToZero", "WriteRolloutStatus", "AssertWeights", "WriteProposalStatus"],
        posted=[("AgentRollout", "RolledBack"), ("PromptProposal", "Rejected")],
    ),
    Row(
        "`promptloop reject`: rolled back at once",
        observe(
            CANARY_10,
            proposal_in("Canary", annotations={REJECT_ANNOTATION: "true"}),
            cause="approval",
        ),
        R.ROLLED_BACK,
        P.REJECTED,
        ["ScaleToZero", "WriteRolloutStatus", "AssertWeights", "WriteProposalStatus"],
        posted=[("AgentRollout", "RolledBack"), ("PromptProposal", "Rejected")],
    ),
    Row(
        "evidence that the canary is worse: rolled back to the floor (0: scaled to zero)",
        observe(
            CANARY_10,
            proposal_in("Canary"),
            registered=(STABLE, "2.1.0"),
            challenger_deployment=READY,
            counters=evidence("worse"),
        ),
        R.ROLLED_BACK,
        P.ROLLED_BACK,
        [
            "ScaleToZero",
            "WriteRolloutStatus",
            "AssertWeights",
            "WriteProposalStatus",
            "CountDecision",
        ],
        posted=[("AgentRollout", "RolledBack"), ("PromptProposal", "RolledBack")],
    ),
    Row(
        "the canary serves all traffic and is still good: promoted",
        observe(
            make_rollout(in_canary("Promoting", weight=100, approved=True)),
            make_proposal(
                approved=True,
                status={
                    "phase": "Canary",
                    "weight": 100,
                    "approval": {"approvedAt": iso(NOW), "promptDigest": "d"},
                },
            ),
            registered=(STABLE, "2.1.0"),
            challenger_deployment=READY,
            # The stable's samples from the earlier steps are still in the window.
            counters=Counters(3000, 900, 4000, 40),
        ),
        R.STABLE,
        P.PROMOTED,
        ["WriteRolloutStatus", "AssertWeights", "WriteProposalStatus", "CountDecision"],
        posted=[("AgentRollout", "Promoted"), ("PromptProposal", "Promoted")],
    ),
    Row(
        "metrics unavailable: hold, no verdict counted",
        settled(
            observe(
                CANARY_10,
                proposal_in("Canary"),
                registered=(STABLE, "2.1.0"),
                challenger_deployment=READY,
                counters_problem="503 from the provider",
            )
        ),
        R.PROGRESSING,
        None,
        ["WriteRolloutStatus", "AssertWeights"],
        weight=10,
    ),
    Row(
        "the connector token is missing: Invalid, unstarted proposals say why, no router call",
        observe(make_rollout({"phase": "Stable"}), make_proposal(), token_problem="no Secret"),
        R.INVALID,
        P.INVALID,
        ["WriteRolloutStatus", "WriteProposalStatus"],
        # A rollout that was Stable says so in its status; only a first Invalid is announced.
        posted=[("PromptProposal", "Invalid")],
    ),
    Row(
        "the active proposal was deleted: the stable version takes the whole share again",
        observe(CANARY_10),
        R.STABLE,
        None,
        ["WriteRolloutStatus", "AssertWeights"],
    ),
    Row(
        "a pass was killed after the status write: the proposal's phase is repaired",
        observe(
            CANARY_10,
            proposal_in("Rendered", None),
            registered=(STABLE, "2.1.0"),
            challenger_deployment=READY,
            counters=evidence("unsure"),
        ),
        R.PROGRESSING,
        P.CANARY,
        ["WriteRolloutStatus", "AssertWeights", "WriteProposalStatus", "CountDecision"],
        weight=10,
    ),
    Row(
        "the router cannot be reached: recorded, nothing written to it",
        settled(
            observe(
                CANARY_10,
                proposal_in("Canary"),
                versions=None,
                router_problem="connection refused",
                challenger_deployment=READY,
                counters=evidence("unsure"),
            )
        ),
        R.PROGRESSING,
        None,
        ["WriteRolloutStatus"],
        weight=10,
    ),
]


@pytest.mark.parametrize("row", TABLE, ids=[row.name for row in TABLE])
def test_each_transition(row: Row) -> None:
    step = advance(row.observations)
    assert step.status is not None
    assert step.status.phase is row.rollout_phase
    assert proposal_phase(step) is row.proposal_phase
    assert [k for k in kinds(step) if k != "PostEvent"] == [
        k for k in row.effects if k != "PostEvent"
    ]
    assert sorted(events(step)) == sorted(row.posted)
    if row.weight is not None:
        assert step.status.canary is not None and step.status.canary.weight == row.weight
    # The pure function never changes what it was given.
    assert (
        row.observations.rollout.status
        == make_rollout(row.observations.rollout.status.model_dump(by_alias=True)).status
    )


def test_effects_come_in_the_crash_safe_order() -> None:
    """Take-outs and renders, then the intent, then the router, then proposals and Events."""
    order = [
        (ApplyManifests, ScaleToZero),
        (WriteRolloutStatus,),
        (AssertWeights,),
        (WriteProposalStatus, PostEvent, CountDecision),
    ]
    for row in TABLE:
        ranks = [
            next(i for i, group in enumerate(order) if isinstance(e, group))
            for e in advance(row.observations).effects
        ]
        assert ranks == sorted(ranks), row.name


def test_the_weight_asserted_is_the_one_status_says() -> None:
    step = advance(TABLE[4].observations)
    weights = next(e for e in step.effects if isinstance(e, AssertWeights))
    assert (weights.stable, weights.canary, weights.canary_percent) == (STABLE, "2.1.0", 30)
    assert step.status is not None and step.status.canary is not None
    assert step.status.canary.weight == 30


def test_the_router_read_back_is_recorded_and_makes_the_rollout_ready() -> None:
    status = AgentRolloutStatus(phase=R.PROGRESSING, stable_version=STABLE)
    plan = AssertWeights("classifier", STABLE, "2.1.0", 30, ("1.0.0",))
    readback = (
        VersionWeight(version=STABLE, percent=70.0, raw=7000),
        VersionWeight(version="2.1.0", percent=30.0, raw=3000),
    )
    recorded = after_router(status, plan, RouterResult(readback=readback), NOW)
    assert [(w.version, w.role) for w in recorded.weights] == [
        (STABLE, "stable"),
        ("2.1.0", "canary"),
    ]
    assert recorded.other_versions == ["1.0.0"]
    ready = {c.type: c.status for c in recorded.conditions}
    assert ready["RouterReachable"] is ConditionStatus.TRUE
    assert ready["Ready"] is ConditionStatus.TRUE
    refused = after_router(status, plan, RouterResult(error="403", forbidden=True), NOW)
    reasons = {c.type: (c.status, c.reason) for c in refused.conditions}
    assert reasons["RouterReachable"] == (ConditionStatus.FALSE, "Forbidden")
    assert reasons["Ready"] == (ConditionStatus.FALSE, "NotReady")


def test_retired_deployments_are_scaled_to_zero_after_the_retention_window() -> None:
    status = {
        "phase": "Stable",
        "stableVersion": "2.1.0",
        "stableDeployment": "classifier-v2-1-0",
        "retiring": [
            RetiringDeployment(
                proposal="p0", deployment="classifier-v2-0-0", version=STABLE, since=iso(NOW)
            ).model_dump(by_alias=True)
        ],
    }
    promoted = make_proposal("p0", STABLE, status={"phase": "Promoted", "weight": 100})
    early = advance(observe(make_rollout(status), promoted, registered=("2.1.0",)))
    assert "ScaleToZero" not in kinds(early)
    late = advance(
        observe(make_rollout(status), promoted, now=NOW + timedelta(minutes=11), registered=())
    )
    assert kinds(late)[0] == "ScaleToZero"
    assert proposal_phase(late, "p0") is P.SUPERSEDED
    assert late.status is not None and late.status.retiring == []


def test_queued_proposals_wait_and_duplicates_are_invalid() -> None:
    step = advance(
        observe(
            make_rollout({"phase": "Stable"}),
            make_proposal("p1", "2.1.0", created="2026-03-01T11:00:00Z"),
            make_proposal("p2", "2.2.0", created="2026-03-01T11:00:01Z"),
            make_proposal("p3", "2.1.0", created="2026-03-01T11:00:02Z"),
            make_proposal("p4", STABLE, created="2026-03-01T11:00:03Z"),
        )
    )
    assert proposal_phase(step, "p1") is P.RENDERED
    assert step.proposals["p2"].phase is P.PENDING
    assert step.proposals["p2"].message == "queued behind p1"
    assert proposal_phase(step, "p3") is P.INVALID
    assert proposal_phase(step, "p4") is P.INVALID
    assert [
        e.manifests[1]["metadata"]["name"] for e in step.effects if isinstance(e, ApplyManifests)
    ] == ["classifier-v2-1-0"]


def test_a_challenger_that_cannot_be_rendered_makes_the_proposal_invalid() -> None:
    obs = observe(make_rollout({"phase": "Stable"}), make_proposal())
    obs = replace(obs, renderings={"p1": Rendering(error="no container named agent")})
    step = advance(obs)
    assert proposal_phase(step) is P.INVALID
    assert "ApplyManifests" not in kinds(step)


def test_orphans_become_invalid_once() -> None:
    raw = make_proposal().model_dump(by_alias=True)
    orphan = PromptProposal.model_validate(
        {**raw, "spec": {**raw["spec"], "rolloutRef": {"name": "gone"}}}
    )
    step = orphaned(NS, "gone", [orphan])
    assert kinds(step) == ["WriteProposalStatus", "PostEvent"]
    again = orphan.model_copy(update={"status": step.proposals["p1"]})
    assert orphaned(NS, "gone", [again]).effects == ()


def test_weight_drift_is_a_difference_in_raw_weights() -> None:
    weights = [VersionWeight(version=STABLE, percent=90, raw=9000)]
    assert not weights_drifted(weights, [RouterVersion(STABLE, 9000)])
    assert weights_drifted(weights, [RouterVersion(STABLE, 100)])
    assert not weights_drifted([], [RouterVersion(STABLE, 100)])


# --- random lives, crashes included ----------------------------------------------------------


@dataclass
class World:
    """A cluster and a router that carry out effects exactly, and can die part-way."""

    rollout: AgentRollout
    proposals: dict[str, PromptProposal] = field(default_factory=dict)
    router: dict[str, int] = field(default_factory=lambda: {STABLE: 100})
    counters: dict[str, tuple[int, int]] = field(default_factory=dict)
    deployments: set[str] = field(default_factory=set)
    now: datetime = NOW
    versions: int = 0
    posted: list[PostEvent] = field(default_factory=list)
    weight_changed_at: datetime | None = None

    @property
    def ceiling(self) -> int:
        return self.rollout.spec.canary.ceiling

    @property
    def interval(self) -> timedelta:
        return timedelta(seconds=10)

    def observations(self, cause: str) -> Observations:
        status = self.rollout.status
        canary = status.canary
        counters = None
        if canary is not None and canary.weight is not None and not canary.rolled_back:
            s = self.counters.get(STABLE, (0, 0))
            c = self.counters.get(canary.version or "", (0, 0))
            counters = Counters(s[0], s[1], c[0], c[1])
        challenger = READY if canary is not None and canary.deployment in self.deployments else None
        proposals = tuple(sorted(self.proposals.values(), key=lambda p: p.metadata.name))
        return Observations(
            rollout=self.rollout,
            now=self.now,
            proposals=proposals,
            cause=cause,
            stable_deployment=STABLE_DEPLOYMENT,
            stable_prompt="Classify the ticket.",
            challenger_deployment=challenger,
            versions=tuple(RouterVersion(v, w, self.now) for v, w in self.router.items()),
            challenger_readiness=router_readiness(self.rollout, tuple(self.router)),
            counters=counters,
            renderings={p.metadata.name: rendering(p.spec.version) for p in proposals},
        )

    def carry_out(self, step: Step, stop_after: int | None = None) -> None:
        """Execute the effects in order, as the reconciler does; stop after ``stop_after``."""
        for index, effect in enumerate(step.effects):
            if stop_after is not None and index >= stop_after:
                return  # the operator was killed here
            if isinstance(effect, ApplyManifests):
                deployment = effect.manifests[1]
                self.deployments.add(deployment["metadata"]["name"])
                self.router.setdefault(deployment["metadata"]["labels"]["v"], 100)
            elif isinstance(effect, ScaleToZero):
                self.deployments.discard(effect.deployment)
            elif isinstance(effect, WriteRolloutStatus):
                self.write_rollout(effect.status)
            elif isinstance(effect, AssertWeights):
                self.check_gate(effect)
                before = self.canary_share()
                # Like AgentField: the versions named are set, the others keep their weight.
                self.router[effect.stable] = 100 - effect.canary_percent
                if effect.canary:
                    self.router[effect.canary] = effect.canary_percent
                for other in effect.others:
                    self.router[other] = 1
                if self.canary_share() != before:
                    self.weight_changed_at = self.now
                readback = tuple(
                    VersionWeight(version=v, percent=float(w), raw=w)
                    for v, w in self.router.items()
                )
                self.write_rollout(
                    after_router(self.rollout.status, effect, RouterResult(readback), self.now)
                )
            elif isinstance(effect, WriteProposalStatus):
                if effect.name in self.proposals:
                    old = self.proposals[effect.name]
                    assert allowed(PROPOSAL_TRANSITIONS, old.status.phase, effect.status.phase)
                    self.proposals[effect.name] = old.model_copy(update={"status": effect.status})
            elif isinstance(effect, PostEvent):
                self.posted.append(effect)

    def write_rollout(self, status: AgentRolloutStatus) -> None:
        old = self.rollout.status
        assert allowed(ROLLOUT_TRANSITIONS, old.phase, status.phase)
        self.rollout = self.rollout.model_copy(update={"status": status})

    def canary_share(self) -> int:
        return sum(w for v, w in self.router.items() if v != STABLE and w > 1)

    def check_gate(self, weights: AssertWeights) -> None:
        """The router never gives a challenger the ceiling unless a person approves it now."""
        if weights.canary is None or weights.canary_percent < self.ceiling:
            return
        owner = next(p for p in self.proposals.values() if p.spec.version == weights.canary)
        assert owner.spec.approved is True
        assert owner.metadata.annotations.get(REJECT_ANNOTATION) != "true"

    def active(self) -> PromptProposal | None:
        canary = self.rollout.status.canary
        return self.proposals.get(canary.proposal or "") if canary is not None else None

    def serve(self, evidence: str) -> None:
        """2,000 requests split as the router says; failure rates as the evidence says."""
        rates = {"better": (0.30, 0.01), "worse": (0.01, 0.30), "unsure": (0.10, 0.10)}[evidence]
        total = sum(max(w, 0) for w in self.router.values()) or 1
        for version, weight in self.router.items():
            served = 2000 * weight // total
            rate = rates[0] if version == STABLE else rates[1]
            done, failed = self.counters.get(version, (0, 0))
            self.counters[version] = (done + served, failed + int(served * rate))

    def event(self, name: str) -> str:
        """Change the world as a person or time would; returns the pass's cause."""
        active = self.active()
        if name == "wait":
            self.now += self.interval
        elif name in ("better", "worse", "unsure"):
            self.serve(name)
            self.now += timedelta(seconds=3)
        elif name == "new":
            self.versions += 1
            version = f"3.{self.versions}.0"
            proposal = make_proposal(
                f"p{self.versions}",
                version,
                created=iso(self.now + timedelta(seconds=self.versions)),
            )
            self.proposals[proposal.metadata.name] = proposal
            return "proposal"
        elif active is None:
            return "tick"
        elif name == "approve":
            self.set_spec(active, approved=True)
            return "approval"
        elif name == "withdraw":
            if active.spec.approved:
                self.set_spec(active, approved=False)
            return "approval"
        elif name == "reject":
            annotations = {**active.metadata.annotations, REJECT_ANNOTATION: "true"}
            self.proposals[active.metadata.name] = active.model_copy(
                update={"metadata": active.metadata.model_copy(update={"annotations": annotations})}
            )
            return "approval"
        elif name == "delete":
            del self.proposals[active.metadata.name]
            return "deletion"
        return "tick"

    def set_spec(self, proposal: PromptProposal, **values: Any) -> None:
        self.proposals[proposal.metadata.name] = proposal.model_copy(
            update={"spec": proposal.spec.model_copy(update=values)}
        )

    def check(self) -> None:
        """What must hold after every complete pass."""
        status = self.rollout.status
        awaiting = next((c for c in status.conditions if c.type == "AwaitingApproval"), None)
        assert (status.phase is R.AWAITING_APPROVAL) == (
            awaiting is not None and awaiting.status is ConditionStatus.TRUE
        )
        in_flight = [
            p
            for p in self.proposals.values()
            if p.status.phase in (P.RENDERED, P.CANARY, P.AWAITING_APPROVAL)
        ]
        assert len(in_flight) <= 1  # one challenger at a time
        canary = status.canary
        if canary is None or canary.rolled_back:
            assert not in_flight
            return
        active = self.proposals[canary.proposal or ""]
        assert active.status.phase in (P.RENDERED, P.CANARY, P.AWAITING_APPROVAL)
        if canary.weight is not None:
            assert active.status.weight == canary.weight
            if not canary.approved:
                assert canary.weight < self.ceiling
        assert (status.phase is R.AWAITING_APPROVAL) == (active.status.phase is P.AWAITING_APPROVAL)

    def run_pass(self, cause: str, stop_after: int | None = None) -> Step:
        before = self.rollout.status.canary
        step = advance(self.observations(cause))
        self.carry_out(step, stop_after)
        after = self.rollout.status.canary
        # The weight rises on evidence at most once per interval; only a person's approval or a
        # new challenger skips the wait.
        if (
            before is not None
            and after is not None
            and before.proposal == after.proposal
            and before.weight is not None
            and after.weight is not None
            and after.weight > before.weight
            and after.approved == before.approved
        ):
            last = datetime.fromisoformat((before.last_step_at or "").replace("Z", "+00:00"))
            assert self.now - last >= self.interval - timedelta(seconds=0.25)
        return step


EVENTS = ["better"] * 8 + ["wait"] * 6 + ["unsure", "worse", "approve", "approve", "withdraw"]
EVENTS += ["reject", "delete", "new", "new", "crash", "crash", "replay"]


def allowed(table: dict[Any, frozenset[Any]], before: Any, after: Any) -> bool:
    """Whether ``after`` is reachable from ``before`` through the table's transitions.

    One pass may make several legal moves (a deleted canary gives way to the next proposal:
    Promoting -> Stable -> Progressing), each checked by the transition functions as it is made;
    what is written must therefore be reachable, and a terminal phase never moves again.
    """
    seen, todo = {before}, [before]
    while todo:
        for nxt in table[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return after in seen


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(EVENTS), st.integers(0, 8)), max_size=70),
    st.integers(20, 90),
)
def test_random_lives_stay_inside_the_tables_and_the_gate(
    events_: list[tuple[str, int]], ceiling: int
) -> None:
    world = World(make_rollout({"phase": "Stable", "stableVersion": STABLE}, ceiling=ceiling))
    world.event("new")
    world.run_pass("proposal")
    world.check()
    for name, cut in events_:
        if name == "crash":
            # The operator dies after `cut` effects of a pass; the next pass starts from what
            # was written, and must leave everything consistent.
            world.run_pass("tick", stop_after=cut)
            world.run_pass("tick")
        elif name == "replay":
            first = world.run_pass("tick")
            again = world.run_pass("tick")
            # Nothing new happened in between: nothing is rendered twice, and a weight once set
            # does not move (the interval has not passed, the evidence is the same).
            assert not any(isinstance(e, ApplyManifests) for e in again.effects)
            assert first.status is not None and again.status is not None
            if first.status.canary is not None and first.status.canary.weight is not None:
                assert again.status.canary is not None
                assert again.status.canary.weight == first.status.canary.weight
        else:
            world.run_pass(world.event(name))
        world.check()
    # A rejected proposal has no traffic beyond the router's minimum share for a registered
    # version (AgentField cannot drain by weight), and its Deployment is scaled to zero.
    for proposal in world.proposals.values():
        if proposal.status.phase is P.REJECTED:
            assert proposal.status.phase in PROPOSAL_TERMINAL
            assert world.router.get(proposal.spec.version, 0) <= 1
            assert proposal.status.deployment_name not in world.deployments


def test_a_whole_life_with_an_approval_at_the_ceiling_ends_promoted() -> None:
    world = World(make_rollout({"phase": "Stable", "stableVersion": STABLE}))
    world.event("new")
    world.run_pass("proposal")  # rendered
    world.run_pass("tick")  # ready: seeded at 10
    seen = []
    # The first read opens the evidence window, and no verdict comes before ten informative
    # reads (the dispersion of the failures must be estimable): twelve passes with traffic.
    for name in (
        ["better"] * 12
        + ["wait", "better", "wait", "better", "approve"]
        + [
            "wait",
            "better",
        ]
        * 4
    ):
        world.run_pass(world.event(name))
        world.check()
        seen.append(world.rollout.status.phase)
    assert R.AWAITING_APPROVAL in seen and R.PROMOTING in seen
    assert world.rollout.status.phase is R.STABLE
    assert world.rollout.status.stable_version == "3.1.0"
    assert world.proposals["p1"].status.phase is P.PROMOTED
    assert [e.reason for e in world.posted if e.involved["kind"] == "AgentRollout"].count(
        "AwaitingApproval"
    ) == 1
    weights = [
        h.weight for h in world.rollout.status.history if h.event in ("seed", "step", "approved")
    ]
    assert weights == [10, 30, 50, 70, 90, 100]


def test_canary_status_rejects_no_fields_the_tests_use() -> None:
    # The helpers above build statuses through the API models, as the API server would store them.
    assert CanaryStatus.model_validate(canary_status()).weight == 10


def test_the_guard_reads_during_a_canary_or_with_several_weighted_versions() -> None:
    from promptloop.api import VersionWeight
    from promptloop.rollout.advance import guard_worthwhile

    stable = VersionWeight(version="2.0.0", percent=100, raw=10000, role="stable")
    canary = VersionWeight(version="2.1.0", percent=10, raw=1000, role="canary")
    assert not guard_worthwhile([stable], canary_in_progress=False)
    assert not guard_worthwhile([], canary_in_progress=False)
    assert guard_worthwhile([stable], canary_in_progress=True)  # a challenger may register
    assert guard_worthwhile([stable, canary], canary_in_progress=False)


# --- AgentField's ordering: never over-exposed ----------------------------------------------------


def _condition(step: Step, type_: str) -> Any:
    assert step.status is not None
    return next(c for c in step.status.conditions if c.type == type_)


def test_a_version_agentfield_would_route_everything_to_is_invalid_before_rendering() -> None:
    rollout = make_rollout({"phase": "Stable", "stableVersion": "2.9.0"})
    proposal = make_proposal(version="2.10.0")
    step = advance(observe(rollout, proposal, registered=("2.9.0",)))
    assert proposal_phase(step) is P.INVALID
    message = step.proposals["p1"].message or ""
    assert "sorts, as a string, before the stable version 2.9.0" in message
    assert "ORDER BY version='' desc, version ASC LIMIT 1" in message
    assert "ApplyManifests" not in kinds(step)  # nothing rendered, nothing exposed
    assert ("PromptProposal", "Invalid") in events(step)
    assert step.status is not None and step.status.canary is None


def test_a_version_below_a_still_registered_one_is_invalid_too() -> None:
    rollout = make_rollout({"phase": "Stable"})
    # 2.0.5 sorts after the stable 2.0.0 but before a 2.1.0 still registered from earlier.
    step = advance(observe(rollout, make_proposal(version="2.0.5"), registered=(STABLE, "2.1.0")))
    assert proposal_phase(step) is P.INVALID
    assert "before version 2.1.0, still registered" in (step.proposals["p1"].message or "")


def test_the_ordering_check_applies_only_to_a_router_that_routes_by_it() -> None:
    rollout = make_rollout({"phase": "Stable", "stableVersion": "2.9.0"})
    step = advance(
        observe(
            rollout,
            make_proposal(version="2.10.0"),
            registered=("2.9.0",),
            router_orders_by_version_string=False,  # Gateway API splits by weight
        )
    )
    assert proposal_phase(step) is P.RENDERED
    assert "ApplyManifests" in kinds(step)


def test_a_queued_proposal_is_checked_again_when_the_stable_version_changes() -> None:
    queued = make_proposal(version="2.10.0", status={"phase": "Pending", "message": "queued"})
    before = advance(observe(make_rollout({"phase": "Stable", "stableVersion": "2.1.0"}), queued))
    assert proposal_phase(before) is P.RENDERED  # "2.1.0" < "2.10.0": fine so far
    after = advance(
        observe(
            make_rollout({"phase": "Stable", "stableVersion": "2.9.0"}),
            queued,
            registered=("2.1.0", "2.9.0"),
        )
    )
    assert proposal_phase(after) is P.INVALID


def test_a_running_canary_that_now_sorts_first_is_withdrawn_at_once() -> None:
    # The stable moved to 2.11.0 while 2.10.0 was being canaried: AgentField would now send
    # everything to 2.10.0, before approval.
    rollout = make_rollout(in_canary(version="2.10.0"))
    rollout.status.stable_version = "2.11.0"
    assert rollout.status.canary is not None
    rollout.status.canary.version = "2.10.0"
    step = advance(
        observe(
            rollout,
            proposal_in("Canary", version="2.10.0"),
            registered=("2.11.0", "2.10.0"),
            challenger_deployment=READY,
            counters=evidence("better"),
        )
    )
    assert proposal_phase(step) is P.ROLLED_BACK
    assert kinds(step)[0] == "ScaleToZero"  # taken out before anything else
    verified = _condition(step, "TrafficVerified")
    assert (verified.status.value, verified.reason) == ("False", "OverExposed")
    assert ("AgentRollout", "OverExposed") in events(step)
    assert step.status is not None and step.status.canary is None


def test_observed_over_exposure_is_withdrawn_and_never_reaches_approval() -> None:
    # At weight 40 (the next step would reach the ceiling of 50 and wait for approval), the
    # canary served every request: far beyond its weight.
    rollout = make_rollout(in_canary(weight=40, stepCanaryTotal=0, stepStableTotal=0))
    counters = Counters(stable_total=0, stable_failed=0, canary_total=400, canary_failed=0)
    step = advance(
        observe(
            rollout,
            proposal_in("Canary", weight=40),
            registered=(STABLE, "2.1.0"),
            challenger_deployment=READY,
            counters=counters,
        )
    )
    assert proposal_phase(step) is P.ROLLED_BACK
    assert step.status is not None
    assert step.status.phase is R.ROLLED_BACK
    assert "ScaleToZero" in kinds(step)
    verified = _condition(step, "TrafficVerified")
    assert (verified.status.value, verified.reason) == ("False", "OverExposed")
    assert "400 of 400" in verified.message
    waiting = _condition(step, "AwaitingApproval")
    assert waiting.status.value == "False"


def test_readiness_says_why_in_the_routers_words() -> None:
    rollout = make_rollout(in_canary(weight=None, window=False))
    for readiness, reason in [
        (Readiness(False, "ConnectorDisabled", "404 endpoint_not_found"), "ConnectorDisabled"),
        (Readiness(False, "NotRegistered", "version 2.1.0 is not registered"), "NotRegistered"),
        (Readiness(False, "ProbeFailed", "answered 503"), "ProbeFailed"),
    ]:
        step = advance(
            observe(
                rollout,
                proposal_in("Rendered", None),
                challenger_deployment=READY,
                challenger_readiness=readiness,
            )
        )
        ready = _condition(step, "ChallengerReady")
        assert (ready.status.value, ready.reason) == ("False", reason)
        assert readiness.message in ready.message
        assert step.status is not None and step.status.canary is not None
        assert step.status.canary.weight is None  # not seeded
    # The heartbeat is advisory: a registered version that answers is ready even with a stale
    # (or absent) heartbeat in AgentField.
    step = advance(
        observe(
            rollout,
            proposal_in("Rendered", None),
            challenger_deployment=READY,
            versions=(RouterVersion(STABLE, 100, NOW), RouterVersion("2.1.0", 100, None)),
            challenger_readiness=Readiness(True, "Ready", "2.1.0 answers /health"),
        )
    )
    assert _condition(step, "ChallengerReady").status.value == "True"
    assert proposal_phase(step) is P.CANARY


def test_a_pass_without_the_evidence_holds_and_says_nothing_about_the_provider() -> None:
    # The gatherer skips the evidence in an approval's pass (promptloop.observe); should that
    # pass reach the evidence anyway, it holds without calling the provider unavailable.
    step = advance(
        observe(
            CANARY_10,
            proposal_in("Canary", approved=True),
            registered=(STABLE, "2.1.0"),
            cause="approval",
            challenger_deployment=READY,
        )
    )
    assert step.status is not None and step.status.canary is not None
    assert step.status.canary.weight == 10
    assert step.status.decision is not None and step.status.decision.verdict == "hold"
    assert "MetricsAvailable" not in {c.type for c in step.status.conditions}


def test_requests_served_under_drifted_weights_are_not_a_verdict_on_the_router() -> None:
    # The stable re-registered (AgentField reset it to 100 next to the canary's 4000): until
    # this pass re-asserts the split, the canary served nearly everything. That is the
    # weight guard's business, not proof that the router ignores weights: the share is
    # measured afresh from here, and the canary is not withdrawn for it.
    rollout = make_rollout(in_canary(weight=40, stepCanaryTotal=0, stepStableTotal=0))
    assert rollout.status.canary is not None
    rollout.status.weights = [
        VersionWeight(version=STABLE, percent=60.0, raw=6000, role="stable"),
        VersionWeight(version="2.1.0", percent=40.0, raw=4000, role="canary"),
    ]
    counters = Counters(stable_total=10, stable_failed=0, canary_total=390, canary_failed=0)

    def tick(router: dict[str, int]) -> Step:
        return advance(
            replace(
                observe(
                    rollout,
                    proposal_in("Canary", weight=40),
                    registered=(STABLE, "2.1.0"),
                    challenger_deployment=READY,
                    counters=counters,
                ),
                versions=tuple(RouterVersion(v, w, NOW) for v, w in router.items()),
            )
        )

    drifted = tick({STABLE: 100, "2.1.0": 4000})
    assert proposal_phase(drifted) is not P.ROLLED_BACK
    verified = _condition(drifted, "TrafficVerified")
    assert verified.reason == "TooLittleTraffic" and "drifted" in verified.message
    assert drifted.status is not None and drifted.status.canary is not None
    assert drifted.status.canary.step_canary_total == 390  # measured from here on
    # The same counts under the weights status read back are over-exposure, as before.
    honest = tick({STABLE: 6000, "2.1.0": 4000})
    assert proposal_phase(honest) is P.ROLLED_BACK
    assert _condition(honest, "TrafficVerified").reason == "OverExposed"
