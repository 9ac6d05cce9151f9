{{/* Names and labels. */}}
{{- define "pao.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pao.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "pao.workerName" -}}
{{- printf "%s-worker" (include "pao.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pao.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "pao.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pao
{{- end -}}

{{/* Selector labels; call with (dict "ctx" $ "component" "api"|"worker"). */}}
{{- define "pao.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pao.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "pao.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pao.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "pao.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "pao.sqlite" -}}
{{- if eq .Values.database.kind "sqlite" -}}true{{- end -}}
{{- end -}}

{{- define "pao.catalogConfigMapName" -}}
{{- if .Values.catalog.existingConfigMap -}}
{{- .Values.catalog.existingConfigMap -}}
{{- else -}}
{{- printf "%s-catalog" (include "pao.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "pao.pvcName" -}}
{{- default (printf "%s-data" (include "pao.fullname" .)) .Values.database.sqlite.persistence.existingClaim -}}
{{- end -}}

{{- define "pao.scheme" -}}
{{- if .Values.serverTls.enabled -}}HTTPS{{- else -}}HTTP{{- end -}}
{{- end -}}

{{/*
Checks the schema cannot express (values.schema.json holds the rest). Included by the
Deployment template, so a failing install stops before anything is applied.
*/}}
{{- define "pao.validate" -}}
{{- $v := .Values -}}
{{- $minGrace := add (int $v.config.drainTimeoutSecs) 10 -}}
{{- if lt (int $v.terminationGracePeriodSeconds) (int $minGrace) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least config.drainTimeoutSecs + 10 (%d): pao drains for drainTimeoutSecs, then takes up to 7 s more to hand work back and close, and Kubernetes kills it at the end of the grace period" (int $v.terminationGracePeriodSeconds) (int $minGrace)) -}}
{{- end -}}
{{- $sources := 0 -}}
{{- if $v.catalog.existingConfigMap }}{{ $sources = add1 $sources }}{{ end -}}
{{- if $v.catalog.files }}{{ $sources = add1 $sources }}{{ end -}}
{{- if $v.catalog.volume }}{{ $sources = add1 $sources }}{{ end -}}
{{- if ne (int $sources) 1 -}}
{{- fail "catalog: set exactly one of catalog.existingConfigMap, catalog.files or catalog.volume" -}}
{{- end -}}
{{- if and $v.plugins.enabled (not $v.plugins.volume) -}}
{{- fail "plugins.enabled needs plugins.volume (a volume source holding <name>.wasm and <name>.toml)" -}}
{{- end -}}
{{- if $v.config.extraConfig -}}
{{- if not (regexMatch "\\A(?:[ \\t]*(?:#[^\\n]*)?\\r?\\n)*[ \\t]*\\[" $v.config.extraConfig) -}}
{{- fail "config.extraConfig must start with a table header ([auth], [[auth.tokens]], [env], …): a bare key there would belong to the table the chart wrote last" -}}
{{- end -}}
{{- $dup := regexFind "(?m)^[ \\t]*\\[[ \\t]*(secret_provider|sealing|metrics|plugins|tls)[ \\t]*\\]" $v.config.extraConfig -}}
{{- if $dup -}}
{{- fail (printf "config.extraConfig repeats %s, which the chart writes from its values (config.sealing, config.metrics, plugins, serverTls, secrets)" (trim $dup)) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.serviceMonitor.enabled (not (or $v.config.metrics.tokenSha256 $v.config.metrics.public)) -}}
{{- fail "serviceMonitor.enabled needs config.metrics.tokenSha256 (the hash of the token in serviceMonitor.bearerTokenSecret) or config.metrics.public" -}}
{{- end -}}
{{- end -}}

{{/* The pod-level security context: the image runs as 10001:10001. */}}
{{- define "pao.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "pao.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Environment common to both Deployments; call with (dict "ctx" $ "workers" N|""). */}}
{{- define "pao.env" -}}
{{- $v := .ctx.Values -}}
- name: PAO_CONFIG
  value: /etc/pao/pao.toml
- name: PAO_LOG
  value: {{ $v.config.logLevel | quote }}
- name: PAO_LOG_FORMAT
  value: json
{{- if ne (toString .workers) "" }}
- name: PAO_WORKERS
  value: {{ .workers | quote }}
{{- end }}
{{- if eq $v.database.kind "postgres" }}
- name: PAO_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $v.database.postgres.existingSecret }}
      key: {{ $v.database.postgres.secretKey }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Volume mounts common to both Deployments. */}}
{{- define "pao.volumeMounts" -}}
- name: config
  mountPath: /etc/pao
  readOnly: true
- name: secrets
  mountPath: {{ .Values.secrets.mountPath }}
  readOnly: true
- name: catalog
  mountPath: {{ .Values.catalog.mountPath }}
  readOnly: true
- name: data
  mountPath: /data
- name: tmp
  mountPath: /tmp
{{- if .Values.plugins.enabled }}
- name: plugins
  mountPath: {{ .Values.plugins.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* Volumes common to both Deployments. */}}
{{- define "pao.volumes" -}}
# pao.toml and, with serverTls, tls/tls.crt + tls/tls.key: one projected volume, no subPath,
# so a renewed certificate reaches the running pods (pao re-reads the files).
- name: config
  projected:
    defaultMode: 0440
    sources:
      - configMap:
          name: {{ include "pao.fullname" . }}
          items:
            - key: pao.toml
              path: pao.toml
{{- if .Values.serverTls.enabled }}
      - secret:
          name: {{ .Values.serverTls.secretName }}
          items:
            - key: tls.crt
              path: tls/tls.crt
            - key: tls.key
              path: tls/tls.key
{{- end }}
- name: secrets
  secret:
    secretName: {{ .Values.secrets.existingSecret }}
    defaultMode: 0440
- name: catalog
{{- if .Values.catalog.volume }}
{{ toYaml .Values.catalog.volume | indent 2 }}
{{- else }}
  configMap:
    name: {{ include "pao.catalogConfigMapName" . }}
{{- end }}
- name: data
{{- if include "pao.sqlite" . }}
  persistentVolumeClaim:
    claimName: {{ include "pao.pvcName" . }}
{{- else }}
  emptyDir:
    sizeLimit: {{ .Values.dataSizeLimit }}
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- if .Values.plugins.enabled }}
- name: plugins
{{ toYaml .Values.plugins.volume | indent 2 }}
{{- end }}
{{- end -}}

{{/* Scheduling settings common to both Deployments; call with (dict "ctx" $ "component" …). */}}
{{- define "pao.scheduling" -}}
{{- $v := .ctx.Values -}}
{{- with $v.nodeSelector }}
nodeSelector:
{{ toYaml . | indent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
{{ toYaml . | indent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
{{ toYaml . | indent 2 }}
{{- end }}
{{- if $v.topologySpreadConstraints }}
topologySpreadConstraints:
{{ toYaml $v.topologySpreadConstraints | indent 2 }}
{{- else }}
# Replicas on different nodes where the cluster allows it.
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
{{ include "pao.selectorLabels" . | indent 8 }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
{{ toYaml . | indent 2 }}
{{- end }}
{{- end -}}

{{- define "pao.hpaMetrics" -}}
{{- $a := .autoscaling -}}
- type: Resource
  resource:
    name: cpu
    target:
      type: Utilization
      averageUtilization: {{ $a.targetCPUUtilizationPercentage }}
- type: Resource
  resource:
    name: memory
    target:
      type: Utilization
      averageUtilization: {{ $a.targetMemoryUtilizationPercentage }}
{{- if $a.queueDepth.enabled }}
{{- if eq $a.queueDepth.type "Object" }}
# pao_queue_depth of the API Service (the store-wide queue; every replica reports it):
# desired replicas = depth / averageValue.
- type: Object
  object:
    metric:
      name: pao_queue_depth
    describedObject:
      apiVersion: v1
      kind: Service
      name: {{ .service }}
    target:
      type: AverageValue
      averageValue: {{ $a.queueDepth.averageValue | quote }}
{{- else }}
# pao_queue_depth of each pod, averaged over the pods.
- type: Pods
  pods:
    metric:
      name: pao_queue_depth
    target:
      type: AverageValue
      averageValue: {{ $a.queueDepth.averageValue | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "pao.egressRules" -}}
{{- $np := .Values.networkPolicy -}}
# DNS.
- to:
    - namespaceSelector:
        {{- toYaml $np.egress.dnsNamespaceSelector | nindent 8 }}
      podSelector:
        {{- toYaml $np.egress.dnsPodSelector | nindent 8 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- if eq .Values.database.kind "postgres" }}
# PostgreSQL{{ if not $np.egress.database.cidrs }}, at any address until networkPolicy.egress.database.cidrs narrows it{{ end }}.
{{- if $np.egress.database.cidrs }}
- to:
    {{- range $np.egress.database.cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
{{- else }}
- ports:
{{- end }}
    {{- range $np.egress.database.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end }}
{{- range $np.egress.services }}
# {{ default "outside services" .name }}.
- to:
    {{- range .cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    {{- range .ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end }}
{{- end -}}
