{{/*
Environment of each service. Each list names every variable the chart manages for that service,
with the value it comes from ("from"), whether or not it is emitted for these values, so extraEnv
can add variables but never override or silently drop a managed one: a collision fails the render.
Numbers go through int64: values arrive as JSON numbers (float64) and must not print as 6.048e+05.
*/}}

{{- define "entitlement-sidecar.bool" -}}
{{- if . }}1{{ else }}0{{ end }}
{{- end }}

{{- define "entitlement-sidecar.apiKeyEnv" -}}
{{- $v := .Values }}
{{- if or $v.apiKey.existingSecret $v.apiKey.value }}
{{- toJson (dict "name" "SERVER_API_KEY" "from" "apiKey" "valueFrom" (dict "secretKeyRef" (dict "name" (include "entitlement-sidecar.apiKeySecretName" .) "key" $v.apiKey.secretKey))) }}
{{- else }}
{{- toJson (dict "name" "SERVER_API_KEY" "from" "apiKey" "value" "") }}
{{- end }}
{{- end }}

{{- define "entitlement-sidecar.redisPasswordEnv" -}}
{{- $r := .Values.redis }}
{{- if $r.existingSecret }}
{{- toJson (dict "name" "REDIS_PASSWORD" "from" "redis.existingSecret" "valueFrom" (dict "secretKeyRef" (dict "name" $r.existingSecret "key" $r.existingSecretPasswordKey))) }}
{{- else }}
{{- toJson (dict "name" "REDIS_PASSWORD" "from" "redis.existingSecret" "value" "") }}
{{- end }}
{{- end }}

{{/* The cache Redis connection (sidecar and persistent cache), as a JSON list; values empty when off. */}}
{{- define "entitlement-sidecar.redisEnv" -}}
{{- $r := .ctx.Values.redis }}
{{- $on := .on }}
{{- $e := list }}
{{- $e = append $e (dict "name" "REDIS_ENVIRONMENT_PREFIX" "from" "redis.environmentPrefix" "value" (ternary $r.environmentPrefix "" $on)) }}
{{- $e = append $e (dict "name" "REDIS_HOST" "from" "redis.host" "value" (ternary $r.host "" $on)) }}
{{- $e = append $e (dict "name" "REDIS_PORT" "from" "redis.port" "value" (ternary ($r.port | int64 | toString) "" $on)) }}
{{- $e = append $e (dict "name" "REDIS_DB" "from" "redis.db" "value" (ternary ($r.db | int64 | toString) "" $on)) }}
{{- $e = append $e (dict "name" "REDIS_USERNAME" "from" "redis.username" "value" (ternary $r.username "" $on)) }}
{{- $pw := include "entitlement-sidecar.redisPasswordEnv" .ctx | fromJson }}
{{- if not $on }}{{ $pw = dict "name" "REDIS_PASSWORD" "from" "redis.existingSecret" "value" "" }}{{ end }}
{{- $e = append $e $pw }}
{{- $e = append $e (dict "name" "REDIS_TLS" "from" "redis.tls" "value" (ternary (include "entitlement-sidecar.bool" $r.tls) "" $on)) }}
{{- $e = append $e (dict "name" "REDIS_CLUSTER" "from" "redis.cluster" "value" (ternary (include "entitlement-sidecar.bool" $r.cluster) "" $on)) }}
{{- toJson $e }}
{{- end }}

{{/* EVENTS_REDIS_URL from redis.events (url or Secret); empty when neither is set. */}}
{{- define "entitlement-sidecar.eventsUrlEnv" -}}
{{- $ev := .Values.redis.events }}
{{- if $ev.existingSecret }}
{{- toJson (dict "name" "EVENTS_REDIS_URL" "from" "redis.events" "valueFrom" (dict "secretKeyRef" (dict "name" $ev.existingSecret "key" $ev.existingSecretKey))) }}
{{- else }}
{{- toJson (dict "name" "EVENTS_REDIS_URL" "from" "redis.events" "value" $ev.url) }}
{{- end }}
{{- end }}

