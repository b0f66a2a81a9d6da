{{/* The labels nodeload finds agent pods by (app.kubernetes.io/name=nodeload-agent). */}}
{{- define "nodeload-agent.selectorLabels" -}}
app.kubernetes.io/name: nodeload-agent
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "nodeload-agent.labels" -}}
{{ include "nodeload-agent.selectorLabels" . }}
app.kubernetes.io/component: agent
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}
