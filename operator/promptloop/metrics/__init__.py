"""Evidence providers: each version's cumulative request and failure counters, read from where
``spec.metrics`` says (Prometheus, AgentField memory, an HTTP endpoint).

Not to be confused with the operator's own Prometheus metrics about itself
(:mod:`promptloop.observability`).
"""
