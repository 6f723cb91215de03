#!/usr/bin/env python3
"""`helm lint --strict` then `helm template`, without a helm binary: helm-python-sdk (the Helm Go SDK
as a bundled library). usage: check.py CHART OUT.yaml [--values FILE] [--set k=v,...]
[--namespace NS] [--kube-version X.Y.Z]. Exit 1 on any lint warning or error."""
import argparse
import sys

import helm_python as helm
import yaml

ap = argparse.ArgumentParser()
ap.add_argument("chart")
ap.add_argument("out")
ap.add_argument("--values", action="append", default=[])
ap.add_argument("--set", default="")
ap.add_argument("--name", default="aldea")
ap.add_argument("--namespace", default="aldea")
ap.add_argument("--kube-version", default=None)
a = ap.parse_args()


def merge(base, extra):
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


values = {}
for path in a.values:
    with open(path) as f:
        merge(values, yaml.safe_load(f) or {})
if a.set:
    merge(values, helm.parse_set_string(a.set))
result = helm.lint(a.chart, values, strict=True, namespace=a.namespace, kube_version=a.kube_version)
messages = result.get("messages", []) or []
for m in messages:
    print(f"[lint severity {m.get('severity')}] {m.get('path')}: {m.get('error', '').strip()}")
# Severities: 1 info, 2 warning, 3 error; strict: warnings fail too.
if [m for m in messages if m.get("severity", 0) >= 2] or result.get("errors"):
    print("helm lint --strict: FAILED")
    sys.exit(1)
with helm.Chart.load(a.chart) as chart:
    chart.validate_schema(chart.merge_values(values))
    rendered = chart.render(values, name=a.name, namespace=a.namespace, is_install=True)
docs = [f"# Source: {k}\n{v.strip()}\n" for k, v in sorted(rendered.items()) if v.strip() and not k.endswith("NOTES.txt")]
with open(a.out, "w") as f:
    f.write("---\n".join(docs))
print(f"helm lint --strict: ok; rendered {len(docs)} templates -> {a.out}")
