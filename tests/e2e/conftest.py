"""The e2e tests reuse the integration fixtures: the operator under its ServiceAccount, the
AgentField stand-in and the scenario builder."""

from tests.integration.conftest import agentfield, operator_kubeconfig, scenario

__all__ = ["agentfield", "operator_kubeconfig", "scenario"]
