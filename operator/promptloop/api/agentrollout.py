"""``AgentRollout``: one per agent; canaries each proposed prompt against the incumbent.

The spec says which agent (an AgentField node), which Deployment is the incumbent, how traffic is
split (the router), where failure counts come from (the metrics provider) and the canary policy.
The status is the rollout's whole memory: the operator keeps no state of its own, so a restarted
operator continues from what is written here.
"""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import Field

from promptloop.api.common import (
    DURATION_PATTERN,
    SEMVER_PATTERN,
    ApiModel,
    Condition,
    ObjectMeta,
    SecretKeyRef,
    SpecModel,
    cel,
)
from promptloop.api.endpoint import EndpointOptions
from promptloop.api.notifications import NOTIFICATION_LIMIT, NotificationRecord, NotificationsSpec
from promptloop.constants import API_VERSION, DEFAULT_PROMPT_ENV, ROLLOUT_KIND

__all__ = [
    "EVIDENCE_STRATA_LIMIT",
    "HISTORY_LIMIT",
    "AgentFieldMemoryMetrics",
    "AgentFieldRouter",
    "AgentRef",
    "AgentRollout",
    "AgentRolloutSpec",
    "AgentRolloutStatus",
    "CanaryPolicy",
    "CanaryStatus",
    "CounterReading",
    "DecisionStatus",
    "EvidenceStratum",
    "EvidenceWindow",
    "GatewayApiRouter",
    "HistoryEntry",
    "HttpMetrics",
    "MetricsSpec",
    "PrometheusMetrics",
    "PromptDelivery",
    "RetiringDeployment",
    "RolloutPhase",
    "RouterSpec",
    "StableRef",
    "VersionCounts",
    "VersionWeight",
    "WindowBaseline",
    "WindowCounts",
]

HISTORY_LIMIT = 20
#: Strata kept in ``status.evidence``; beyond it the two oldest are merged (one per weight
#: change, so a whole ladder of 5, 15, ..., 95, 100 plus a floor fits).
EVIDENCE_STRATA_LIMIT = 24

Percent = Annotated[int, Field(ge=0, le=100)]
Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=32)]


class AgentRef(SpecModel):
    """The agent as AgentField knows it."""

    node_id: str = Field(
        min_length=1,
        max_length=253,
        description="The AgentField node id the agent registers under, e.g. classifier.",
    )
    reasoner: str | None = Field(
        default=None,
        max_length=253,
        description="The reasoner traffic is sent to (optional; informational for the router).",
    )


class StableRef(SpecModel):
    """The incumbent: a Deployment the user owns, whose pod template challengers are cloned from."""

    version: str = Field(
        pattern=SEMVER_PATTERN,
        max_length=128,
        description="The incumbent's version as registered in AgentField (semver, e.g. 2.0.0).",
    )
    deployment_name: str = Field(
        min_length=1,
        max_length=253,
        description=(
            "The incumbent Deployment in this namespace. The operator reads its pod template and "
            "never modifies it."
        ),
    )


class PromptDelivery(SpecModel):
    """How the system prompt reaches the agent container: an env var or a mounted file."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.env) && has(self.mountPath))",
                    "set either prompt.env or prompt.mountPath, not both",
                )
            ]
        }
    }

    env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        max_length=128,
        description=(
            f"Name of the environment variable holding the prompt (default {DEFAULT_PROMPT_ENV} "
            "when mountPath is not set)."
        ),
    )
    mount_path: str | None = Field(
        default=None,
        pattern=r"^/.*",
        max_length=1024,
        description="Absolute path of a file holding the prompt, mounted from the ConfigMap.",
    )
    container: str | None = Field(
        default=None,
        max_length=253,
        description="Container that receives the prompt (default: the pod's first container).",
    )


class AgentFieldRouter(SpecModel):
    """The AgentField control plane's connector API as the traffic backend."""

    url: str = Field(
        pattern=r"^https?://.+",
        max_length=2048,
        description="Base URL of the AgentField control plane, e.g. http://agentfield:8080.",
    )
    token_secret_ref: SecretKeyRef = Field(
        description="The Secret key holding the connector token (sent as X-Connector-Token).",
    )


