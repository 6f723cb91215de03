{{/* Names, labels and the pieces every workload shares. */}}

{{- define "aldea.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Deployments are named <release>-<component> (e.g. rel-gateway). */}}
{{- define "aldea.name" -}}
{{- printf "%s-%s" .root.Release.Name .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aldea.selectorLabels" -}}
app.kubernetes.io/name: aldea
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "aldea.labels" -}}
{{ include "aldea.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: aldea
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "aldea.tag" -}}
{{- default .Chart.AppVersion .Values.image.tag -}}
{{- end -}}

{{/* The image by digest when one is given (what production should pin), else by tag. */}}
{{- define "aldea.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (include "aldea.tag" .) -}}
{{- end -}}
{{- end -}}

{{/* stt's image on GPUs: the CUDA build. */}}
{{- define "aldea.gpuImage" -}}
{{- if .Values.image.gpuDigest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.gpuDigest -}}
{{- else -}}
{{- printf "%s:%s%s" .Values.image.repository (include "aldea.tag" .) .Values.image.gpuTagSuffix -}}
{{- end -}}
{{- end -}}

{{- define "aldea.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ include "aldea.fullname" . }}{{- else -}}default{{- end -}}
{{- end -}}

{{/* The Redis URL services use: the in-chart cluster's nodes, an external one, or none (the secret's). */}}
{{- define "aldea.redisUrl" -}}
{{- if .Values.redis.inChart -}}
{{- $nodes := list -}}
{{- range $i, $_ := until (int .Values.redis.replicas) -}}
{{- $nodes = append $nodes (printf "redis://%s-redis-%d.%s-redis.%s.svc.cluster.local:6379" $.Release.Name $i $.Release.Name $.Values.redis.namespace) -}}
{{- end -}}
{{- join "," $nodes -}}
{{- else -}}
{{- .Values.redis.externalUrl -}}
{{- end -}}
{{- end -}}

{{/* The container security context of every container: non-root, read-only root, no privileges. */}}
{{- define "aldea.containerSecurityContext" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  runAsUser: {{ .Values.podSecurityContext.runAsUser }}
  capabilities:
    drop: ["ALL"]
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* The pod-level settings every workload shares. */}}
{{- define "aldea.podSpec" -}}
serviceAccountName: {{ include "aldea.serviceAccountName" .root }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: {{ .root.Values.topologySpread.zoneKey }}
    whenUnsatisfiable: {{ .root.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "aldea.selectorLabels" . | nindent 8 }}
  - maxSkew: 1
    topologyKey: {{ .root.Values.topologySpread.hostKey }}
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "aldea.selectorLabels" . | nindent 8 }}
{{- end -}}

{{/* Settings from the ConfigMap and credentials from the Secret. */}}
{{- define "aldea.env" -}}
envFrom:
  - configMapRef:
      name: {{ include "aldea.fullname" .root }}-settings
env:
  - name: ALDEA_SERVICE_TOKEN
    valueFrom:
      secretKeyRef: {name: {{ .root.Values.secrets.name }}, key: service-token}
  - name: ALDEA_JWT_SECRET
    valueFrom:
      secretKeyRef: {name: {{ .root.Values.secrets.name }}, key: jwt-secret}
{{- if .database }}
  - name: ALDEA_DATABASE_URL
    valueFrom:
      secretKeyRef: {name: {{ .root.Values.secrets.name }}, key: database-url}
{{- end }}
{{- if and .redis (not .root.Values.redis.inChart) (not .root.Values.redis.externalUrl) }}
  - name: ALDEA_REDIS_URL
    valueFrom:
      secretKeyRef: {name: {{ .root.Values.secrets.name }}, key: redis-url}
{{- end }}
{{- end -}}

{{/* Probes on /live and /ready at the named port; the startup probe waits for a model load. */}}
{{- define "aldea.probes" -}}
startupProbe:
  httpGet: {path: /live, port: http}
  periodSeconds: 5
  failureThreshold: {{ .startupFailures | default 24 }}
livenessProbe:
  httpGet: {path: /live, port: http}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /ready, port: http}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end -}}

{{/* A PodDisruptionBudget for one component. */}}
{{- define "aldea.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "aldea.name" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "aldea.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ .root.Values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "aldea.selectorLabels" . | nindent 6 }}
{{- end -}}

{{/* A ClusterIP Service on the architecture's port. */}}
{{- define "aldea.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "aldea.name" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "aldea.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  {{- if .headless }}
  clusterIP: None
  publishNotReadyAddresses: false
  {{- end }}
  selector:
    {{- include "aldea.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ .port }}
      targetPort: http
      protocol: TCP
{{- end -}}

{{/* An HPA on CPU, or on a per-pod metric the service exports. */}}
{{- define "aldea.hpa" -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "aldea.name" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "aldea.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "aldea.name" . }}
  minReplicas: {{ .scaling.minReplicas }}
  maxReplicas: {{ .scaling.maxReplicas }}
  metrics:
    {{- if .metric }}
    - type: Pods
      pods:
        metric:
          name: {{ .metric }}
        target:
          type: AverageValue
          averageValue: {{ .target | quote }}
    {{- else }}
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .scaling.cpuUtilization }}
    {{- end }}
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 300
      policies:
        - type: Pods
          value: 1
          periodSeconds: 60
{{- end -}}

{{/* A NetworkPolicy egress rule to one component's pods on a port. */}}
{{- define "aldea.to" -}}
- to:
    - podSelector:
        matchLabels:
          {{- include "aldea.selectorLabels" (dict "root" .root "component" .component) | nindent 10 }}
  ports:
    - {port: {{ .port }}, protocol: TCP}
{{- end -}}
