"""The local development and test environment: a real Kubernetes control plane built from the Go
module proxy, the AgentField stand-in and the deterministic model simulator."""
