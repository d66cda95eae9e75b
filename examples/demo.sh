#!/usr/bin/env bash
# The main job end to end on the example data: `make demo` runs this with .venv on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "database: ${ORCH_DATABASE_URL:-sqlite:///orch.db}"
orch init
orch plan validate examples/plan.yaml
orch plan apply examples/plan.yaml
orch customers import examples/customers.csv
orch events import examples/events.csv
orch campaigns list
orch caps list
orch exclusions list
orch audit
