"""promptloop: an operator that lets an LLM agent improve itself without ever promoting itself.

An improver files a revised system prompt as a ``PromptProposal``; the operator renders it into a
challenger Deployment and an ``AgentRollout`` canaries that challenger on evidence, holding for a
person before the challenger may serve the majority of traffic.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
