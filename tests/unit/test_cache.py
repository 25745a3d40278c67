"""The watch caches' store rules, the cached client's no-request paths, and the Lease algorithm.

The list/watch loop itself runs against the real API server in
tests/integration/test_scale_and_failover.py; here the rules a step-twice or a lost approval
would hinge on: newer revisions win, writes go through, kopf's view is taken, a relist drops what
was deleted, Secrets keep only their data and never show it, and of two candidates exactly one
leads.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from promptloop.k8s.cache import (
    CONFIG_MAPS,
    DEPLOYMENTS,
    PROPOSALS,
    ROLLOUTS,
    SECRETS,
    Caches,
    Informer,
    _Gone,
    newer_or_same,
)
from promptloop.k8s.cached import CachedKube, json_copy
from promptloop.k8s.client import Conflict, Kube, NotFound
from promptloop.k8s.lease import ElectionConfig, LeaderElector, LeadershipLost
from promptloop.rollout.canary_request import canary_approver


def obj(name: str, rv: str | None, namespace: str = "ns", **extra: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if rv is not None:
        metadata["resourceVersion"] = rv
    return {"metadata": metadata, **extra}


class NoNetwork:
    """An ApiClient stand-in that fails the test if anything is sent."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected API use: {name}")


def caches() -> Caches:
    return Caches(NoNetwork(), ["ns"])  # type: ignore[arg-type]


# -- store rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "current", "expected"),
    [
        ("10", None, True),
        ("10", "9", True),
        ("10", "10", True),
        ("9", "10", False),
        ("100", "99", True),  # numeric, not lexical
        ("opaque", "10", True),
        ("10", "opaque", True),
    ],
)
def test_newer_or_same(candidate: str, current: str | None, expected: bool) -> None:
    assert newer_or_same(obj("a", candidate), obj("a", current) if current else None) is expected


def test_an_older_event_never_replaces_a_write_through() -> None:
    informer = Informer(NoNetwork(), ROLLOUTS, "ns")  # type: ignore[arg-type]
    assert informer.put(obj("r", "20", status={"weight": 30}))
    # The watch delivers the event of an earlier write after our own write's response.
    informer._event({"type": "MODIFIED", "object": obj("r", "19", status={"weight": 10})}, "19")
    assert informer.get("ns", "r")["status"] == {"weight": 30}
    informer._event({"type": "MODIFIED", "object": obj("r", "21", status={"weight": 50})}, "20")
    assert informer.get("ns", "r")["status"] == {"weight": 50}
    # A stale DELETED cannot remove a newer object either; a current one does.
    informer._event({"type": "DELETED", "object": obj("r", "20")}, "21")
    assert informer.get("ns", "r") is not None
    informer._event({"type": "DELETED", "object": obj("r", "22")}, "21")
    assert informer.get("ns", "r") is None


def test_watch_error_410_means_relist_and_others_fail() -> None:
    informer = Informer(NoNetwork(), ROLLOUTS, "ns")  # type: ignore[arg-type]
    with pytest.raises(_Gone):
        informer._event({"type": "ERROR", "object": {"code": 410, "reason": "Expired"}}, "1")
    with pytest.raises(RuntimeError):
        informer._event({"type": "ERROR", "object": {"code": 500, "reason": "x"}}, "1")
    assert informer._event({"type": "BOOKMARK", "object": obj("", "77")}, "1") == "77"