{{/* Sidecar environment: (dict "ctx" $ctx "mode" "injected"|"standalone"). */}}
{{- define "entitlement-sidecar.sidecarEnv" -}}
{{- $ctx := .ctx }}
{{- $v := $ctx.Values }}
{{- $s := $v.sidecar }}
{{- $m := index $s .mode }}
{{- $e := list }}
{{- $e = append $e (dict "name" "PORT" "from" "sidecar.port" "value" ($s.port | int64 | toString)) }}
{{- $e = append $e (dict "name" "BIND_ADDRESS" "from" (printf "sidecar.%s.bindAddress" .mode) "value" $m.bindAddress) }}
{{- $e = append $e (dict "name" "HTTP_PORT" "from" (printf "sidecar.%s.httpPort" .mode) "value" ($m.httpPort | int64 | toString)) }}
{{- $e = append $e (dict "name" "HTTP_BIND_ADDRESS" "from" "(the chart: probes need all interfaces)" "value" "0.0.0.0") }}
{{- $e = append $e (dict "name" "OFFLINE" "from" "sidecar.offline" "value" (include "entitlement-sidecar.bool" $s.offline)) }}
{{- $e = append $e (include "entitlement-sidecar.apiKeyEnv" $ctx | fromJson) }}
{{- $e = append $e (dict "name" "API_URL" "from" "apiUrl" "value" (include "entitlement-sidecar.apiUrl" $ctx)) }}
{{- $e = append $e (dict "name" "WS_ENABLED" "from" "sidecar.wsEnabled" "value" (include "entitlement-sidecar.bool" $s.wsEnabled)) }}
{{- $e = append $e (dict "name" "UPSTREAM_TIMEOUT_SECONDS" "from" "sidecar.upstreamTimeoutSeconds" "value" (toString $s.upstreamTimeoutSeconds)) }}
{{- $e = append $e (dict "name" "UPSTREAM_RETRIES" "from" "sidecar.upstreamRetries" "value" ($s.upstreamRetries | int64 | toString)) }}
{{- $e = append $e (dict "name" "STARTUP_WAIT_SECONDS" "from" (printf "sidecar.%s.startupWaitSeconds" .mode) "value" ($m.startupWaitSeconds | int64 | toString)) }}
{{- if hasKey $m "workers" }}
{{- $e = append $e (dict "name" "WORKERS" "from" (printf "sidecar.%s.workers" .mode) "value" ($m.workers | int64 | toString)) }}
{{- end }}
{{- $e = append $e (dict "name" "ENTITLEMENTS_FALLBACK" "from" "sidecar.entitlementsFallback" "value" (ternary (toJson $s.entitlementsFallback) "" (not (empty $s.entitlementsFallback)))) }}
{{- $e = append $e (dict "name" "CACHE_MAX_SIZE_BYTES" "from" "sidecar.cacheMaxSizeBytes" "value" (ternary "" ($s.cacheMaxSizeBytes | int64 | toString) (kindIs "invalid" $s.cacheMaxSizeBytes))) }}
{{- $e = append $e (dict "name" "LOG_LEVEL" "from" "sidecar.logLevel" "value" (default $v.logLevel $s.logLevel)) }}
{{- $e = append $e (dict "name" "LOG_FORMAT" "from" "sidecar.logFormat" "value" (default $v.logFormat $s.logFormat)) }}
{{- $e = append $e (dict "name" "SHUTDOWN_GRACE_SECONDS" "from" "sidecar.shutdownGraceSeconds" "value" (toString $s.shutdownGraceSeconds)) }}
{{- $e = append $e (dict "name" "MAX_MESSAGE_BYTES" "from" "sidecar.maxMessageBytes" "value" ($s.maxMessageBytes | int64 | toString)) }}
{{- /* Off: SPOOL_DIR set to empty (the sidecar's own default is a spool under /tmp). */}}
{{- $spool := $s.spool }}
{{- $e = append $e (dict "name" "SPOOL_DIR" "from" "sidecar.spool.dir" "value" (ternary (include "entitlement-sidecar.spoolDir" $ctx) "" $spool.enabled) "keepEmpty" true) }}
{{- $e = append $e (dict "name" "SPOOL_MAX_BYTES" "from" "sidecar.spool.maxBytes" "value" (ternary ($spool.maxBytes | int64 | toString) "" $spool.enabled)) }}
{{- $redisOn := not (empty $v.redis.environmentPrefix) }}
{{- $e = concat $e (include "entitlement-sidecar.redisEnv" (dict "ctx" $ctx "on" $redisOn) | fromJsonArray) }}
{{- $e = append $e (dict "name" "REDIS_KEYS_TTL_IN_SECS" "from" "sidecar.redisKeysTtlSeconds" "value" (ternary ($s.redisKeysTtlSeconds | int64 | toString) "" $redisOn)) }}
{{- $e = append $e (dict "name" "REDIS_TIMEOUT_MS" "from" "redis.timeoutMs" "value" (ternary ($v.redis.timeoutMs | int64 | toString) "" $redisOn)) }}
{{- $e = append $e (dict "name" "REDIS_MAX_CONNECTIONS" "from" "redis.maxConnections" "value" (ternary ($v.redis.maxConnections | int64 | toString) "" $redisOn)) }}
{{- include "entitlement-sidecar.renderEnv" (dict "managed" $e "extra" $s.extraEnv "extraPath" "sidecar.extraEnv") }}
{{- end }}

