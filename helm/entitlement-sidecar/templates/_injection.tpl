{{/*
Exported templates: inject the sidecar into your own pods from any chart.

Each takes a dict: "values" = this chart's values as your chart sees them (with this chart as a
dependency: (index .Values "entitlement-sidecar"), defaults included) and "release" = .Release.
Example (docs/deploy.md has the whole Deployment):

  {{- $es := dict "values" (index .Values "entitlement-sidecar") "release" .Release }}
  metadata:
    annotations:
      {{- include "entitlement-sidecar.podAnnotations" $es | nindent 8 }}
  spec:
    securityContext:
      sysctls:
        {{- include "entitlement-sidecar.sysctls" $es | nindent 8 }}
    initContainers:
      {{- include "entitlement-sidecar.initContainers" $es | nindent 6 }}
    containers:
      - name: app
        ...
      {{- include "entitlement-sidecar.containers" $es | nindent 6 }}
    volumes:
      {{- include "entitlement-sidecar.volumes" $es | nindent 6 }}

"containers" renders the sidecar unless sidecar.injected.nativeSidecar is true, "initContainers"
only when it is, so a chart including both switches with that one value.
*/}}

{{- define "entitlement-sidecar.injectionContext" -}}
{{- if not (and (kindIs "map" .) (hasKey . "values") (hasKey . "release")) }}
{{- fail "entitlement-sidecar: the injection templates take (dict \"values\" (index .Values \"entitlement-sidecar\") \"release\" .Release)" }}
{{- end }}
{{- toJson (dict "Values" .values "Release" (dict "Name" .release.Name "Namespace" .release.Namespace "Service" .release.Service)) }}
{{- end }}

{{- define "entitlement-sidecar.containers" -}}
{{- $ctx := include "entitlement-sidecar.injectionContext" . | fromJson }}
{{- include "entitlement-sidecar.validate" $ctx }}
{{- if not $ctx.Values.sidecar.injected.nativeSidecar }}
{{- include "entitlement-sidecar.sidecarContainer" (dict "ctx" $ctx "mode" "injected") }}
{{- end }}
{{- end }}

{{- define "entitlement-sidecar.initContainers" -}}
{{- $ctx := include "entitlement-sidecar.injectionContext" . | fromJson }}
{{- include "entitlement-sidecar.validate" $ctx }}
{{- if $ctx.Values.sidecar.injected.nativeSidecar }}
{{- include "entitlement-sidecar.sidecarContainer" (dict "ctx" $ctx "mode" "injected") }}
{{- end }}
{{- end }}

{{/*
The writable /tmp the sidecar needs under a read-only root filesystem, and the volume of its event
spool (sidecar.spool.volume; none when sidecar.spool.enabled is false). Prefixed names, so they
never clash with your pod's own volumes.
*/}}
{{- define "entitlement-sidecar.volumes" -}}
{{- $ctx := include "entitlement-sidecar.injectionContext" . | fromJson }}
{{- include "entitlement-sidecar.tmpVolume" (dict "name" "entitlement-sidecar-tmp" "sizeLimit" $ctx.Values.tmpSizeLimit) }}
{{- with include "entitlement-sidecar.spoolVolume" (list $ctx "entitlement-sidecar-spool") }}
{{ . }}
{{- end }}
{{- end }}

{{/* Pod sysctls that let the non-root sidecar bind a port below 1024 (empty otherwise). */}}
{{- define "entitlement-sidecar.sysctls" -}}
{{- $ctx := include "entitlement-sidecar.injectionContext" . | fromJson }}
{{- if include "entitlement-sidecar.needsPortSysctl" $ctx }}
- name: net.ipv4.ip_unprivileged_port_start
  value: "0"
{{- end }}
{{- end }}

{{/* Pod annotations that roll your pods when the chart-made API key Secret changes. */}}
{{- define "entitlement-sidecar.podAnnotations" -}}
{{- $ctx := include "entitlement-sidecar.injectionContext" . | fromJson }}
checksum/entitlement-sidecar-secret: {{ include "entitlement-sidecar.secretChecksum" $ctx }}
{{- end }}

{{/*
One sidecar container as a YAML list item: (dict "ctx" $ctx "mode" "injected"|"standalone").
Also used by the standalone Deployment, so both forms run the same container.
*/}}
{{- define "entitlement-sidecar.sidecarContainer" -}}
{{- $ctx := .ctx }}
{{- $v := $ctx.Values }}
{{- $s := $v.sidecar }}
{{- $injected := eq .mode "injected" }}
{{- $m := index $s .mode }}
- name: {{ ternary $m.containerName "sidecar" $injected }}
  image: {{ include "entitlement-sidecar.image" $ctx }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if and $injected $m.nativeSidecar }}
  restartPolicy: Always
  {{- end }}
  command: ["entitlement-sidecar"]
  ports:
    - name: {{ ternary "es-grpc" "grpc" $injected }}
      containerPort: {{ $s.port | int64 }}
      protocol: TCP
    - name: {{ ternary "es-http" "http" $injected }}
      containerPort: {{ $m.httpPort | int64 }}
      protocol: TCP
  env:
    {{- include "entitlement-sidecar.sidecarEnv" (dict "ctx" $ctx "mode" .mode) | nindent 4 }}
  {{- $probes := deepCopy $s.probes }}
  {{- if $injected }}
  {{- /* Port names are per pod: the injected container's are prefixed so they never clash with the app's. */}}
  {{- range $kind, $probe := $probes }}
  {{- if and $probe $probe.httpGet (eq (toString $probe.httpGet.port) "http") }}
  {{- $_ := set $probe.httpGet "port" "es-http" }}
  {{- end }}
  {{- end }}
  {{- end }}
  {{- include "entitlement-sidecar.probes" (dict "probes" $probes) | trim | nindent 2 }}
  {{- if not (and $injected $m.nativeSidecar) }}
  {{- include "entitlement-sidecar.preStop" $m.preStopSleepSeconds | trim | nindent 2 }}
  {{- end }}
  resources:
    {{- toYaml $m.resources | nindent 4 }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  volumeMounts:
    - name: {{ ternary "entitlement-sidecar-tmp" "tmp" $injected }}
      mountPath: /tmp
    {{- if $s.spool.enabled }}
    - name: {{ ternary "entitlement-sidecar-spool" "spool" $injected }}
      mountPath: {{ include "entitlement-sidecar.spoolDir" $ctx }}
    {{- end }}
{{- end }}
