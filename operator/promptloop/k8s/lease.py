"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go's ``leaderelection`` does it.

Why our own Lease rather than kopf's peering: peering is not leader election. It needs kopf's
own ``KopfPeering`` CRDs (not a Lease that ``kubectl get lease`` and every Kubernetes tool
understand), operators of equal priority *all* pause (zalando-incubator/kopf#51), and a paused
kopf stops its watch streams (``kopf/_cogs/clients/watching.py``, ``streaming_block``: "prevents
both watching and listing while the operator is paused") and its daemons, so a standby would
take over with cold caches and a fresh LIST of everything. Here the standby runs its informers
the whole time and starts kopf only once it holds the Lease.

The algorithm is client-go's (``tools/leaderelection/leaderelection.go``):

- a candidate takes the Lease when it does not exist, is released (no holder), or has not been
  renewed for ``leaseDurationSeconds`` **as observed by this process's own clock** since it last
  saw the record change (no trust in other nodes' clocks);
- every write is a ``replace`` carrying the ``resourceVersion`` read, so of two candidates that
  race only one wins (the other gets 409 Conflict);
- the leader renews every ``retry_period``; when it has not managed to renew for
  ``renew_deadline`` (< lease duration) it must stop acting at once: :meth:`hold` raises
  :class:`LeadershipLost` and the process exits, so that two leaders never act together;
- on a clean shutdown the leader releases the Lease (holder cleared), so that a RollingUpdate's
  new pod takes over within one retry period instead of a whole lease duration.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from promptloop.k8s.client import Conflict, Kube, NotFound

__all__ = ["ElectionConfig", "LeaderElector", "LeadershipLost"]

log = logging.getLogger("promptloop.leader")


class LeadershipLost(RuntimeError):
    """This process could not renew its Lease in time: it must stop acting."""


@dataclass(frozen=True)
class ElectionConfig:
    """client-go's defaults (15 s / 10 s / 2 s) unless the command line says otherwise."""

    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


def _micro_time(moment: datetime) -> str:
    # metav1.MicroTime: RFC 3339 with exactly six fractional digits.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Acquire, hold and release one Lease."""

    def __init__(
        self, kube: Kube, config: ElectionConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.kube = kube
        self.config = config
        self.clock = clock
        self.path = (
            f"/apis/coordination.k8s.io/v1/namespaces/{config.namespace}/leases/{config.name}"
        )
        self.is_leader = False
        # When this process last saw the record change (monotonic), and which record it was.
        self._observed_at = 0.0
        self._observed: tuple[str, str] | None = None  # (holder, renewTime)
        self._renewed_at = 0.0

    async def _read(self) -> dict[str, Any] | None:
        try:
            return await self.kube.request("GET", self.path, None, f"get lease {self.path}")
        except NotFound:
            return None

    def _spec(self, *, transitions: int, acquired: str | None) -> dict[str, Any]:
        now = _micro_time(datetime.now(UTC))
        return {
            "holderIdentity": self.config.identity,
            "leaseDurationSeconds": max(1, round(self.config.lease_duration)),
            "acquireTime": acquired or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this process holds the Lease afterwards."""
        lease = await self._read()
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.config.name, "namespace": self.config.namespace},
                "spec": self._spec(transitions=0, acquired=None),
            }
            try:
                await self.kube.request(
                    "POST",
                    self.path.rsplit("/", 1)[0],
                    body,
                    f"create lease {self.config.name}",
                )
            except Conflict:
                return False
            self._renewed_at = self.clock()
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, str(spec.get("renewTime")))
        now = self.clock()
        if record != self._observed:
            self._observed, self._observed_at = record, now
        duration = float(spec.get("leaseDurationSeconds") or self.config.lease_duration)
        mine = holder == self.config.identity
        if holder and not mine and now - self._observed_at < duration:
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        lease["spec"] = self._spec(
            transitions=transitions, acquired=spec.get("acquireTime") if mine else None
        )
        try:
            await self.kube.request("PUT", self.path, lease, f"update lease {self.config.name}")
        except Conflict:
            return False
        self._renewed_at = self.clock()
        return True

    async def acquire(self) -> None:
        """Block until this process holds the Lease."""
        log.info(
            "waiting to lead: Lease %s/%s as %s",
            self.config.namespace,
            self.config.name,
            self.config.identity,
        )
        while True:
            try:
                if await self.try_acquire_or_renew():
                    self.is_leader = True
                    log.info("leading: acquired Lease %s", self.config.name)
                    return
            except Exception as error:  # the API server is unreachable: keep trying
                log.warning("cannot acquire the Lease yet: %s", error)
            await asyncio.sleep(self.config.retry_period)

    async def hold(self) -> None:
        """Renew until cancelled; raise :class:`LeadershipLost` when a renewal is overdue."""
        while True:
            await asyncio.sleep(self.config.retry_period)
            try:
                renewed = await asyncio.wait_for(
                    self.try_acquire_or_renew(), self.config.renew_deadline
                )
            except (TimeoutError, Exception) as error:
                log.warning("cannot renew the Lease: %s", error)
                renewed = False
            if not renewed and self.clock() - self._renewed_at > self.config.renew_deadline:
                self.is_leader = False
                raise LeadershipLost(
                    f"Lease {self.config.name} not renewed for {self.config.renew_deadline:.0f}s"
                )

    async def release(self) -> None:
        """Give the Lease up (clean shutdown): the standby need not wait a whole duration."""
        if not self.is_leader:
            return
        self.is_leader = False
        lease = await self._read()
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != (
            self.config.identity
        ):
            return
        spec = lease["spec"]
        spec["holderIdentity"] = None
        spec["leaseDurationSeconds"] = 1
        spec["renewTime"] = _micro_time(datetime.now(UTC))
        try:
            await self.kube.request("PUT", self.path, lease, f"release lease {self.config.name}")
        except Exception as error:  # the standby takes over at expiry anyway
            log.warning("cannot release the Lease: %s", error)
        else:
            log.info("released Lease %s", self.config.name)
