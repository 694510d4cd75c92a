#!/usr/bin/env bash
# The test command: install what is missing, lint, start the real test cluster, run every test.
# Cluster tests fail (not skip) under CI=true when the cluster cannot be started.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
python3 -m ruff check .      # lint must pass (config in pyproject.toml)
bash docker/slurm-cluster/cluster.sh up
python3 -m pytest -q -p no:cacheprovider "$@"