class GatewayApiRouter(SpecModel):
    """A Gateway API HTTPRoute the user owns, split between two Services the operator owns.

    The route's rules send the agent's traffic to backendRefs named ``<rollout>-stable`` and
    ``<rollout>-canary``; the operator creates those Services (selecting the stable version's
    and the challenger's pods) and writes only the two backendRefs' ``weight`` fields, by
    server-side apply under the field manager ``promptloop-router``.
    """

    http_route: str = Field(
        alias="httpRoute",
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Name of the HTTPRoute (gateway.networking.k8s.io/v1) in this namespace.",
    )
    port: int = Field(
        ge=1,
        le=65535,
        description=(
            "The port the agent listens on; both Services expose it (port and targetPort) and "
            "the route's backendRefs name it."
        ),
    )


class RouterSpec(SpecModel):
    """Exactly one traffic backend."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "[has(self.agentfield), has(self.gatewayAPI)].filter(x, x).size() == 1",
                    "exactly one router must be set",
                ),
            ]
        }
    }

    agentfield: AgentFieldRouter | None = Field(
        default=None,
        description=(
            "Step weights through AgentField's connector API. AgentField's execute route does "
            "not read them: the operator verifies the split and refuses versions that would sort "
            "first (see README)."
        ),
    )
    gateway_api: GatewayApiRouter | None = Field(
        default=None,
        alias="gatewayAPI",
        description=(
            "Split real requests by weight with a Gateway API HTTPRoute (weight 0 drains)."
        ),
    )


class PrometheusMetrics(EndpointOptions):
    """Per-version totals and failures from PromQL; ``{{ version }}`` is replaced per version.

    Headers, credentials, a CA and a timeout come from :class:`EndpointOptions`.
    """

    url: str = Field(
        pattern=r"^https?://.+",
        max_length=2048,
        description="Base URL of the Prometheus server.",
    )
    total_query: str = Field(
        min_length=1,
        max_length=4096,
        description="PromQL giving the cumulative request count of {{ version }}.",
    )
    failed_query: str = Field(
        min_length=1,
        max_length=4096,
        description="PromQL giving the cumulative failure count of {{ version }}.",
    )


class AgentFieldMemoryMetrics(SpecModel):
    """Cumulative counters the agents keep in AgentField's global memory scope."""

    url: str | None = Field(
        default=None,
        pattern=r"^https?://.+",
        max_length=2048,
        description="AgentField base URL (default: the router's URL).",
    )
    key_prefix: str = Field(
        default="promptloop.outcomes",
        min_length=1,
        max_length=253,
        description=(
            "Counters live at global key '<keyPrefix>.<nodeId>.<version>' as "
            '{"total": int, "failed": int}.'
        ),
    )
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key with AgentField's API key, when the control plane requires one.",
    )


class HttpMetrics(EndpointOptions):
    """A JSON endpoint answering ``{"total": int, "failed": int}`` (cumulative) per version.

    Headers, credentials, a CA and a timeout come from :class:`EndpointOptions`.
    """

    url: str = Field(
        pattern=r"^https?://.+",
        max_length=2048,
        description="URL with a {{ version }} placeholder, GET answers {total, failed}.",
    )


