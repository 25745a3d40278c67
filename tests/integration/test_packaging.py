"""The Helm chart installed into the real API server, and who may do what under it.

- The chart is ``helm install``-ed (a distinct release per test, so cluster-scoped names never
  collide with manifests/base or with other sessions); the operator then runs as a subprocess
  under the **chart's** ServiceAccount token (kwok runs no containers), through a full canary to
  Promoted, once cluster-wide (approval by ``kubectl patch``) and once with ``watchNamespace``
  (approval by ``kubectl apply`` of the proposal's YAML, as a git commit synced by Argo CD would).
- The operator never writes what it does not own: the user's Deployment and the AgentRollout's
  spec keep their generation and content, and the operator's field managers own nothing there
  but metadata (finalizer, annotations) and status.
- The improver's account can run ``promptloop improve --apply`` and nothing more: 403 on
  approving, on Deployments, on Secrets; and admission refuses a pre-approved proposal from it.
- The approval policy: a member of the approvers group may set ``spec.approved`` and is recorded
  in ``promptloop.dev/approved-by``; anyone else gets a clear denial, and cannot forge the record.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv import cluster
from devenv.agentfield import AgentFieldHandle
from devenv.llm_simulator import BASE_PROMPT, classify, run_in_thread
from tests.conftest import KubeCluster
from tests.helmtool import CHART, ROOT, Helm, helm
from tests.integration.conftest import Scenario
from tests.integration.harness import PROMPTLOOP, wait_for

__all__ = ["helm"]

pytestmark = pytest.mark.cluster

BETTER = "Classify the ticket as billing, bug, or other. Refunds are billing. One word."
APPROVE = '{"spec":{"approved":true}}'
# Only the admin's apply writes specs in these tests; anything else owning spec fields is a bug.
USER_MANAGERS = {"kubectl-client-side-apply", "kubectl-patch"}


# -- helpers ------------------------------------------------------------------------------------


@dataclass
class Release:
    """One installed release of the chart."""

    name: str
    namespace: str
    notes: str

    @property
    def fullname(self) -> str:
        """The prefix of its objects' names (the release name plus the chart's)."""
        return f"{self.name}-promptloop"


def token_kubeconfig(kube: KubeCluster, account: str, namespace: str, path: Path) -> Path:
    """A kubeconfig that authenticates as a ServiceAccount with a bound token."""
    token = kube.kubectl(
        "create", "token", account, "-n", namespace, "--duration=1h"
    ).stdout.strip()
    admin = json.loads(kube.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    server = admin["clusters"][0]["cluster"]
    ca = (
        server.get("certificate-authority-data")
        or base64.b64encode(Path(server["certificate-authority"]).read_bytes()).decode()
    )
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {"server": server["server"], "certificate-authority-data": ca},
                    }
                ],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": account}}],
                "current-context": "c",
            }
        )
    )
    return path


def user_kubeconfig(kube: KubeCluster, user: str, groups: list[str]) -> Path:
    """A person's kubeconfig (client certificate), issued by the local control plane's CA."""
    state_dir = kube.kubeconfig.parent
    if not (state_dir / "state.json").exists():
        pytest.skip("issuing users needs the local control plane's CA (not a foreign cluster)")
    return cluster.issue_user_kubeconfig(user, groups, state_dir=state_dir)


def grant_proposal_editing(
    kube: KubeCluster, namespace: str, subjects: list[dict[str, str]]
) -> None:
    """RBAC to edit PromptProposals in the namespace; the admission policy decides the rest."""
    kube.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": [
                    {
                        "apiVersion": "rbac.authorization.k8s.io/v1",
                        "kind": "Role",
                        "metadata": {"name": "proposal-editor"},
                        "rules": [
                            {
                                "apiGroups": ["promptloop.dev"],
                                "resources": ["promptproposals"],
                                "verbs": ["get", "list", "create", "patch", "update"],
                            }
                        ],
                    },
                    {
                        "apiVersion": "rbac.authorization.k8s.io/v1",
                        "kind": "RoleBinding",
                        "metadata": {"name": "proposal-editor"},
                        "roleRef": {
                            "apiGroup": "rbac.authorization.k8s.io",
                            "kind": "Role",
                            "name": "proposal-editor",
                        },
                        "subjects": subjects,
                    },
                ],
            }
        ),
    )


def user_subject(name: str) -> dict[str, str]:
    return {"kind": "User", "name": name, "apiGroup": "rbac.authorization.k8s.io"}


def only_here(namespace: str) -> list[str]:
    """Values that confine the chart's admission policies to one namespace (others share the
    cluster and must not be affected)."""
    selector = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    return ["--set-json", f"approvalPolicy.namespaceSelector={json.dumps(selector)}"]


def release_finalizers(kube: KubeCluster, namespace: str) -> None:
    """Drop kopf's finalizers once no operator runs, so the namespace can actually go away."""
    for kind in ("promptproposals.promptloop.dev", "agentrollouts.promptloop.dev"):
        names = kube.kubectl("get", kind, "-n", namespace, "-o", "name", check=False).stdout
        for name in names.split():
            kube.kubectl(
                "patch",
                name,
                "-n",
                namespace,
                "--type",
                "merge",
                "-p",
                '{"metadata":{"finalizers":null}}',
                check=False,
            )


