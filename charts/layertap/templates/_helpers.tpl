{{/* Chart name, truncated to the 63 characters a Kubernetes name allows. */}}
{{- define "layertap.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every resource name: the release name, unless it already holds the chart name. */}}
{{- define "layertap.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* A component's resource name; the component suffix survives truncation. */}}
{{- define "layertap.componentName" -}}
{{- $suffix := printf "-%s" .component }}
{{- printf "%s%s" (include "layertap.fullname" .root | trunc (int (sub 63 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}

{{- define "layertap.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "layertap.labels" -}}
helm.sh/chart: {{ include "layertap.chart" . }}
{{ include "layertap.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: layertap
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "layertap.selectorLabels" -}}
app.kubernetes.io/name: {{ include "layertap.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "layertap.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "layertap.componentName" (dict "root" . "component" "operator")) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "layertap.operator.image" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) }}
{{- end }}

{{- define "layertap.worker.image" -}}
{{- printf "%s:%s" .Values.worker.image.repository (default .Chart.AppVersion .Values.worker.image.tag) }}
{{- end }}

{{- define "layertap.worker.gpuImage" -}}
{{- printf "%s:%s" .Values.worker.gpuImage.repository (default .Chart.AppVersion .Values.worker.gpuImage.tag) }}
{{- end }}

{{/* Namespaces the operator serves, as a JSON list; empty: every namespace (clusterWide). */}}
{{- define "layertap.operator.namespaces" -}}
{{- if .Values.operator.clusterWide }}
{{- list | toJson }}
{{- else }}
{{- required "operator.watchNamespaces is empty: list the namespaces the operator serves, or set operator.clusterWide=true" (.Values.operator.watchNamespaces | default nil) | uniq | toJson }}
{{- end }}
{{- end }}

{{/* Namespaces that get the worker ServiceAccount and Role, as a JSON list. */}}
{{- define "layertap.worker.namespaces" -}}
{{- $served := include "layertap.operator.namespaces" . | fromJsonArray }}
{{- $namespaces := .Values.worker.namespaces | default $served | default (list "default") }}
{{- $namespaces | uniq | toJson }}
{{- end }}

{{/* The policy on what an ActivationExtraction may ask for, as JSON: the operator's
LAYERTAP_POLICY and the admission policy's variables (layertap_operator/policy.py). */}}
{{- define "layertap.policy" -}}
{{- $accounts := prepend .Values.policy.allowedServiceAccounts .Values.worker.serviceAccount.name | uniq }}
{{- dict
  "allowPrivileged" .Values.policy.allowPrivileged
  "allowedImagePrefixes" .Values.policy.allowedImagePrefixes
  "allowedServiceAccounts" $accounts
  "allowedHubTokenSecrets" .Values.policy.allowedHubTokenSecrets
  | toJson }}
{{- end }}

{{/* The operator's identity as the API server sees it (its requests' userInfo.username). */}}
{{- define "layertap.operator.username" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "layertap.operator.serviceAccountName" .) }}
{{- end }}
