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

{{/* The agent's image: repository@digest when image.digest is set (a tag can be re-pointed by
whoever publishes it, a digest cannot), else repository:tag. */}}
{{- define "nodeload-agent.image" -}}
{{- $image := .Values.image -}}
{{- if $image.digest -}}
{{- if not (regexMatch "^sha256:[0-9a-f]{64}$" $image.digest) -}}
{{- fail (printf "image.digest must be sha256: followed by 64 lowercase hex digits, not %q" $image.digest) -}}
{{- end -}}
{{ $image.repository }}@{{ $image.digest }}
{{- else -}}
{{ $image.repository }}:{{ $image.tag }}
{{- end -}}
{{- end }}

{{/* The pods' affinity: values.affinity, and unless controlPlane is true, no node labelled as a
control plane. Required node selector terms are ORed, so the exclusion is added to every one. */}}
{{- define "nodeload-agent.affinity" -}}
{{- $affinity := deepCopy (.Values.affinity | default dict) -}}
{{- if not .Values.controlPlane -}}
{{- $notControlPlane := list (dict "key" "node-role.kubernetes.io/control-plane" "operator" "DoesNotExist") (dict "key" "node-role.kubernetes.io/master" "operator" "DoesNotExist") -}}
{{- $node := get $affinity "nodeAffinity" | default dict -}}
{{- $required := get $node "requiredDuringSchedulingIgnoredDuringExecution" | default dict -}}
{{- $terms := list -}}
{{- range get $required "nodeSelectorTerms" | default (list dict) -}}
{{- $terms = append $terms (set (deepCopy .) "matchExpressions" (concat (get . "matchExpressions" | default list) $notControlPlane)) -}}
{{- end -}}
{{- $_ := set $required "nodeSelectorTerms" $terms -}}
{{- $_ := set $node "requiredDuringSchedulingIgnoredDuringExecution" $required -}}
{{- $_ := set $affinity "nodeAffinity" $node -}}
{{- end -}}
{{- toYaml $affinity -}}
{{- end }}
