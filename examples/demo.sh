#!/usr/bin/env bash
# The main job end to end on the example data: `make demo` runs this with .venv on PATH.
# Safe to run again: every step is idempotent (or starts from a fresh simulation database).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p out
echo "== database: ${ORCH_DATABASE_URL:-sqlite:///orch.db}"
orch init
orch plan validate examples/plan.yaml
orch plan apply examples/plan.yaml
orch customers import examples/customers.csv
orch events import examples/events.csv
orch segments refresh --as-of 2026-10-31
orch campaigns list
echo "== the daily run for 2026-11-01"
orch run --date 2026-11-01
orch explain C000042 --date 2026-11-01
orch export --date 2026-11-01 --channel email out/sends-2026-11-01.csv
orch audit
echo "== does the bandit beat the marketer? A simulated shop, day by day (\`orch demo\`)"
orch demo --out out/demo
orch --database-url sqlite:///out/demo/lints.db policy list
echo "== open out/demo/report.html in a browser; the send list is out/sends-2026-11-01.csv"