class MetricsSpec(SpecModel):
    """Exactly one provider of per-version request and failure counts."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "[has(self.prometheus), has(self.agentfieldMemory), has(self.http)]"
                    ".filter(x, x).size() == 1",
                    "exactly one metrics provider must be set: "
                    "prometheus, agentfieldMemory or http",
                ),
            ]
        }
    }

    outcome_lag: Duration | None = Field(
        default=None,
        description=(
            "For providers that cannot follow the counter contract (count a request in total "
            "only when its outcome is recorded): the longest delay between a request being "
            "counted and its failure being counted. After every weight change, counter "
            "increments read within this delay are not used as evidence, so requests served "
            "under the previous weight never count under the new one. Unset: the provider "
            "follows the contract."
        ),
    )
    prometheus: PrometheusMetrics | None = Field(default=None, description="PromQL provider.")
    agentfield_memory: AgentFieldMemoryMetrics | None = Field(
        default=None,
        description="Counters in AgentField global memory.",
    )
    http: HttpMetrics | None = Field(default=None, description="A JSON endpoint per version.")


class CanaryPolicy(SpecModel):
    """How the challenger earns traffic. Weights are percentages of the agent's traffic."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "self.floor <= self.initialWeight",
                    "canary.floor must be at most canary.initialWeight",
                    field_path=".floor",
                ),
                cel(
                    "self.initialWeight <= self.ceiling",
                    "canary.initialWeight must be at most canary.ceiling",
                    field_path=".initialWeight",
                ),
                cel(
                    "duration(self.interval) >= duration('1s')",
                    "canary.interval must be at least 1s",
                    field_path=".interval",
                ),
                cel(
                    "duration(self.progressDeadline) >= duration(self.interval)",
                    "canary.progressDeadline must be at least canary.interval",
                    field_path=".progressDeadline",
                ),
                cel(
                    "!has(self.decisionDeadline) || "
                    "duration(self.decisionDeadline) >= duration(self.interval)",
                    "canary.decisionDeadline must be at least canary.interval",
                    field_path=".decisionDeadline",
                ),
            ]
        }
    }

    initial_weight: Percent = Field(
        default=5,
        description="The challenger's first weight, in percent.",
    )
    max_step: int = Field(
        default=10,
        ge=1,
        le=100,
        description="The most the weight may rise in one step, in percent (at least 1).",
    )
    floor: Percent = Field(
        default=0,
        description=(
            "Where a worse challenger drops to, in percent. 0 takes the challenger out of "
            "rotation (it is scaled to zero, since AgentField cannot drain a version by weight)."
        ),
    )
    ceiling: int = Field(
        default=50,
        ge=1,
        le=100,
        description=(
            "The majority step: the rollout holds below this weight until a person approves "
            "the proposal (spec.approved: true)."
        ),
    )
    interval: Duration = Field(default="30s", description="How often evidence is re-read.")
    min_samples: int = Field(
        default=50,
        ge=1,
        description="Requests each version must have served in the window before any verdict.",
    )
    alpha: float = Field(
        default=0.05,
        gt=0,
        lt=0.5,
        description=(
            "Error rate of the statistical decision: the chance of promoting a challenger that "
            "is not at least as good, although evidence is checked at every interval."
        ),
    )
    max_failure_rate: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description=(
            "Absolute guard: a challenger whose failure rate is surely above this (its lower "
            "confidence bound, at alpha/2, is above it) rolls back."
        ),
    )
    non_inferiority_margin: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description=(
            "How much worse (absolute failure rate) the challenger may be and still count as "
            "at least as good."
        ),
    )
    decision_deadline: Duration | None = Field(
        default=None,
        description=(
            "How long a canary may stay undecided: one still holding this long after it began "
            "(inconclusive, too few samples, no data) is rolled back with reason "
            "DecisionDeadline, so a worse challenger cannot keep its share for a day on too "
            "little traffic. Unset: no deadline."
        ),
    )
    progress_deadline: Duration = Field(
        default="10m",
        description="How long the challenger has to become ready and registered.",
    )
    retire_after: Duration = Field(
        default="10m",
        description=(
            "After a promotion, how long an operator-owned previous stable Deployment keeps "
            "running before it is scaled to zero."
        ),
    )


