"""kopf handlers: validate, delegate, write status. Importing this package registers them.

``startup`` owns the settings and the shared clients; ``rollouts`` runs each rollout's periodic
pass; ``proposals`` reacts at once to a new proposal, an approval, a rejection or a deletion.
All of them delegate to :class:`promptloop.reconciler.Reconciler`.
"""

from promptloop.handlers import proposals, rollouts, startup

__all__ = ["proposals", "rollouts", "startup"]
