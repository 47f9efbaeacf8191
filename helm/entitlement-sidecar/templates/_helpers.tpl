{{/*
Helpers. Every helper takes a context with .Values and .Release only (the chart's root context,
or the one the exported templates in _injection.tpl build from a parent chart's dict), so the
same names, image and environment come out whether this chart renders them or a parent chart
includes them. .Chart is used only by templates of this chart's own resources.
*/}}

{{/* The image's version; a chart test keeps it equal to Chart.yaml's appVersion. */}}
{{- define "entitlement-sidecar.appVersion" -}}
0.1.0
{{- end }}

{{- define "entitlement-sidecar.name" -}}
{{- default "entitlement-sidecar" .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "entitlement-sidecar.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "entitlement-sidecar.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<fullname>-<component>", within 63 characters. Takes (list $ctx "component"). */}}
{{- define "entitlement-sidecar.componentName" -}}
{{- $ctx := index . 0 }}
{{- $component := index . 1 }}
{{- $room := sub 62 (len $component) | int }}
{{- printf "%s-%s" (include "entitlement-sidecar.fullname" $ctx | trunc $room | trimSuffix "-") $component }}
{{- end }}

{{- define "entitlement-sidecar.apiKeySecretName" -}}
{{- .Values.apiKey.existingSecret | default (include "entitlement-sidecar.componentName" (list . "api-key")) }}
{{- end }}

{{- define "entitlement-sidecar.selectorLabels" -}}
{{- $ctx := index . 0 -}}
app.kubernetes.io/name: {{ include "entitlement-sidecar.name" $ctx }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Labels of this chart's own resources. Takes (list $ "component"). */}}
{{- define "entitlement-sidecar.labels" -}}
{{- $ctx := index . 0 -}}
helm.sh/chart: {{ printf "%s-%s" $ctx.Chart.Name $ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "entitlement-sidecar.selectorLabels" . }}
app.kubernetes.io/version: {{ include "entitlement-sidecar.appVersion" $ctx | quote }}
app.kubernetes.io/managed-by: {{ $ctx.Release.Service }}
app.kubernetes.io/part-of: entitlement-sidecar
{{- with $ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "entitlement-sidecar.image" -}}
{{- $img := .Values.image }}
{{- $ref := $img.repository }}
{{- if $img.registry }}{{ $ref = printf "%s/%s" $img.registry $img.repository }}{{ end }}
{{- $ref = printf "%s:%s" $ref (default (include "entitlement-sidecar.appVersion" .) $img.tag) }}
{{- if $img.digest }}{{ $ref = printf "%s@%s" $ref $img.digest }}{{ end }}
{{- $ref }}
{{- end }}

{{- define "entitlement-sidecar.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The API URL every client of upstream uses: apiUrl, else the in-cluster reference upstream. */}}
{{- define "entitlement-sidecar.apiUrl" -}}
{{- if .Values.apiUrl }}
{{- .Values.apiUrl }}
{{- else if .Values.upstream.enabled }}
{{- printf "http://%s.%s.svc:%d" (include "entitlement-sidecar.componentName" (list . "upstream")) .Release.Namespace (int .Values.upstream.service.port) }}
{{- end }}
{{- end }}

{{/* "true" when upstream publishes its change stream to Redis. */}}
{{- define "entitlement-sidecar.upstreamPublishes" -}}
{{- $u := .Values.upstream }}
{{- if and $u.enabled (ternary .Values.persistentCache.enabled $u.publishEvents (kindIs "invalid" $u.publishEvents)) }}true{{ end }}
{{- end }}

{{/* "true" when some part of the release (or an injected sidecar) connects to the cache Redis. */}}
{{- define "entitlement-sidecar.redisUsed" -}}
{{- if or .Values.redis.environmentPrefix .Values.persistentCache.enabled }}true{{ end }}
{{- end }}

{{/*
Every problem with the values, reported at once; fails the render. The JSON schema catches unknown
keys and wrong types first; this catches what depends on several values.
*/}}
{{- define "entitlement-sidecar.validate" -}}
{{- $v := .Values }}
{{- $errors := list }}
{{- $needsBackend := or (not $v.sidecar.offline) $v.persistentCache.enabled $v.upstream.enabled }}
{{- if and $needsBackend (not $v.apiKey.existingSecret) (not $v.apiKey.value) }}
{{- $errors = append $errors "apiKey: no API key. Set apiKey.existingSecret to the name of a Secret holding SERVER_API_KEY (or apiKey.value); every service sends it to upstream. Only sidecar.offline=true runs without one." }}
{{- end }}
{{- if and $needsBackend (not $v.apiUrl) (not $v.upstream.enabled) }}
{{- $errors = append $errors "apiUrl: no entitlement backend. Set apiUrl to your upstream's URL (API_URL), or upstream.enabled=true to deploy the reference upstream." }}
{{- end }}
{{- if and $v.persistentCache.enabled (not $v.redis.environmentPrefix) }}
{{- $errors = append $errors "redis.environmentPrefix: the persistent cache needs it (REDIS_ENVIRONMENT_PREFIX); use the same prefix for every sidecar and upstream." }}
{{- end }}
{{- $publishes := include "entitlement-sidecar.upstreamPublishes" . }}
{{- $eventsGiven := or $v.redis.events.url $v.redis.events.existingSecret }}
{{- $needsHost := or (include "entitlement-sidecar.redisUsed" .) (and $publishes (not $eventsGiven)) }}
{{- if and $needsHost (not $v.redis.host) }}
{{- $errors = append $errors "redis.host: Redis is used (redis.environmentPrefix, persistentCache.enabled or upstream event publishing) but redis.host is empty." }}
{{- end }}
{{- if and $v.redis.cluster (ne (int $v.redis.db) 0) }}
{{- $errors = append $errors "redis.db: Redis Cluster only has database 0." }}
{{- end }}
{{- if and $publishes $v.redis.cluster (not $eventsGiven) }}
{{- $errors = append $errors "redis.events: upstream publishes its change stream to a single Redis node; with redis.cluster=true set redis.events.url (or redis.events.existingSecret)." }}
{{- end }}
{{- if and $v.persistentCache.enabled $v.upstream.enabled (eq (toString $v.upstream.publishEvents) "false") }}
{{- $errors = append $errors "upstream.publishEvents: false leaves the persistent cache without a change stream; remove it (or disable the persistent cache)." }}
{{- end }}
{{- if $v.redis.requireTls }}
{{- if and $needsHost (not $v.redis.tls) }}
{{- $errors = append $errors "redis.tls: Redis would be reached without TLS (passwords and entitlements in clear text). Set redis.tls=true, or redis.requireTls=false to accept plaintext Redis explicitly." }}
{{- end }}
{{- if hasPrefix "redis://" $v.redis.events.url }}
{{- $errors = append $errors "redis.events.url: a redis:// URL is plaintext. Use rediss://, or set redis.requireTls=false to accept plaintext Redis explicitly." }}
{{- end }}
{{- end }}
{{- if and $v.upstream.catalog.inline $v.upstream.catalog.existingConfigMap }}
{{- $errors = append $errors "upstream.catalog: set inline or existingConfigMap, not both." }}
{{- end }}
{{- $errors = concat $errors (include "entitlement-sidecar.spoolErrors" . | fromJsonArray) }}
{{- if $errors }}
{{- fail (printf "\n\nentitlement-sidecar: invalid values:\n  - %s\n" (join "\n  - " $errors)) }}
{{- end }}
{{- /* sidecar.extraEnv, checked even when only a parent chart renders the sidecar */}}
{{- $_ := include "entitlement-sidecar.sidecarEnv" (dict "ctx" . "mode" "injected") }}
{{- end }}

{{/* Pod-level security context; adds the port sysctl when the sidecar binds a port < 1024. Takes (list $ctx withSysctl). */}}
{{- define "entitlement-sidecar.podSecurityContext" -}}
{{- $ctx := index . 0 }}
{{- $psc := deepCopy $ctx.Values.podSecurityContext }}
{{- if and (index . 1) (include "entitlement-sidecar.needsPortSysctl" $ctx) }}
{{- $sysctls := default (list) $psc.sysctls }}
{{- $sysctls = append $sysctls (dict "name" "net.ipv4.ip_unprivileged_port_start" "value" "0") }}
{{- $_ := set $psc "sysctls" $sysctls }}
{{- end }}
{{- toYaml $psc }}
{{- end }}

{{- define "entitlement-sidecar.needsPortSysctl" -}}
{{- if and .Values.sidecar.unprivilegedPortSysctl (lt (int .Values.sidecar.port) 1024) }}true{{ end }}
{{- end }}

{{/*
The event spool (SPOOL_DIR). SQLite keeps SPOOL_MAX_BYTES of event payloads in 1.3-1.8 times
that on disk (per-row overhead, the WAL; measured with 30-176 byte events), so the default
emptyDir gets twice maxBytes plus 64Mi: a full spool never makes the kubelet evict the pod (and
the spool with it) for exceeding sizeLimit. Below 1.5 times maxBytes the render fails.
*/}}
{{- define "entitlement-sidecar.spoolDir" -}}
{{- clean .Values.sidecar.spool.dir }}
{{- end }}

{{/* The default emptyDir sizeLimit for sidecar.spool.maxBytes, in Mi. */}}
{{- define "entitlement-sidecar.spoolDefaultSizeLimit" -}}
{{- $max := .Values.sidecar.spool.maxBytes | int64 }}
{{- printf "%dMi" (add (div (add (mul 2 $max) 1048575) 1048576) 64) }}
{{- end }}

{{/* The spool's volume source: sidecar.spool.volume, else the default emptyDir (as JSON). */}}
{{- define "entitlement-sidecar.spoolVolumeSource" -}}
{{- $vol := .Values.sidecar.spool.volume }}
{{- if $vol }}
{{- toJson $vol }}
{{- else }}
{{- toJson (dict "emptyDir" (dict "sizeLimit" (include "entitlement-sidecar.spoolDefaultSizeLimit" .))) }}
{{- end }}
{{- end }}

{{/* The spool volume as a YAML list item (nothing when the spool is off): (list $ctx "name"). */}}
{{- define "entitlement-sidecar.spoolVolume" -}}
{{- $ctx := index . 0 }}
{{- if $ctx.Values.sidecar.spool.enabled -}}
- name: {{ index . 1 }}
  {{- include "entitlement-sidecar.spoolVolumeSource" $ctx | fromJson | toYaml | nindent 2 }}
{{- end }}
{{- end }}

{{/*
A Kubernetes quantity in bytes, printed as an integer; empty when it is not a quantity.
Handles the binary (Ki..Ei) and decimal (k..E, m) suffixes and exponents (1e9).
*/}}
{{- define "entitlement-sidecar.quantityBytes" -}}
{{- $q := toString . }}
{{- $units := dict "" 1.0 "m" 0.001 "k" 1000.0 "M" 1000000.0 "G" 1000000000.0 "T" 1000000000000.0 "P" 1000000000000000.0 "E" 1000000000000000000.0 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 }}
{{- if regexMatch "^([0-9]+(\\.[0-9]*)?|\\.[0-9]+)[eE][+-]?[0-9]+$" $q }}
{{- printf "%.0f" (float64 $q) }}
{{- else if regexMatch "^([0-9]+(\\.[0-9]*)?|\\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$" $q }}
{{- $number := regexFind "^[0-9.]+" $q }}
{{- printf "%.0f" (mulf (float64 $number) (get $units (trimPrefix $number $q))) }}
{{- end }}
{{- end }}

{{/* Problems with sidecar.spool, as a JSON list of messages (validate reports them). */}}
{{- define "entitlement-sidecar.spoolErrors" -}}
{{- $v := .Values }}
{{- $sp := $v.sidecar.spool }}
{{- $errors := list }}
{{- if $sp.enabled }}
{{- if not (hasPrefix "/" $sp.dir) }}
{{- $errors = append $errors (printf "sidecar.spool.dir: %q is not an absolute path; set an absolute directory such as /var/spool/entitlement-sidecar (SPOOL_DIR, where the spool volume is mounted)." $sp.dir) }}
{{- else if has (clean $sp.dir) (list "/" "/tmp") }}
{{- $errors = append $errors (printf "sidecar.spool.dir: %q would mount the spool volume over %s; set a directory of its own such as /var/spool/entitlement-sidecar." $sp.dir (clean $sp.dir)) }}
{{- end }}
{{- $vol := $sp.volume }}
{{- $sources := keys $vol | sortAlpha }}
{{- if hasKey $vol "name" }}
{{- $errors = append $errors "sidecar.spool.volume: give only the volume source (emptyDir, persistentVolumeClaim, ephemeral, ...); the chart names the volume." }}
{{- else if gt (len $sources) 1 }}
{{- $errors = append $errors (printf "sidecar.spool.volume: sets %s; a volume has exactly one source. Helm merges your map into the values it overrides: set the ones you do not want to null." (join " and " $sources)) }}
{{- end }}
{{- range $source := $sources }}
{{- if has $source (list "configMap" "secret" "downwardAPI" "projected" "image") }}
{{- $errors = append $errors (printf "sidecar.spool.volume: %s is read-only; the spool needs a writable volume (emptyDir, persistentVolumeClaim or ephemeral)." $source) }}
{{- end }}
{{- end }}
{{- $maxBytes := $sp.maxBytes | int64 }}
{{- if and (hasKey $vol "emptyDir") $vol.emptyDir (hasKey $vol.emptyDir "sizeLimit") (not (kindIs "invalid" $vol.emptyDir.sizeLimit)) }}
{{- $limit := include "entitlement-sidecar.quantityBytes" $vol.emptyDir.sizeLimit }}
{{- if not $limit }}
{{- $errors = append $errors (printf "sidecar.spool.volume.emptyDir.sizeLimit: %q is not a Kubernetes quantity (e.g. 576Mi)." (toString $vol.emptyDir.sizeLimit)) }}
{{- else if lt (float64 $limit) (mulf (float64 $maxBytes) 1.5) }}
{{- $errors = append $errors (printf "sidecar.spool.volume.emptyDir.sizeLimit: %s cannot hold a full spool of sidecar.spool.maxBytes=%d (SQLite needs 1.3-1.8 times that on disk, and the kubelet evicts the pod, spool included, past sizeLimit). Set sizeLimit to at least %dMi (1.5 x maxBytes), better %s (2 x maxBytes + 64Mi, the default when sidecar.spool.volume is empty), or lower sidecar.spool.maxBytes." (toString $vol.emptyDir.sizeLimit) $maxBytes (div (add (div (mul 3 $maxBytes) 2) 1048575) 1048576) (include "entitlement-sidecar.spoolDefaultSizeLimit" .)) }}
{{- end }}
{{- end }}
{{- $sa := $v.sidecar.standalone }}
{{- if and $sa.enabled (hasKey $vol "persistentVolumeClaim") (or $sa.autoscaling.enabled (ne (int $sa.replicaCount) 1)) }}
{{- $errors = append $errors "sidecar.spool.volume: one persistentVolumeClaim holds the spool of one sidecar (a second one fails to start on its lock), but the standalone Deployment runs several replicas. Set sidecar.standalone.replicaCount=1 and autoscaling.enabled=false, or use ephemeral: {volumeClaimTemplate: ...} for a claim per pod." }}
{{- end }}
{{- end }}
{{- toJson $errors }}
{{- end }}

{{/* Volumes every pod of the chart needs: a writable /tmp. */}}
{{- define "entitlement-sidecar.tmpVolume" -}}
- name: {{ .name }}
  emptyDir:
    sizeLimit: {{ .sizeLimit }}
{{- end }}

{{/* Probes of a container: (dict "probes" $probes). Null or empty probes are left out. */}}
{{- define "entitlement-sidecar.probes" -}}
{{- with .probes.liveness }}
livenessProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .probes.readiness }}
readinessProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .probes.startup }}
startupProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* preStop hook that keeps the process up for N seconds after SIGTERM is due. */}}
{{- define "entitlement-sidecar.preStop" -}}
{{- if gt (int .) 0 }}
lifecycle:
  preStop:
    exec:
      command: ["python", "-c", "import time; time.sleep({{ int . }})"]
{{- end }}
{{- end }}

