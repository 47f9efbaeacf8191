{{/* HorizontalPodAutoscaler: (list $ $component-values "component" "kind" "name"). */}}
{{- define "entitlement-sidecar.hpa" -}}
{{- $ctx := index . 0 }}
{{- $a := (index . 1).autoscaling }}
{{- $name := include "entitlement-sidecar.componentName" (list $ctx (index . 2)) }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $name }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "entitlement-sidecar.labels" (list $ctx (index . 2)) | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: {{ index . 3 }}
    name: {{ $name }}
  minReplicas: {{ $a.minReplicas }}
  maxReplicas: {{ $a.maxReplicas }}
  metrics:
    {{- with $a.targetCPUUtilizationPercentage }}
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ . }}
    {{- end }}
    {{- with $a.targetMemoryUtilizationPercentage }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ . }}
    {{- end }}
{{- end }}

{{/* PodDisruptionBudget: (list $ $component-values "component"). */}}
{{- define "entitlement-sidecar.pdb" -}}
{{- $ctx := index . 0 }}
{{- $p := (index . 1).podDisruptionBudget }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "entitlement-sidecar.componentName" (list $ctx (index . 2)) }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "entitlement-sidecar.labels" (list $ctx (index . 2)) | nindent 4 }}
spec:
  {{- if not (kindIs "invalid" $p.minAvailable) }}
  minAvailable: {{ $p.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $p.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "entitlement-sidecar.selectorLabels" (list $ctx (index . 2)) | nindent 6 }}
{{- end }}