def test_bodies_lose_managed_fields_but_proposals_and_rollouts_keep_who_approved() -> None:
    managed = {"managedFields": [{"manager": "kubectl-patch"}]}
    for kind in (DEPLOYMENTS, CONFIG_MAPS):
        stored = kind.transform({"metadata": {"name": "x", **managed}})
        assert "managedFields" not in stored["metadata"]
    # Who approved is read from a proposal's managedFields (spec.approved) or a rollout's
    # (the approve annotation Argo CD's action sets); every other entry and field is dropped.
    status_writer = {
        "manager": "promptloop",
        "operation": "Update",
        "subresource": "status",
        "time": "2026-12-03T10:00:00Z",
        "fieldsV1": {"f:status": {"f:phase": {}, "f:conditions": {".": {}}}},
    }
    annotator = {
        "manager": "argocd-server",
        "operation": "Update",
        "time": "2026-12-03T10:01:00Z",
        "fieldsV1": {
            "f:metadata": {
                "f:annotations": {"f:promptloop.dev/approve-canary": {}, "f:other": {}},
                "f:labels": {"f:a": {}},
            },
            "f:spec": {"f:approved": {}},
        },
    }
    body = {"metadata": {"name": "x", "managedFields": [status_writer, annotator]}}
    rollout = ROLLOUTS.transform(body)["metadata"]["managedFields"]
    assert rollout == [
        {
            "manager": "argocd-server",
            "operation": "Update",
            "time": "2026-12-03T10:01:00Z",
            "fieldsV1": {"f:metadata": {"f:annotations": {"f:promptloop.dev/approve-canary": {}}}},
        }
    ]
    proposal = PROPOSALS.transform(body)["metadata"]["managedFields"]
    assert [e["fieldsV1"] for e in proposal] == [{"f:spec": {"f:approved": {}}}]
    # What the approvers read still answers the same from the trimmed bodies.
    assert canary_approver({}, rollout) == "argocd-server"
    assert canary_approver({}, [status_writer]) is None
    # The body given is not changed: a write-through caller gets back what the server said.
    assert body["metadata"]["managedFields"] == [status_writer, annotator]


def test_secrets_keep_only_their_data_and_never_show_it() -> None:
    token = "s3cr3t-token-value"
    encoded = base64.b64encode(token.encode()).decode()
    kept = SECRETS.transform(
        {
            "metadata": {
                "name": "t",
                "namespace": "ns",
                "resourceVersion": "5",
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": encoded},
                "managedFields": [{"manager": "kubectl"}],
            },
            "data": {"token": encoded},
            "type": "Opaque",
        }
    )
    assert kept == {
        "metadata": {"name": "t", "namespace": "ns", "resourceVersion": "5"},
        "data": {"token": encoded},
    }
    informer = Informer(NoNetwork(), SECRETS, "ns", field_selector="metadata.name=t")  # type: ignore[arg-type]
    informer.put(kept)
    assert encoded not in repr(informer) and token not in repr(informer)
    assert token not in repr(caches())


async def test_secret_value_is_read_from_the_watch_and_rotation_is_seen() -> None:
    store = caches()
    informer = Informer(NoNetwork(), SECRETS, "ns", field_selector="metadata.name=t")  # type: ignore[arg-type]
    store._secrets[("ns", "t")] = informer
    informer._task = object()  # type: ignore[assignment]  # "started": no network here
    informer.synced.set()
    informer.put(obj("t", "1", data={"token": base64.b64encode(b"one").decode()}))
    assert await store.secret_value("ns", "t", "token") == "one"
    informer._event(
        {"type": "MODIFIED", "object": obj("t", "2", data={"token": base64.b64encode(b"two")})},
        "1",
    )
    assert await store.secret_value("ns", "t", "token") == "two"
    assert await store.secret_value("ns", "t", "other") is None


def test_proposals_are_indexed_by_rollout_and_follow_deletes_and_relists() -> None:
    store = caches()
    informer = store._kinds[PROPOSALS.plural]["ns"]
    informer.put(obj("p1", "1", spec={"rolloutRef": {"name": "r1"}}))
    informer.put(obj("p2", "2", spec={"rolloutRef": {"name": "r1"}}))
    informer.put(obj("p3", "3", spec={"rolloutRef": {"name": "r2"}}))
    assert sorted(p["metadata"]["name"] for p in store.proposals("ns", "r1")) == ["p1", "p2"]
    assert [p["metadata"]["name"] for p in store.proposals("ns", "r2")] == ["p3"]
    informer._event({"type": "DELETED", "object": obj("p1", "4")}, "3")
    assert [p["metadata"]["name"] for p in store.proposals("ns", "r1")] == ["p2"]
    informer._event(
        {"type": "MODIFIED", "object": obj("p2", "5", spec={"rolloutRef": {"name": "r1"}})}, "4"
    )
    assert store.proposals("ns", "r1")[0]["metadata"]["resourceVersion"] == "5"
    assert len(store.proposals("ns")) == 2


