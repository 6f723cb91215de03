{{/*
A stateless service's Deployment (+ Service, PDB, HPA): the platform, the dashboard, the usage
worker. Params: root, component, args, port, values (the component's values), database, redis,
secrets (the service token and JWT secret), service.
*/}}
{{- define "aldea.workload" -}}
{{- $root := .root -}}
{{- $v := .values -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "aldea.name" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "aldea.labels" . | nindent 4 }}
spec:
  {{- if not (and $v.autoscaling $v.autoscaling.enabled) }}
  replicas: {{ $v.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxUnavailable: 0, maxSurge: 1}
  selector:
    matchLabels:
      {{- include "aldea.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "aldea.labels" . | nindent 8 }}
      annotations:
        checksum/settings: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ .port | quote }}
    spec:
      {{- include "aldea.podSpec" . | nindent 6 }}
      terminationGracePeriodSeconds: 30
      containers:
        - name: {{ .component }}
          image: {{ include "aldea.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: {{ toJson .args }}
          ports:
            - {name: http, containerPort: {{ .port }}, protocol: TCP}
          {{- if .secrets }}
          {{- include "aldea.env" . | nindent 10 }}
          {{- else }}
          envFrom:
            - configMapRef:
                name: {{ include "aldea.fullname" $root }}-settings
          {{- end }}
          {{- include "aldea.probes" dict | nindent 10 }}
          lifecycle:
            preStop:
              sleep: {seconds: 5}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          {{- include "aldea.containerSecurityContext" $root | nindent 10 }}
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
            - {name: data, mountPath: /data}
      volumes:
        - name: tmp
          emptyDir: {}
        - name: data
          emptyDir: {}
{{- if .service }}
---
{{ include "aldea.service" . }}
{{- end }}
---
{{ include "aldea.pdb" . }}
{{- if and $v.autoscaling $v.autoscaling.enabled }}
---
{{ include "aldea.hpa" (merge (dict "scaling" $v.autoscaling) .) }}
{{- end }}
{{- end -}}