class AgentRolloutSpec(SpecModel):
    """What the user wants: which agent, the incumbent, the backends and the policy."""

    agent: AgentRef = Field(description="The agent, as registered in AgentField.")
    stable: StableRef = Field(description="The incumbent version and its Deployment.")
    prompt: PromptDelivery = Field(
        default_factory=PromptDelivery,
        description="How the prompt reaches the agent container.",
        json_schema_extra={"default": {}},
    )
    router: RouterSpec = Field(description="The traffic backend (exactly one).")
    metrics: MetricsSpec = Field(description="Where failure counts come from (exactly one).")
    canary: CanaryPolicy = Field(
        default_factory=CanaryPolicy,
        description="How the challenger earns traffic.",
        # The whole default policy (not {}): the API server checks a default against the CEL
        # rules before it applies nested defaults.
        json_schema_extra={"default": CanaryPolicy().to_wire()},
    )
    notifications: NotificationsSpec | None = Field(
        default=None,
        description=(
            "This rollout's own notification sinks (a webhook, Slack), in addition to the "
            "operator's; each transition is sent once."
        ),
    )


class RolloutPhase(enum.StrEnum):
    """Where a rollout is. The transition table lives in :mod:`promptloop.rollout.phases`."""

    PENDING = "Pending"
    STABLE = "Stable"
    PROGRESSING = "Progressing"
    AWAITING_APPROVAL = "AwaitingApproval"
    PROMOTING = "Promoting"
    ROLLED_BACK = "RolledBack"
    INVALID = "Invalid"


class VersionWeight(ApiModel):
    """A version's weight as read back from the router."""

    version: str = Field(description="The version.")
    percent: float = Field(description="Its share of traffic, in percent.")
    raw: int | None = Field(
        default=None, description="The backend's own number (AgentField share)."
    )
    role: str | None = Field(default=None, description="stable, canary, or other.")


class WindowCounts(ApiModel):
    """Requests and failures one version served in the current window."""

    version: str = Field(description="The version.")
    total: int = Field(default=0, ge=0, description="Requests in the window.")
    failed: int = Field(default=0, ge=0, description="Failures in the window.")
    rate: float | None = Field(default=None, description="failed / total, when total > 0.")


class VersionCounts(ApiModel):
    """Both versions' counts in the current window."""

    stable: WindowCounts | None = Field(default=None, description="The incumbent.")
    canary: WindowCounts | None = Field(default=None, description="The challenger.")


class WindowBaseline(ApiModel):
    """Cumulative counters when the window opened; window counts are current minus these."""

    started_at: str | None = Field(default=None, description="When the window opened (RFC 3339).")
    stable_total: int = Field(default=0, ge=0, description="Stable's cumulative requests then.")
    stable_failed: int = Field(default=0, ge=0, description="Stable's cumulative failures then.")
    canary_total: int = Field(default=0, ge=0, description="Canary's cumulative requests then.")
    canary_failed: int = Field(default=0, ge=0, description="Canary's cumulative failures then.")


class CounterReading(ApiModel):
    """One version's cumulative counters as last read."""

    total: int = Field(default=0, ge=0, description="Cumulative requests.")
    failed: int = Field(default=0, ge=0, description="Cumulative failures.")


class EvidenceStratum(ApiModel):
    """The window's evidence while the canary held one weight: both versions saw the same
    conditions, so they are compared within it (rollout/decision.py, Stratum)."""

    weight: int = Field(ge=0, le=100, description="The canary's weight during the stratum.")
    since: str = Field(description="When the weight came into force (RFC 3339).")
    stable_total: int = Field(default=0, ge=0, description="Stable requests in it.")
    stable_failed: int = Field(default=0, ge=0, description="Stable failures in it.")
    canary_total: int = Field(default=0, ge=0, description="Canary requests in it.")
    canary_failed: int = Field(default=0, ge=0, description="Canary failures in it.")
    ticks: int = Field(
        default=0, ge=0, description="Reads that carried information on the failures' split."
    )
    dispersion: list[float] = Field(
        default_factory=list,
        max_length=5,
        description=(
            "Per-read sums for the dispersion estimate: residual squares, residual x failures, "
            "failures squared, variance, variance x failures squared."
        ),
    )


