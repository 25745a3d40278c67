# promptloop — every target documents itself: `make help`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROMPTLOOP := $(VENV)/bin/promptloop
STAMP := $(VENV)/.installed-stamp
# Tests, the demo and `make run` use the local control plane. Point PROMPTLOOP_KUBECONFIG at
# another cluster on purpose (kind, say); an ambient KUBECONFIG is never picked up by accident.
PROMPTLOOP_KUBECONFIG ?= $(CURDIR)/.cluster/kubeconfig
PYTEST_ARGS ?=

##@ Setup

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} \
	  /^[a-zA-Z_-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml devenv/pyproject.toml
	@echo ">> creating the Python environment in $(VENV)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]' -e ./devenv
	@touch $@

.PHONY: install
install: $(STAMP) ## Create .venv with promptloop and its development tools (idempotent)

##@ Development

.PHONY: crds
crds: $(STAMP) ## Regenerate crds/*.yaml from the pydantic models (and the chart's copy)
	@$(PY) -m promptloop.api.crdgen crds
	@# Helm installs only what is inside the chart: keep an identical copy (a test compares them).
	@cp crds/promptloop.dev_*.yaml charts/promptloop/crds/

.PHONY: helm
helm: $(STAMP) ## Build helm from the Go module proxy once (cached in ~/.cache/promptloop/tools)
	@$(PY) -m devenv.helm >/dev/null

.PHONY: chart-lint
chart-lint: helm ## helm lint --strict the chart (defaults, and every option on) and render it
	@HELM=$$($(PY) -m devenv.helm) && \
	  $$HELM lint --strict charts/promptloop && \
	  $$HELM lint --strict charts/promptloop --set 'watchNamespace=a\,b' --set improver.enabled=true \
	    --set 'improver.targets[0].rollout=r' --set 'improver.targets[0].namespace=a' \
	    --set approvalPolicy.enabled=true && \
	  $$HELM lint --strict charts/promptloop --set observability.logFormat=json \
	    --set observability.serviceMonitor.enabled=true --set observability.dashboard.enabled=true \
	    --set crds.manage=true --set argocd.customizations.enabled=true && \
	  $$HELM template promptloop charts/promptloop -n promptloop-system >/dev/null && \
	  echo "chart OK"

.PHONY: argocd
argocd: $(STAMP) ## Regenerate manifests/argocd/argocd-cm.yaml and the chart's copy from the Lua
	@$(PY) manifests/argocd/build.py

.PHONY: krew
krew: $(STAMP) ## Build dist/kubectl-promptloop-v<version>.tar.gz and update krew/promptloop.yaml
	@$(PY) krew/build.py

.PHONY: lint
lint: $(STAMP) ## ruff, mypy --strict, and the layer contracts (import-linter, pyproject.toml)
	@$(VENV)/bin/ruff check operator devenv tests bench examples krew manifests
	@$(VENV)/bin/ruff format --check operator devenv tests bench examples krew manifests
	@$(VENV)/bin/mypy
	@PYTHONPATH=operator $(VENV)/bin/lint-imports --no-cache

.PHONY: fmt
fmt: $(STAMP) ## Format the code with ruff
	@$(VENV)/bin/ruff check --fix operator devenv tests bench examples krew manifests
	@$(VENV)/bin/ruff format operator devenv tests bench examples krew manifests

.PHONY: cluster-build
cluster-build: $(STAMP) ## Build (once, cached by version) etcd, kube-apiserver, controller-manager, scheduler, kwok
	@$(PROMPTLOOP) dev cluster build

.PHONY: cluster-up
cluster-up: $(STAMP) ## Start the local Kubernetes control plane; kubeconfig in .cluster/kubeconfig
	@$(PROMPTLOOP) dev cluster up

.PHONY: cluster-down
cluster-down: $(STAMP) ## Stop the local control plane and every process it started
	@$(PROMPTLOOP) dev cluster down

.PHONY: gateway-api-crds
gateway-api-crds: $(STAMP) ## Install the Gateway API CRDs (standard channel, sigs.k8s.io/gateway-api, cached) into the local cluster
	@$(PY) -m devenv.gatewayapi --kubeconfig $(PROMPTLOOP_KUBECONFIG)

.PHONY: agentfield-up
agentfield-up: $(STAMP) ## Start the AgentField stand-in on loopback; env in .cluster/agentfield.env
	@$(PROMPTLOOP) dev agentfield up

.PHONY: agentfield-down
agentfield-down: $(STAMP) ## Stop the AgentField stand-in
	@$(PROMPTLOOP) dev agentfield down

.PHONY: run
run: $(STAMP) ## Run the operator against PROMPTLOOP_KUBECONFIG (default: the local cluster)
	@KUBECONFIG=$(PROMPTLOOP_KUBECONFIG) $(PROMPTLOOP) operator

##@ Tests

.PHONY: test
test: $(STAMP) cluster-build helm ## Run every test: unit, then integration and e2e on the real local control plane
	@KUBECONFIG=$(PROMPTLOOP_KUBECONFIG) $(PY) -m pytest tests/unit tests/integration tests/e2e $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: $(STAMP) helm ## Run the fast tests that need no cluster
	@$(PY) -m pytest tests/unit $(PYTEST_ARGS)

.PHONY: test-integration
test-integration: $(STAMP) cluster-build helm ## Run the tests against the real local API server
	@KUBECONFIG=$(PROMPTLOOP_KUBECONFIG) $(PY) -m pytest tests/integration $(PYTEST_ARGS)

# CHAOS_SEED picks the kill points, delays and fuzzed examples; the same seed repeats a run.
CHAOS_SEED ?= 15

.PHONY: chaos
chaos: $(STAMP) cluster-build helm ## Faults at full budget (kills, control plane, proxy, fuzz, load, RBAC): table + bench/results/chaos.json
	@PROMPTLOOP_CHAOS=full PROMPTLOOP_CHAOS_SEED=$(CHAOS_SEED) KUBECONFIG=$(PROMPTLOOP_KUBECONFIG) \
	  $(PY) -m pytest tests/integration/chaos -p no:cacheprovider $(PYTEST_ARGS)

##@ Demo and benchmarks

# DEMO_ARGS passes more options through, e.g. DEMO_ARGS="--view lines --rate 40".
DEMO_ARGS ?=
# BENCH_ARGS passes options to bench/scale.py, e.g. BENCH_ARGS="--sizes 200 --failover-kills 0".
BENCH_ARGS ?=

.PHONY: demo
demo: $(STAMP) cluster-build ## Run the whole loop on the embedded defaults (AUTO_APPROVE=1 for unattended; ROUTER=gateway: AgentField in front of a Gateway API route)
	@$(PROMPTLOOP) dev demo $(if $(AUTO_APPROVE),--auto-approve,) $(if $(ROUTER),--router $(ROUTER),) $(DEMO_ARGS)

.PHONY: demo-down
demo-down: $(STAMP) ## Stop whatever a demo left running and delete its namespace
	@$(PROMPTLOOP) dev demo-down

.PHONY: bench
bench: $(STAMP) cluster-build bench-decision ## Print latency figures from the real local stack (and the decision bench)
	@$(PY) bench/operator_latency.py

.PHONY: bench-scale
bench-scale: $(STAMP) cluster-build ## 100..1,000 rollouts in one operator, and standby failover; writes bench/results/scale.{json,png}
	@$(PY) bench/scale.py $(BENCH_ARGS)

.PHONY: bench-decision
bench-decision: $(STAMP) ## Simulate the decision test vs a naive comparator; writes bench/results/decision.json
	@$(PY) bench/decision.py