def get_full(kube: KubeCluster, kind: str, name: str, namespace: str) -> dict[str, Any]:
    """An object with its managedFields (``kubectl get`` hides them unless asked)."""
    out = kube.kubectl(
        "get", kind, name, "-n", namespace, "-o", "json", "--show-managed-fields"
    ).stdout
    obj: dict[str, Any] = json.loads(out)
    assert obj["metadata"].get("managedFields"), f"{kind} {name} has no managedFields"
    return obj


def managed(obj: dict[str, Any]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = obj["metadata"]["managedFields"]
    return entries


def snapshot(obj: dict[str, Any]) -> dict[str, Any]:
    """What nobody but its owner may change: generation, spec, labels, user annotations."""
    annotations = dict(obj["metadata"].get("annotations") or {})
    # Written by the Deployment controller, not by the operator.
    annotations.pop("deployment.kubernetes.io/revision", None)
    return {
        "generation": obj["metadata"].get("generation"),
        "spec": obj["spec"],
        "labels": obj["metadata"].get("labels"),
        "annotations": {k: v for k, v in annotations.items() if not k.startswith("promptloop.dev")},
    }


def assert_operator_wrote_only_metadata_and_status(
    obj: dict[str, Any], operator_managers: set[str]
) -> None:
    """The operator's managers own nothing of the object but metadata and status."""
    for entry in managed(obj):
        fields = set(entry.get("fieldsV1", {}))
        if "f:spec" in fields:
            assert entry["manager"] in USER_MANAGERS, (obj["metadata"]["name"], entry)
        if entry["manager"] in operator_managers and entry.get("subresource", "") != "status":
            assert fields <= {"f:metadata"}, (obj["metadata"]["name"], entry)


@pytest.fixture
def install(helm: Helm, kube: KubeCluster) -> Iterator[Callable[..., Release]]:
    """``install(namespace, *values)``: helm install a fresh release; uninstalled afterwards."""
    releases: list[Release] = []

    def _install(namespace: str, *values: str) -> Release:
        name = f"pl{uuid.uuid4().hex[:6]}"
        proc = helm.run(
            "install",
            name,
            str(CHART),
            "--namespace",
            namespace,
            *values,
            kubeconfig=kube.kubeconfig,
        )
        release = Release(name=name, namespace=namespace, notes=proc.stdout)
        releases.append(release)
        return release

    yield _install
    for release in releases:
        helm.run(
            "uninstall",
            release.name,
            "--namespace",
            release.namespace,
            kubeconfig=kube.kubeconfig,
            check=False,
        )


@pytest.fixture
def other_namespace(kube: KubeCluster) -> Iterator[str]:
    """A second namespace (the release's, when the operator watches another one)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


def run_canary_to_awaiting(scenario: Scenario, propose: Callable[[], None]) -> None:
    """Operator up → Stable → ``propose()`` → Rendered → the challenger registers → held."""
    scenario.start_operator()
    scenario.wait_rollout(lambda r: r.get("status", {}).get("phase") == "Stable", "Stable")
    propose()
    scenario.wait_proposal_phase("classifier-2-1-0", "Rendered", timeout=30)
    assert scenario.agents is not None
    scenario.agents.register("2.1.0", 0.02)
    scenario.wait_proposal_phase("classifier-2-1-0", "AwaitingApproval", timeout=90)


# -- the chart through a full canary -------------------------------------------------------------


def test_chart_install_runs_a_canary_to_promoted_under_its_own_rbac(
    install: Callable[..., Release],
    kube: KubeCluster,
    namespace: str,
    agentfield: AgentFieldHandle,
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    approvers = f"approvers-{uuid.uuid4().hex[:6]}"
    release = install(
        namespace,
        "--set",
        "approvalPolicy.enabled=true",
        "--set",
        f"approvalPolicy.groups[0]={approvers}",
        *only_here(namespace),
    )
    installed = time.monotonic() - started
    assert (
        f"kubectl -n <namespace> patch promptproposal <name> --type merge -p '{APPROVE}'"
        in release.notes
    )
    assert "written to the annotation promptloop.dev/approved-by" in release.notes
    kube.kubectl("get", "clusterrole", f"{release.fullname}-operator")
    operator_kc = token_kubeconfig(
        kube, f"{release.fullname}-operator", namespace, tmp_path / "operator.kubeconfig"
    )
    approver = f"alice-{uuid.uuid4().hex[:6]}"
    alice = user_kubeconfig(kube, approver, [approvers])
    grant_proposal_editing(kube, namespace, [user_subject(approver)])

    scenario = Scenario(kube, namespace, agentfield, operator_kc, tmp_path)
    try:
        scenario.setup(stable_failure_rate=0.30)
        # A second rollout whose token Secret does not exist: Invalid (and Degraded in Argo CD).
        broken = json.loads(json.dumps(scenario.rollout()))
        broken = {
            "apiVersion": broken["apiVersion"],
            "kind": "AgentRollout",
            "metadata": {"name": "broken"},
            "spec": {
                **broken["spec"],
                "agent": {"nodeId": f"{scenario.node_id}-broken"},
                "router": {
                    "agentfield": {
                        "url": agentfield.url,
                        "tokenSecretRef": {"name": "no-such-secret", "key": "token"},
                    }
                },
            },
        }
        scenario.apply(broken)
        user_before = get_full(kube, "deployment", "classifier", namespace)
        rollout_before = get_full(kube, "agentrollout", "classifier", namespace)
        run_canary_to_awaiting(
            scenario, lambda: scenario.propose("classifier-2-1-0", "2.1.0", BETTER)
        )
        invalid = scenario.get("agentrollout", "broken")["status"]
        assert invalid["phase"] == "Invalid" and "no-such-secret" in invalid["message"]

        scenario.kube.kubectl(
            "patch",
            "pp",
            "classifier-2-1-0",
            "-n",
            namespace,
            "--type",
            "merge",
            "-p",
            APPROVE,
            kubeconfig=alice,
        )
        promoted = scenario.wait_proposal_phase("classifier-2-1-0", "Promoted", timeout=120)
        elapsed = time.monotonic() - started
        print(f"\nchart: helm install {installed:.1f}s; install → Promoted {elapsed:.1f}s")
        assert scenario.rollout()["status"]["stableVersion"] == "2.1.0"
        # The platform's record of who approved (MutatingAdmissionPolicy).
        assert promoted["metadata"]["annotations"]["promptloop.dev/approved-by"] == approver
        assert promoted["status"]["approval"]["approvedBy"] == approver

        # Nothing the operator does not own was written.
        challenger = get_full(kube, "deployment", promoted["status"]["deploymentName"], namespace)
        operator_managers = {
            e["manager"] for e in managed(challenger) if e.get("subresource", "") != "status"
        }
        assert operator_managers, "the challenger names the operator's field manager"
        user_after = get_full(kube, "deployment", "classifier", namespace)
        assert snapshot(user_after) == snapshot(user_before)
        assert not operator_managers & {e["manager"] for e in managed(user_after)}
        new_entries = [e for e in managed(user_after) if e not in managed(user_before)]
        assert all(e.get("subresource") == "status" for e in new_entries), new_entries
        rollout_after = get_full(kube, "agentrollout", "classifier", namespace)
        assert snapshot(rollout_after) == snapshot(rollout_before)
        assert_operator_wrote_only_metadata_and_status(rollout_after, operator_managers)
        proposal_after = get_full(kube, "promptproposal", "classifier-2-1-0", namespace)
        assert_operator_wrote_only_metadata_and_status(proposal_after, operator_managers)
    finally:
        scenario.close()
        release_finalizers(kube, namespace)
    for process in scenario.operators:
        assert agentfield.token not in process.log_text(), "connector token leaked into the log"


def test_watch_namespace_chart_and_approval_by_a_git_commit(
    install: Callable[..., Release],
    kube: KubeCluster,
    namespace: str,
    other_namespace: str,
    agentfield: AgentFieldHandle,
    tmp_path: Path,
) -> None:
    # The release (operator, accounts) in one namespace, the agent in the watched one.
    release = install(other_namespace, "--set", f"watchNamespace={namespace}")
    assert f"watches only: {namespace}" in release.notes
    missing = kube.kubectl("get", "clusterrole", f"{release.fullname}-operator", check=False)
    assert "NotFound" in missing.stderr, "watchNamespace must not create cluster-wide RBAC"
    account = f"system:serviceaccount:{other_namespace}:{release.fullname}-operator"
    for where, expected in ((namespace, "yes"), ("default", "no"), (other_namespace, "no")):
        can = kube.kubectl(
            "auth", "can-i", "get", "secrets", "-n", where, "--as", account, check=False
        )
        assert can.stdout.strip() == expected, (where, can.stdout, can.stderr)
    operator_kc = token_kubeconfig(
        kube, f"{release.fullname}-operator", other_namespace, tmp_path / "operator.kubeconfig"
    )
    scenario = Scenario(kube, namespace, agentfield, operator_kc, tmp_path)
    # The proposal as it would sit in a git repository synced by Argo CD.
    spec: dict[str, Any] = {
        "rolloutRef": {"name": "classifier"},
        "version": "2.1.0",
        "systemPrompt": BETTER,
        "rationale": "refunds are billing",
    }
    proposal = {
        "apiVersion": "promptloop.dev/v1alpha1",
        "kind": "PromptProposal",
        "metadata": {"name": "classifier-2-1-0", "namespace": namespace},
        "spec": spec,
    }
    in_git = tmp_path / "classifier-2-1-0.yaml"

    def sync() -> None:
        kube.kubectl("apply", "-f", str(in_git))

    try:
        scenario.setup(stable_failure_rate=0.30)
        in_git.write_text(yaml.safe_dump(proposal))
        run_canary_to_awaiting(scenario, sync)
        # The commit: approved: true in the file, then the sync (Argo CD applies it).
        spec["approved"] = True
        in_git.write_text(yaml.safe_dump(proposal))
        sync()
        promoted = scenario.wait_proposal_phase("classifier-2-1-0", "Promoted", timeout=120)
        assert promoted["status"]["approval"]["approvedBy"] == "kubectl-client-side-apply"
        # A later sync of the same commit changes nothing (no drift, nothing to self-heal).
        again = kube.kubectl("apply", "-f", str(in_git)).stdout
        assert "unchanged" in again
    finally:
        scenario.close()
        release_finalizers(kube, namespace)


def test_patch_approval_and_a_git_sync(kube: KubeCluster, namespace: str) -> None:
    """What a self-healing sync does to an approval made with kubectl patch (docs/gitops.md).

    ``kubectl apply`` stands in for Argo CD's client-side apply sync: git without the field
    leaves the approval alone; git holding ``approved: false`` reverts it (which the operator
    treats as a withdrawn approval) unless Argo CD ignores /spec/approved and respects that.
    """
    base = {
        "apiVersion": "promptloop.dev/v1alpha1",
        "kind": "PromptProposal",
        "metadata": {"name": "p", "namespace": namespace},
        "spec": {"rolloutRef": {"name": "classifier"}, "version": "2.1.0", "systemPrompt": "x"},
    }

    def sync(obj: dict[str, Any]) -> dict[str, Any]:
        kube.kubectl("apply", "-f", "-", stdin=json.dumps(obj))
        out = kube.kubectl("get", "pp", "p", "-n", namespace, "-o", "json").stdout
        live: dict[str, Any] = json.loads(out)
        return live

    sync(base)
    kube.kubectl("patch", "pp", "p", "-n", namespace, "--type", "merge", "-p", APPROVE)
    assert sync(base)["spec"]["approved"] is True
    explicit = json.loads(json.dumps(base))
    explicit["spec"]["approved"] = False
    kube.kubectl("delete", "pp", "p", "-n", namespace)
    sync(explicit)
    kube.kubectl("patch", "pp", "p", "-n", namespace, "--type", "merge", "-p", APPROVE)
    assert sync(explicit)["spec"]["approved"] is False


# -- the improver's account ----------------------------------------------------------------------


def test_improver_account_proposes_and_can_do_nothing_else(
    install: Callable[..., Release],
    kube: KubeCluster,
    namespace: str,
    agentfield: AgentFieldHandle,
    tmp_path: Path,
) -> None:
    release = install(namespace)
    improver = token_kubeconfig(
        kube, f"{release.fullname}-improver", namespace, tmp_path / "improver.kubeconfig"
    )
    scenario = Scenario(kube, namespace, agentfield, improver, tmp_path)
    try:
        scenario.setup()
        # What a scheduled run does: read the rollout and the stable prompt, propose.
        tickets = ROOT / "examples" / "tickets" / "tickets.jsonl"
        records = []
        for line in tickets.read_text(encoding="utf-8").splitlines():
            ticket = json.loads(line)
            predicted = classify(BASE_PROMPT, ticket["text"])
            records.append(
                {
                    "text": ticket["text"],
                    "predicted": predicted,
                    "expected": ticket["label"],
                    "version": "2.0.0",
                    "passed": predicted == ticket["label"],
                }
            )
        failures = tmp_path / "failures.jsonl"
        failures.write_text("".join(json.dumps(r) + "\n" for r in records))
        with run_in_thread() as sim:
            proc = subprocess.run(
                [
                    PROMPTLOOP,
                    "improve",
                    "--rollout",
                    "classifier",
                    "-n",
                    namespace,
                    "--file",
                    str(failures),
                    "--apply",
                    "--base-url",
                    sim.base_url,
                    "--model",
                    "promptloop-simulator",
                    "--retry-backoff",
                    "0",
                ],
                env={
                    "KUBECONFIG": str(improver),
                    "OPENAI_API_KEY": "sk-sim",
                    "PATH": "/usr/bin:/bin",
                },
                capture_output=True,
                text=True,
                timeout=120,
            )
        assert proc.returncode == 0, proc.stderr
        [name] = kube.kubectl("get", "pp", "-n", namespace, "-o", "name").stdout.split()
        created = json.loads(kube.kubectl("get", name, "-n", namespace, "-o", "json").stdout)
        assert "approved" not in created["spec"]

        def as_improver(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
            return kube.kubectl(
                *args, "-n", namespace, stdin=stdin, kubeconfig=improver, check=False
            )

        refused = {
            "approve": as_improver("patch", name, "--type", "merge", "-p", APPROVE),
            "delete a proposal": as_improver("delete", name),
            "write proposal status": as_improver(
                "patch",
                name,
                "--subresource",
                "status",
                "--type",
                "merge",
                "-p",
                '{"status":{"phase":"Promoted"}}',
            ),
            "patch a Deployment": as_improver(
                "patch",
                "deployment",
                "classifier",
                "--type",
                "merge",
                "-p",
                '{"spec":{"replicas":0}}',
            ),
            "scale a Deployment": as_improver("scale", "deployment", "classifier", "--replicas=0"),
            "create a Deployment": as_improver(
                "create", "deployment", "rogue", "--image", "example.com/rogue:1"
            ),
            "delete a Deployment": as_improver("delete", "deployment", "classifier"),
            "read a Secret": as_improver("get", "secret", "agentfield-connector"),
            "patch the rollout": as_improver(
                "patch",
                "agentrollout",
                "classifier",
                "--type",
                "merge",
                "-p",
                '{"spec":{"canary":{"ceiling":100}}}',
            ),
        }
        for what, result in refused.items():
            # kubectl prints "Error from server (Forbidden)" or "... is forbidden: User ...".
            assert result.returncode != 0, what
            assert "forbidden" in result.stderr.lower(), (what, result.stderr)
        # create is create: admission refuses a pre-approved proposal from the improver.
        preapproved = {
            "apiVersion": "promptloop.dev/v1alpha1",
            "kind": "PromptProposal",
            "metadata": {"name": "sneaky"},
            "spec": {
                "rolloutRef": {"name": "classifier"},
                "version": "9.0.0",
                "systemPrompt": "x",
                "approved": True,
            },
        }
        body = json.dumps(preapproved)
        # Policies reach admission within seconds of their creation; probe without side effects.
        wait_for(
            lambda: (
                "proposes and never approves"
                in as_improver("create", "--dry-run=server", "-f", "-", stdin=body).stderr
            ),
            timeout=30,
            what="the improver-cannot-approve policy to take effect",
            interval=0.5,
        )
        denied = as_improver("create", "-f", "-", stdin=body)
        assert denied.returncode != 0 and "Forbidden" in denied.stderr, denied.stderr
        assert "proposes and never approves" in denied.stderr
    finally:
        scenario.close()


# -- who may approve -----------------------------------------------------------------------------


def test_only_the_approvers_group_may_approve(
    install: Callable[..., Release],
    kube: KubeCluster,
    namespace: str,
    tmp_path: Path,
) -> None:
    approvers = f"approvers-{uuid.uuid4().hex[:6]}"
    suffix = uuid.uuid4().hex[:6]
    alice_name, mallory_name, bot = f"alice-{suffix}", f"mallory-{suffix}", "gitops-bot"
    bot_user = f"system:serviceaccount:{namespace}:{bot}"
    install(
        namespace,
        "--set",
        "approvalPolicy.enabled=true",
        "--set",
        f"approvalPolicy.groups[0]={approvers}",
        "--set",
        f"approvalPolicy.users[0]={bot_user}",
        *only_here(namespace),
    )
    alice = user_kubeconfig(kube, alice_name, [approvers, "developers"])
    mallory = user_kubeconfig(kube, mallory_name, ["developers"])
    kube.kubectl("create", "serviceaccount", bot, "-n", namespace)
    grant_proposal_editing(
        kube,
        namespace,
        [
            user_subject(alice_name),
            user_subject(mallory_name),
            {"kind": "ServiceAccount", "name": bot, "namespace": namespace},
        ],
    )
    gitops = token_kubeconfig(kube, bot, namespace, tmp_path / "gitops.kubeconfig")

    def proposal(name: str, approved: bool | None = None) -> str:
        spec: dict[str, Any] = {
            "rolloutRef": {"name": "classifier"},
            "version": f"2.{name.removeprefix('p')}.0",
            "systemPrompt": "x",
        }
        if approved is not None:
            spec["approved"] = approved
        return json.dumps(
            {
                "apiVersion": "promptloop.dev/v1alpha1",
                "kind": "PromptProposal",
                "metadata": {"name": name, "namespace": namespace},
                "spec": spec,
            }
        )

    def run(
        kubeconfig: Path, *args: str, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return kube.kubectl(*args, "-n", namespace, stdin=stdin, kubeconfig=kubeconfig, check=False)

    approve = ("patch", "pp", "p1", "--type", "merge", "-p", APPROVE)
    kube.kubectl("apply", "-f", "-", stdin=proposal("p1"))
    # Policies reach the API server's admission within seconds; probe with server-side dry runs.
    wait_for(
        lambda: "denied request" in run(mallory, *approve, "--dry-run=server").stderr,
        timeout=30,
        what="the approval policy to take effect",
        interval=0.5,
    )
    wait_for(
        lambda: (
            "promptloop.dev/approved-by"
            in run(alice, *approve, "--dry-run=server", "-o", "json").stdout
        ),
        timeout=30,
        what="the approved-by stamp to take effect",
        interval=0.5,
    )

    # Someone outside the group: a clear denial, and nothing changes.
    refused = run(mallory, *approve)
    assert refused.returncode != 0
    assert (
        f"only members of {approvers} (or {bot_user}) may set or change spec.approved on a "
        f"PromptProposal; {mallory_name} is not one of them" in refused.stderr
    ), refused.stderr
    assert "approved" not in json.loads(run(alice, "get", "pp", "p1", "-o", "json").stdout)["spec"]
    # ... nor by creating it approved, nor by forging the record.
    created = run(mallory, "create", "-f", "-", stdin=proposal("p2", approved=True))
    assert created.returncode != 0 and "is not one of them" in created.stderr
    forged = run(mallory, "annotate", "pp", "p1", f"promptloop.dev/approved-by={alice_name}")
    assert forged.returncode != 0
    assert f"can only be set to your own user name ({mallory_name})" in forged.stderr
    # Everything else stays open to them: a label, an unapproved proposal.
    assert run(mallory, "label", "pp", "p1", "reviewed=yes").returncode == 0
    assert run(mallory, "create", "-f", "-", stdin=proposal("p3", approved=False)).returncode == 0

    # Admission has no superuser: a cluster-admin outside the group is refused as well.
    admin = kube.kubectl(*approve, "-n", namespace, "--dry-run=server", check=False)
    assert admin.returncode != 0 and "may set or change spec.approved" in admin.stderr

    # A member of the group approves; the platform records who.
    assert run(alice, *approve).returncode == 0
    live = json.loads(run(alice, "get", "pp", "p1", "-o", "json").stdout)
    assert live["spec"]["approved"] is True
    assert live["metadata"]["annotations"]["promptloop.dev/approved-by"] == alice_name
    # Withdrawing is a change too: only approvers.
    withdraw = ("patch", "pp", "p1", "--type", "merge", "-p", '{"spec":{"approved":false}}')
    assert run(mallory, *withdraw).returncode != 0
    # The GitOps writer (Argo CD's controller, here a ServiceAccount) is allowed by name.
    synced = run(gitops, "apply", "-f", "-", stdin=proposal("p4", approved=True))
    assert synced.returncode == 0, synced.stderr
    p4 = json.loads(run(alice, "get", "pp", "p4", "-o", "json").stdout)
    assert p4["metadata"]["annotations"]["promptloop.dev/approved-by"] == bot_user

    # The other way to approve, the rollout's approve-canary annotation (its Argo CD action),
    # is gated and stamped the same way; rejecting through the rollout stays open.
    rollout = yaml.safe_load((ROOT / "examples" / "samples" / "agentrollout.yaml").read_text())
    kube.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(rollout))
    kube.kubectl(
        "create",
        "role",
        "rollout-annotator",
        "-n",
        namespace,
        "--verb=get,patch",
        "--resource=agentrollouts.promptloop.dev",
    )
    kube.kubectl(
        "create",
        "rolebinding",
        "rollout-annotator",
        "-n",
        namespace,
        "--role=rollout-annotator",
        f"--user={alice_name}",
        f"--user={mallory_name}",
    )
    name = rollout["metadata"]["name"]
    canary = f"promptloop.dev/approve-canary=p1@{'d' * 64}"
    refused = run(mallory, "annotate", "ar", name, canary)
    assert refused.returncode != 0
    assert (
        f"may approve a canary with promptloop.dev/approve-canary; {mallory_name} is not one"
        in refused.stderr
    ), refused.stderr
    rejecting = run(mallory, "annotate", "ar", name, f"promptloop.dev/reject-canary=p1@{'d' * 64}")
    assert rejecting.returncode == 0, rejecting.stderr
    assert run(alice, "annotate", "ar", name, canary).returncode == 0
    stamped = json.loads(run(alice, "get", "ar", name, "-o", "json").stdout)
    assert stamped["metadata"]["annotations"]["promptloop.dev/approved-by"] == alice_name


# -- manifests/ against the real API server ------------------------------------------------------


@pytest.mark.parametrize("path", ["manifests", "manifests/improver", "manifests/approval-policy"])
def test_kustomizations_are_accepted_by_the_api_server(kube: KubeCluster, path: str) -> None:
    # A server-side dry run: full validation and admission, nothing persisted, no name taken.
    proc = kube.kubectl("apply", "--dry-run=server", "-k", str(ROOT / path), check=False)
    assert proc.returncode == 0, proc.stderr


def test_rendered_chart_is_accepted_by_the_api_server(helm: Helm, kube: KubeCluster) -> None:
    rendered = helm.run(
        "template",
        "promptloop",
        str(CHART),
        "--namespace",
        "promptloop-system",
        "--set",
        "improver.enabled=true",
        "--set",
        "improver.targets[0].rollout=classifier",
        "--set",
        "improver.targets[0].namespace=default",
        "--set",
        "approvalPolicy.enabled=true",
        "--api-versions",
        "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy",
    ).stdout
    kube.kubectl("create", "namespace", "promptloop-system", check=False)
    proc = kube.kubectl("apply", "--dry-run=server", "-f", "-", stdin=rendered, check=False)
    assert proc.returncode == 0, proc.stderr