class EvidenceWindow(ApiModel):
    """The current canary's evidence as a compact ledger of counter increments.

    Evidence is the sum of the non-negative increments between consecutive reads, per version
    (Prometheus ``increase()``), grouped in one stratum per weight. A counter that went back
    (a restart) loses only the increment in which it happened, and is counted in
    ``stableResets``/``canaryResets``.
    """

    started_at: str = Field(description="When the window opened (RFC 3339).")
    read_at: str | None = Field(default=None, description="When the counters were last read.")
    stable_last: CounterReading = Field(description="Stable's counters at the last read.")
    canary_last: CounterReading = Field(description="Canary's counters at the last read.")
    strata: list[EvidenceStratum] = Field(
        default_factory=list,
        max_length=EVIDENCE_STRATA_LIMIT,
        description="The evidence per weight, oldest first.",
    )
    stable_resets: int = Field(default=0, ge=0, description="Stable counter resets seen.")
    canary_resets: int = Field(default=0, ge=0, description="Canary counter resets seen.")
    skipped_reads: int = Field(
        default=0,
        ge=0,
        description="Reads not used as evidence: within metrics.outcomeLag of a weight change.",
    )


class DecisionStatus(ApiModel):
    """The last verdict of the decision function and why."""

    verdict: str = Field(description="step, hold, rollback, await-approval or promote.")
    reason: str = Field(default="", description="Why, in a sentence.")
    statistic: float | None = Field(default=None, description="The test statistic.")
    samples_needed: int | None = Field(
        default=None,
        description="Estimated further samples per version before a verdict other than hold.",
    )
    interval: list[float] | None = Field(
        default=None,
        max_length=2,
        description=(
            "The confidence sequence for the difference in failure rates (canary minus "
            "stable, as fractions) behind the verdict."
        ),
    )
    strata: int | None = Field(
        default=None,
        ge=0,
        description="How many strata (one per weight) the comparison combined.",
    )
    dispersion: float | None = Field(
        default=None,
        description=(
            "How much more variable the failures are than independent requests (retries); "
            "the interval is widened by it. 1 = not at all."
        ),
    )
    decided_at: str | None = Field(default=None, description="When (RFC 3339).")


class CanaryStatus(ApiModel):
    """The challenger currently in the canary."""

    proposal: str | None = Field(default=None, description="The PromptProposal's name.")
    version: str | None = Field(default=None, description="The challenger's version.")
    weight: int | None = Field(default=None, description="The weight last written, in percent.")
    deployment: str | None = Field(default=None, description="The challenger's Deployment.")
    prompt_digest: str | None = Field(default=None, description="sha256 of the challenger prompt.")
    started_at: str | None = Field(default=None, description="When the canary began (RFC 3339).")
    last_step_at: str | None = Field(default=None, description="When the weight last changed.")
    steps: int = Field(default=0, ge=0, description="How many times the weight rose.")
    approved: bool = Field(default=False, description="Whether approval has been acted on.")
    step_stable_total: int | None = Field(
        default=None,
        description="Stable's cumulative requests when the weight last changed (traffic check).",
    )
    step_canary_total: int | None = Field(
        default=None,
        description="Canary's cumulative requests when the weight last changed (traffic check).",
    )
    rolled_back: bool = Field(
        default=False,
        description="The challenger was rolled back and holds the floor weight.",
    )


class RetiringDeployment(ApiModel):
    """A previous stable Deployment the operator owns, scaled to zero after the retention window."""

    proposal: str = Field(description="The PromptProposal that owns it.")
    deployment: str = Field(description="The Deployment.")
    version: str = Field(description="Its version.")
    since: str = Field(description="When it stopped being stable (RFC 3339).")