{{- define "entitlement-sidecar.persistentCacheEnv" -}}
{{- $v := .Values }}
{{- $p := $v.persistentCache }}
{{- $e := list }}
{{- $e = append $e (include "entitlement-sidecar.apiKeyEnv" . | fromJson) }}
{{- $e = append $e (dict "name" "API_URL" "from" "apiUrl" "value" (include "entitlement-sidecar.apiUrl" .)) }}
{{- $e = concat $e (include "entitlement-sidecar.redisEnv" (dict "ctx" . "on" true) | fromJsonArray) }}
{{- $e = append $e (dict "name" "KEYS_TTL_IN_SECS" "from" "persistentCache.keysTtlSeconds" "value" ($p.keysTtlSeconds | int64 | toString)) }}
{{- $e = append $e (include "entitlement-sidecar.eventsUrlEnv" . | fromJson) }}
{{- $e = append $e (dict "name" "CONSUMER_GROUP" "from" "persistentCache.consumerGroup" "value" $p.consumerGroup) }}
{{- range $key, $name := dict "batchSize" "BATCH_SIZE" "batchesInFlight" "BATCHES_IN_FLIGHT" "blockMs" "BLOCK_MS" "claimIdleMs" "CLAIM_IDLE_MS" "epochCheckSeconds" "EPOCH_CHECK_SECONDS" }}
{{- $val := index $p $key }}
{{- $e = append $e (dict "name" $name "from" (printf "persistentCache.%s" $key) "value" (ternary "" ($val | int64 | toString) (kindIs "invalid" $val))) }}
{{- end }}
{{- $e = append $e (dict "name" "HTTP_PORT" "from" "persistentCache.httpPort" "value" ($p.httpPort | int64 | toString)) }}
{{- $e = append $e (dict "name" "HTTP_BIND_ADDRESS" "from" "(the chart: probes need all interfaces)" "value" "0.0.0.0") }}
{{- $e = append $e (dict "name" "LOG_LEVEL" "from" "persistentCache.logLevel" "value" (default $v.logLevel $p.logLevel)) }}
{{- $e = append $e (dict "name" "LOG_FORMAT" "from" "persistentCache.logFormat" "value" (default $v.logFormat $p.logFormat)) }}
{{- include "entitlement-sidecar.renderEnv" (dict "managed" $e "extra" $p.extraEnv "extraPath" "persistentCache.extraEnv") }}
{{- end }}

