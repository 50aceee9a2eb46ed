#!/usr/bin/env bash
# Checks the monitoring files in deploy/:
#   - deploy/prometheus/ledgerq-alerts.yml       parses (promtool check rules)
#   - deploy/prometheus/ledgerq-alerts-test.yml  passes (promtool test rules)
#   - deploy/grafana/ledgerq-dashboard.json      is valid JSON (python3 -m json.tool)
# Usage: tests/deploy_rules_test.sh [REPO_ROOT]   (default: the directory above this script)
# Exits non-zero on the first failure. Needs promtool (Debian: apt-get install -y prometheus)
# and python3.
set -euo pipefail

root="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
rules="$root/deploy/prometheus/ledgerq-alerts.yml"
rule_tests="$root/deploy/prometheus/ledgerq-alerts-test.yml"
dashboard="$root/deploy/grafana/ledgerq-dashboard.json"

fail() {
  echo "deploy_rules_test: FAIL: $*" >&2
  exit 1
}

command -v promtool >/dev/null 2>&1 ||
  fail "promtool not found (Debian: apt-get install -y prometheus)"
command -v python3 >/dev/null 2>&1 || fail "python3 not found"
for f in "$rules" "$rule_tests" "$dashboard"; do
  [[ -f "$f" ]] || fail "missing $f"
done

echo "== promtool check rules $rules"
promtool check rules "$rules" || fail "promtool check rules $rules"

echo "== promtool test rules $rule_tests"
promtool test rules "$rule_tests" || fail "promtool test rules $rule_tests"

echo "== python3 -m json.tool $dashboard"
python3 -m json.tool "$dashboard" >/dev/null || fail "$dashboard is not valid JSON"

echo "deploy_rules_test: ok"
