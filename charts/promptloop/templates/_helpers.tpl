{{/*
Names, labels and the RBAC rules shared by the ClusterRole and the per-namespace Roles.
*/}}

{{- define "promptloop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every object's name. A release named like the chart ("promptloop") gives the
names of manifests/base (promptloop-operator, ...); any other release gets its own prefix, so
cluster-scoped objects of two releases never collide.
*/}}
{{- define "promptloop.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "promptloop.labels" -}}
app.kubernetes.io/name: {{ include "promptloop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: promptloop
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels: stable across upgrades (a Deployment's selector is immutable). */}}
{{- define "promptloop.operatorSelector" -}}
app.kubernetes.io/name: {{ include "promptloop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "promptloop.operatorServiceAccount" -}}
{{- default (printf "%s-operator" (include "promptloop.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- end -}}

{{- define "promptloop.improverServiceAccount" -}}
{{- default (printf "%s-improver" (include "promptloop.fullname" .)) .Values.improver.serviceAccount.name -}}
{{- end -}}

{{/* The watched namespaces as a list; empty means every namespace. */}}
{{- define "promptloop.watchNamespaces" -}}
{{- $namespaces := list -}}
{{- range (splitList "," .Values.watchNamespace) -}}
{{- if trim . -}}
{{- $namespaces = append $namespaces (trim .) -}}
{{- end -}}
{{- end -}}
{{- toJson $namespaces -}}
{{- end -}}

{{/*
The operator's least-privilege rules. manifests/base/rbac.yaml carries the same list and a test
asserts the two are equal: change both together.
*/}}
{{- define "promptloop.operatorRules" -}}
# Watch both resources; patch only metadata (kopf's finalizer and progress annotations):
# the operator never writes a spec.
- apiGroups: [promptloop.dev]
  resources: [agentrollouts, promptproposals]
  verbs: [get, list, watch, patch]
- apiGroups: [promptloop.dev]
  resources: [agentrollouts/status, promptproposals/status]
  verbs: [get, patch, update]
# Children carry blockOwnerDeletion owner references to their proposal.
- apiGroups: [promptloop.dev]
  resources: [promptproposals/finalizers]
  verbs: [update]
# Challenger Deployments (created and scaled by the operator); the stable one is only read.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [get, patch, update]
# Prompt ConfigMaps (created by the operator; the stable prompt's may be read).
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch]
# The connector token and metrics API key: each referenced Secret is watched by name
# (fieldSelector metadata.name=...) so that a rotated token is seen by the next pass; the
# operator never lists Secrets it is not pointed at, and keeps only their data.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- if .Values.routers.gatewayAPI.enabled }}
# spec.router.gatewayAPI: the two Services the operator owns (<rollout>-stable/-canary), created
# and repointed by server-side apply; the user's HTTPRoute, read and its weights applied.
- apiGroups: [""]
  resources: [services]
  verbs: [get, create, patch]
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, patch]
{{- end }}
{{- end -}}

{{/*
The improver's rules: exactly what `promptloop improve --apply` reads and writes
(operator/promptloop/k8s/proposals.py). It cannot update, patch or delete a proposal, so it can
never set spec.approved; it cannot touch Deployments beyond reading the stable one's template.
*/}}
{{- define "promptloop.improverRules" -}}
# The rollout names the stable version and Deployment.
- apiGroups: [promptloop.dev]
  resources: [agentrollouts]
  verbs: [get]
# Existing proposals (hold while one is open; pick a free version), and the new one.
- apiGroups: [promptloop.dev]
  resources: [promptproposals]
  verbs: [list, create]
# The stable prompt: the Deployment's pod template and the ConfigMap it references.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get]
{{- end -}}

{{/* The pod and container security settings shared by the operator and the improver. */}}
{{- define "promptloop.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "promptloop.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{- define "promptloop.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
