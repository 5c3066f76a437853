{{- define "letsgo.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "letsgo.operatorName" -}}
{{- printf "%s-operator" (include "letsgo.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "letsgo.selectorLabels" -}}
app.kubernetes.io/name: letsgo-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "letsgo.labels" -}}
{{ include "letsgo.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: letsgo
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "letsgo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "letsgo.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}
