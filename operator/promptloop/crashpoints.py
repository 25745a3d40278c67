"""Crash points for the chaos suite: the operator kills itself right after an effect.

A SIGKILL from outside lands wherever the process happens to be; the moments that matter most
(between the rollout's status write and the router write, between the router write and the
proposals' statuses, right after a challenger's manifests are applied) are too short to hit
reliably that way. With ``PROMPTLOOP_CRASH_AFTER=<Effect>:<n>`` (e.g. ``WriteRolloutStatus:2``)
the operator sends itself SIGKILL right after carrying out its n-th effect of that type.

Unset (the default, and always in production) this does nothing.
"""

from __future__ import annotations

import logging
import os
import signal

__all__ = ["ENV", "CrashPoint"]

ENV = "PROMPTLOOP_CRASH_AFTER"

log = logging.getLogger("promptloop.crashpoints")


class CrashPoint:
    """Counts effects carried out; SIGKILLs the process at the armed one."""

    def __init__(self, spec: str = "") -> None:
        self.effect, _, count = spec.partition(":")
        self.remaining = int(count or 1) if self.effect else 0

    @classmethod
    def from_environment(cls) -> CrashPoint:
        """The crash point ``PROMPTLOOP_CRASH_AFTER`` arms, if any."""
        return cls(os.environ.get(ENV, ""))

    def after(self, effect: str) -> None:
        """An effect of type ``effect`` was just carried out."""
        if self.remaining <= 0 or effect != self.effect:
            return
        self.remaining -= 1
        if self.remaining == 0:
            log.warning("crash point: SIGKILL after %s (%s)", effect, ENV)
            os.kill(os.getpid(), signal.SIGKILL)
