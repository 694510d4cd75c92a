#!/usr/bin/env bash
# The main job, end to end on the bundled test cluster: install, start the cluster, launch the
# example sweep (12 GPU runs), reconcile until every run is finished, print status and report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash docker/slurm-cluster/cluster.sh up
export SLURMEXP_HOME="${SLURMEXP_HOME:-$PWD/.demo-home}"
exp="$(slurmexp launch examples/lr-sweep/sweep.toml --site site.toml --new)"
echo "experiment: $exp"
for _ in $(seq 120); do
    slurmexp reconcile --quiet || true
    if slurmexp status "$exp" --format json | python3 -c '
import json, sys
runs = json.load(sys.stdin)
sys.exit(0 if all(r["state"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "LOST") for r in runs) else 1)'; then
        break
    fi
    sleep 5
done
slurmexp status "$exp"
slurmexp report "$exp" --format table
slurmexp report "$exp" --format html --output "$SLURMEXP_HOME/report-$exp.html"
echo "HTML report: $SLURMEXP_HOME/report-$exp.html"