{{- define "entitlement-sidecar.upstreamEnv" -}}
{{- $v := .Values }}
{{- $u := $v.upstream }}
{{- $r := $v.redis }}
{{- $e := list }}
{{- $e = append $e (include "entitlement-sidecar.apiKeyEnv" . | fromJson) }}
{{- $e = append $e (dict "name" "UPSTREAM_PORT" "from" "upstream.port" "value" ($u.port | int64 | toString)) }}
{{- $e = append $e (dict "name" "UPSTREAM_BIND_ADDRESS" "from" "(the chart: a pod is reached on its own IP)" "value" "0.0.0.0") }}
{{- $e = append $e (dict "name" "UPSTREAM_DATABASE" "from" "upstream.persistence" "value" "/data/upstream.db") }}
{{- $catalog := ternary "/etc/entitlement-upstream/catalog.yaml" "" (or (not (empty $u.catalog.inline)) (not (empty $u.catalog.existingConfigMap))) }}
{{- $e = append $e (dict "name" "CATALOG_PATH" "from" "upstream.catalog" "value" $catalog) }}
{{- $publishes := include "entitlement-sidecar.upstreamPublishes" . }}
{{- $events := include "entitlement-sidecar.eventsUrlEnv" . | fromJson }}
{{- $built := and $publishes (not $r.events.url) (not $r.events.existingSecret) }}
{{- $pw := include "entitlement-sidecar.redisPasswordEnv" . | fromJson }}
{{- if not (and $built $r.existingSecret) }}{{ $pw = dict "name" "REDIS_PASSWORD" "from" "redis.existingSecret" "value" "" }}{{ end }}
{{- $e = append $e $pw }}
{{- if $built }}
{{- $auth := "" }}
{{- if $r.existingSecret }}{{ $auth = printf "%s:$(REDIS_PASSWORD)@" $r.username }}{{ else if $r.username }}{{ $auth = printf "%s@" $r.username }}{{ end }}
{{- $events = dict "name" "EVENTS_REDIS_URL" "from" "redis" "value" (printf "%s://%s%s:%d/%d" (ternary "rediss" "redis" $r.tls) $auth $r.host ($r.port | int64) ($r.db | int64)) }}
{{- else if not $publishes }}
{{- $events = dict "name" "EVENTS_REDIS_URL" "from" "redis.events" "value" "" }}
{{- end }}
{{- $e = append $e $events }}
{{- $e = append $e (dict "name" "REDIS_ENVIRONMENT_PREFIX" "from" "redis.environmentPrefix" "value" $r.environmentPrefix) }}
{{- $e = append $e (dict "name" "LOG_LEVEL" "from" "upstream.logLevel" "value" (default $v.logLevel $u.logLevel)) }}
{{- $e = append $e (dict "name" "LOG_FORMAT" "from" "upstream.logFormat" "value" (default $v.logFormat $u.logFormat)) }}
{{- include "entitlement-sidecar.renderEnv" (dict "managed" $e "extra" $u.extraEnv "extraPath" "upstream.extraEnv") }}
{{- end }}

{{/*
Render managed variables (those with a value or valueFrom, or marked keepEmpty: an empty value
that means something, unlike unset) followed by extraEnv, after checking
that extraEnv names no managed variable and no name twice. Output: a YAML list.
*/}}
{{- define "entitlement-sidecar.renderEnv" -}}
{{- $managed := dict }}
{{- range .managed }}{{ $_ := set $managed .name .from }}{{ end }}
{{- $errors := list }}
{{- $seen := dict }}
{{- range $i, $x := .extra }}
{{- if hasKey $managed $x.name }}
{{- $errors = append $errors (printf "%s[%d] sets %s, which the chart manages (from %s); set that value instead of overriding it" $.extraPath $i $x.name (get $managed $x.name)) }}
{{- else if hasKey $seen $x.name }}
{{- $errors = append $errors (printf "%s[%d] sets %s a second time" $.extraPath $i $x.name) }}
{{- end }}
{{- $_ := set $seen $x.name true }}
{{- end }}
{{- if $errors }}
{{- fail (printf "\n\nentitlement-sidecar: invalid values:\n  - %s\n" (join "\n  - " $errors)) }}
{{- end }}
{{- $out := list }}
{{- range .managed }}
{{- if .valueFrom }}
{{- $out = append $out (dict "name" .name "valueFrom" .valueFrom) }}
{{- else if or (ne (toString .value) "") .keepEmpty }}
{{- $out = append $out (dict "name" .name "value" (toString .value)) }}
{{- end }}
{{- end }}
{{- toYaml (concat $out .extra) }}
{{- end }}