class HistoryEntry(ApiModel):
    """One line of the rollout's bounded history."""

    at: str = Field(description="When (RFC 3339).")
    event: str = Field(description="What happened, e.g. step, hold, rollback, promote.")
    version: str | None = Field(default=None, description="The challenger's version.")
    weight: int | None = Field(default=None, description="The challenger's weight after it.")
    message: str = Field(default="", description="Why.")


class AgentRolloutStatus(ApiModel):
    """Everything the operator knows about this rollout; the only place its state lives."""

    phase: RolloutPhase | None = Field(default=None, description="Where the rollout is.")
    message: str | None = Field(default=None, description="Why it is there, in a sentence.")
    observed_generation: int | None = Field(
        default=None,
        description="The .metadata.generation last acted on.",
    )
    stable_version: str | None = Field(default=None, description="The version now stable.")
    stable_deployment: str | None = Field(default=None, description="The stable Deployment.")
    stable_prompt_digest: str | None = Field(
        default=None,
        description="sha256 of the stable prompt, when known.",
    )
    stable_proposal: str | None = Field(
        default=None,
        description="The PromptProposal that made the stable version, if it was promoted here.",
    )
    canary: CanaryStatus | None = Field(default=None, description="The current challenger.")
    retiring: list[RetiringDeployment] = Field(
        default_factory=list,
        description="Previous stable Deployments waiting for their retention window to pass.",
    )
    weights: list[VersionWeight] = Field(
        default_factory=list,
        description="Weights read back from the router on the last tick.",
    )
    other_versions: list[str] = Field(
        default_factory=list,
        description="Other registered versions, held at the router's minimum share.",
    )
    counts: VersionCounts | None = Field(default=None, description="Counts in the window.")
    window: WindowBaseline | None = Field(
        default=None,
        description="The window's baseline (superseded by evidence; kept for older objects).",
    )
    evidence: EvidenceWindow | None = Field(
        default=None,
        description="The current canary's evidence: counter increments per weight.",
    )
    decision: DecisionStatus | None = Field(default=None, description="The last verdict.")
    history: list[HistoryEntry] = Field(
        default_factory=list,
        max_length=HISTORY_LIMIT,
        description=f"The last {HISTORY_LIMIT} events, oldest first.",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description=(
            "Ready, Healthy, Completed, ChallengerReady, RouterReachable, MetricsAvailable, "
            "TrafficVerified, AwaitingApproval."
        ),
    )
    notifications: list[NotificationRecord] = Field(
        default_factory=list,
        max_length=NOTIFICATION_LIMIT,
        description=(
            f"The last {NOTIFICATION_LIMIT} transitions announced and how each delivery went "
            "(a Sent delivery is never repeated, also after a restart)."
        ),
    )


class AgentRollout(ApiModel):
    """A whole AgentRollout object."""

    model_config = {
        "json_schema_extra": {
            "x-promptloop-crd": {
                "kind": ROLLOUT_KIND,
                "plural": "agentrollouts",
                "singular": "agentrollout",
                "shortNames": ["ar"],
                "categories": ["promptloop"],
                "description": (
                    "Canaries PromptProposals for one agent: steps AgentField traffic weights "
                    "on evidence and holds before the majority step for a person's approval."
                ),
                "printerColumns": [
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    {"name": "Stable", "type": "string", "jsonPath": ".status.stableVersion"},
                    {"name": "Canary", "type": "string", "jsonPath": ".status.canary.version"},
                    {"name": "Weight", "type": "integer", "jsonPath": ".status.canary.weight"},
                    {
                        "name": "Stable-Rate",
                        "type": "number",
                        "jsonPath": ".status.counts.stable.rate",
                    },
                    {
                        "name": "Canary-Rate",
                        "type": "number",
                        "jsonPath": ".status.counts.canary.rate",
                    },
                    {"name": "Verdict", "type": "string", "jsonPath": ".status.decision.verdict"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
            }
        }
    }

    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: str = Field(default=ROLLOUT_KIND)
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: AgentRolloutSpec
    status: AgentRolloutStatus = Field(default_factory=AgentRolloutStatus)