{{/* Checksum of the Secret the chart makes, so a changed key rolls the pods. */}}
{{- define "entitlement-sidecar.secretChecksum" -}}
{{- printf "%s|%s|%s" .Values.apiKey.value .Values.apiKey.existingSecret .Values.apiKey.secretKey | sha256sum }}
{{- end }}

{{/* Pod scheduling fields shared by the chart's own workloads: (list $ctx $component-values "component"). */}}
{{- define "entitlement-sidecar.scheduling" -}}
{{- $ctx := index . 0 }}
{{- $c := index . 1 }}
{{- with $c.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $c.topologySpreadConstraints }}
topologySpreadConstraints:
{{- range . }}
{{- $tsc := deepCopy . }}
{{- if not $tsc.labelSelector }}
{{- $_ := set $tsc "labelSelector" (dict "matchLabels" (include "entitlement-sidecar.selectorLabels" (list $ctx (index $ 2)) | fromYaml)) }}
{{- end }}
  - {{ toYaml $tsc | nindent 4 | trim }}
{{- end }}
{{- end }}
{{- end }}

{{- define "entitlement-sidecar.persistentCacheServiceAccount" -}}
{{- $sa := .Values.persistentCache.serviceAccount }}
{{- if $sa.create }}
{{- default (include "entitlement-sidecar.componentName" (list . "persistent-cache")) $sa.name }}
{{- else }}
{{- default "default" $sa.name }}
{{- end }}
{{- end }}