def test_observe_takes_kopfs_newer_view_and_ignores_secrets() -> None:
    store = caches()
    store._kinds[PROPOSALS.plural]["ns"].put(
        obj("p", "7", spec={"rolloutRef": {"name": "r"}, "approved": False})
    )
    store.observe(
        PROPOSALS.plural, obj("p", "8", spec={"rolloutRef": {"name": "r"}, "approved": True})
    )
    assert store.proposals("ns", "r")[0]["spec"]["approved"] is True
    store.observe(
        PROPOSALS.plural, obj("p", "6", spec={"rolloutRef": {"name": "r"}, "approved": False})
    )
    assert store.proposals("ns", "r")[0]["spec"]["approved"] is True
    store.observe(SECRETS.plural, obj("t", "1", data={"token": "eA=="}))
    assert store._secrets == {}


# -- the cached client ---------------------------------------------------------------------------


class Recorder(Kube):
    """A Kube whose network methods record calls instead of sending them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        self.calls.append(("patch_status", name))
        return obj(name, "99", status=status)

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("apply", manifest["metadata"]["name"]))
        return {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": "50"}}

    async def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        self.calls.append(("scale", name, str(replicas)))


def cached_kube(recorder: Recorder) -> CachedKube:
    kube = CachedKube.__new__(CachedKube)
    kube.caches = caches()
    kube._applied = {}
    kube.api_client = NoNetwork()  # type: ignore[assignment]
    return kube


async def test_cached_reads_make_no_request_and_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    kube = cached_kube(Recorder())
    kube.caches._kinds[ROLLOUTS.plural]["ns"].put(obj("r", "3", status={"phase": "Stable"}))
    kube.caches._kinds[CONFIG_MAPS.plural]["ns"].put(obj("cm", "3", data={"prompt": "hi"}))
    got = await kube.get_rollout("ns", "r")
    got["status"]["phase"] = "Mutated"
    assert (await kube.get_rollout("ns", "r"))["status"]["phase"] == "Stable"
    assert await kube.get_config_map_value("ns", "cm", "prompt") == "hi"
    assert await kube.get_config_map_value("ns", "nope", "prompt") is None
    with pytest.raises(NotFound):
        await kube.get_rollout("ns", "missing")
    with pytest.raises(NotFound):
        await kube.get_deployment("ns", "missing")


def test_json_copy_is_deep_and_equal_and_falls_back_for_other_types() -> None:
    class Opaque:
        def __init__(self) -> None:
            self.items = [1]

    original: dict[str, Any] = {
        "metadata": {"labels": {"a": "b"}, "generation": 3, "deletionTimestamp": None},
        "status": {"conditions": [{"type": "Ready", "status": "True"}], "weight": 0.5},
        "flags": [True, False],
        "opaque": Opaque(),
    }
    copied = json_copy(original)
    assert {k: v for k, v in copied.items() if k != "opaque"} == {
        k: v for k, v in original.items() if k != "opaque"
    }
    copied["metadata"]["labels"]["a"] = "changed"
    copied["status"]["conditions"][0]["status"] = "False"
    copied["flags"].append(None)
    copied["opaque"].items.append(2)
    assert original["metadata"]["labels"] == {"a": "b"}
    assert original["status"]["conditions"][0]["status"] == "True"
    assert original["flags"] == [True, False]
    assert original["opaque"].items == [1]  # not JSON: deep-copied the slow way, still a copy


async def test_writes_go_through_and_unchanged_writes_are_not_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = Recorder()
    kube = cached_kube(recorder)
    # The network half of each write is Kube's; route it to the recorder.
    monkeypatch.setattr(Kube, "patch_status", Recorder.patch_status)
    monkeypatch.setattr(Kube, "apply", Recorder.apply)
    monkeypatch.setattr(Kube, "scale_deployment", Recorder.scale_deployment)
    kube.calls = recorder.calls  # type: ignore[attr-defined]
    kube.caches._kinds[ROLLOUTS.plural]["ns"].put(obj("r", "3", status={"phase": "Stable"}))
    await kube.patch_status("agentrollouts", "ns", "r", {"phase": "Progressing"})
    assert (await kube.get_rollout("ns", "r"))["status"] == {"phase": "Progressing"}

    manifest = {"kind": "Deployment", "metadata": {"name": "d", "namespace": "ns"}, "spec": {}}
    await kube.apply(manifest)
    await kube.apply(manifest)  # identical, and the cache holds it: not sent again
    assert [c for c in recorder.calls if c[0] == "apply"] == [("apply", "d")]
    kube.caches._kinds[DEPLOYMENTS.plural]["ns"].put(obj("d", "60", spec={"replicas": 0}))
    await kube.scale_deployment("ns", "d", 0)  # already at zero: nothing sent
    await kube.scale_deployment("ns", "d", 1)
    assert [c for c in recorder.calls if c[0] == "scale"] == [("scale", "d", "1")]


# -- leader election -------------------------------------------------------------------------------


class LeaseServer:
    """The API server's Lease semantics: create once (409 after), replace only at the same
    resourceVersion (409 otherwise)."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.revision = 0

    def kube(self) -> Kube:
        server = self

        class LeaseKube(Kube):
            def __init__(self) -> None:
                pass

            async def request(
                self, method: str, path: str, body: dict[str, Any] | None, what: str
            ) -> dict[str, Any]:
                return server.handle(method, body)

        return LeaseKube()

    def handle(self, method: str, body: dict[str, Any] | None) -> dict[str, Any]:
        import copy

        if method == "GET":
            if self.lease is None:
                raise NotFound("lease", status=404)
            return copy.deepcopy(self.lease)
        assert body is not None
        if method == "POST" and self.lease is not None:
            raise Conflict("exists", status=409)
        if method == "PUT":
            assert self.lease is not None
            if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
                raise Conflict("changed", status=409)
        self.revision += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.revision)
        return copy.deepcopy(self.lease)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_one_leader_standby_takes_over_after_expiry_and_at_once_after_release() -> None:
    server, clock = LeaseServer(), Clock()
    config = {"namespace": "ns", "name": "op", "lease_duration": 15, "renew_deadline": 10}
    a = LeaderElector(server.kube(), ElectionConfig(identity="a", **config), clock=clock)  # type: ignore[arg-type]
    b = LeaderElector(server.kube(), ElectionConfig(identity="b", **config), clock=clock)  # type: ignore[arg-type]
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    clock.now += 10
    assert await a.try_acquire_or_renew()  # renewed: the record changed
    assert not await b.try_acquire_or_renew()  # b sees the renewal now (its own clock)
    clock.now += 14
    assert not await b.try_acquire_or_renew()  # 14 s since b saw it change: still valid
    clock.now += 2  # a died; 16 s since b last saw the record change
    assert await b.try_acquire_or_renew()
    assert server.lease is not None
    assert server.lease["spec"]["holderIdentity"] == "b"
    assert server.lease["spec"]["leaseTransitions"] == 1
    assert not await a.try_acquire_or_renew()  # the old leader cannot renew any more
    b.is_leader = True
    await b.release()
    assert server.lease["spec"]["holderIdentity"] is None
    assert await a.try_acquire_or_renew()  # released: no need to wait out the duration


async def test_a_stale_read_loses_the_race() -> None:
    server, clock = LeaseServer(), Clock()
    config = {"namespace": "ns", "name": "op"}
    a = LeaderElector(server.kube(), ElectionConfig(identity="a", **config), clock=clock)  # type: ignore[arg-type]
    assert await a.try_acquire_or_renew()
    stale = server.handle("GET", None)
    assert await a.try_acquire_or_renew()
    stale["spec"]["holderIdentity"] = "b"
    with pytest.raises(Conflict):
        server.handle("PUT", stale)


async def test_hold_raises_when_renewal_is_overdue() -> None:
    server, clock = LeaseServer(), Clock()
    config = ElectionConfig(
        namespace="ns", name="op", identity="a", renew_deadline=10, retry_period=0
    )
    a = LeaderElector(server.kube(), config, clock=clock)
    assert await a.try_acquire_or_renew()
    # Another process took the Lease over (a was partitioned); a cannot renew any more.
    assert server.lease is not None
    server.lease["spec"]["holderIdentity"] = "b"
    server.revision += 1
    server.lease["metadata"]["resourceVersion"] = str(server.revision)
    clock.now += 11
    with pytest.raises(LeadershipLost):
        await a.hold()
    assert not a.is_leader
