#!/usr/bin/env bash
# The test command: install what is missing, lint, start the real test cluster, run every test.
# Cluster tests fail (not skip) under CI=true when the cluster cannot be started.
#
# Every test includes the remote tests: over SSH to a sshd in the 24.11 root, which the
# remote_node fixture starts. Under CI=true (or when asked for) it then also runs:
#   the Slurm version matrix   SX_VERSIONS="24.11 26.05" (CI default; empty: none): each
#                              release's cluster in its Debian root (root-cluster.sh), and the
#                              representative cluster tests below against it
#   the Docker image           SX_DOCKER=1 (CI default): scripts/docker-test.sh builds the image,
#                              runs it and the example sweep inside it
#   the pytest plugin example  always: examples/pytest-plugin against the native cluster
set -euo pipefail
cd "$(dirname "$0")/.."
IN_CI=0
case "${CI:-}" in 1 | true | TRUE | yes) IN_CI=1 ;; esac
if [ "$IN_CI" = 1 ]; then
    SX_VERSIONS="${SX_VERSIONS-24.11 26.05}"
    SX_DOCKER="${SX_DOCKER-1}"
fi
timed() { # label cmd...: run, and say how long it took (CI logs keep the figures)
    local label="$1" t=$SECONDS rc=0
    shift
    "$@" || rc=$?
    echo "[test] $label: $((SECONDS - t)) s (exit $rc)"
    return $rc
}

bash scripts/install.sh
# slurmexp's bytecode, once: with PYTHONDONTWRITEBYTECODE=1 (set on this project's machines) every
# Python process the tests start would compile what it imports of a fresh clone again.
python3 -m compileall -q slurmexp
python3 -m ruff check .      # lint must pass (config in pyproject.toml)
bash docker/slurm-cluster/cluster.sh up
timed "tests on Slurm $(sinfo --version | awk '{print $2}')" python3 -m pytest -q -p no:cacheprovider --durations=15 "$@"
timed "pytest plugin example" python3 -m pytest -q -p no:cacheprovider -p slurmexp.testing examples/pytest-plugin

# What every Slurm release must pass: submit, arrays, GPUs by type, partition/QOS limits,
# reservations, preemption, node failure, live sacct/squeue/scontrol/sacctmgr parsing, job-id
# reuse after a controller reset, site discover, reconcile through a controller restart and a
# slurmdbd outage, `slurmexp cron --scrontab` (22.05 has no scrontab).
MATRIX_TESTS=(
    tests/test_cluster.py
    tests/test_slurm_backend.py
    tests/test_discover.py::test_discover_from_live_cluster
    tests/test_launch_cluster.py::test_gpu_grid_lands_on_a100_partition_with_provenance
    tests/test_launch_cluster.py::test_refused_with_exit_2_and_nothing_queued
    tests/test_launch_cluster.py::test_job_ids_reused_after_controller_state_loss_are_never_confused
    tests/test_reconcile_cluster.py::test_node_failure_is_retried_and_completes
    tests/test_reconcile_cluster.py::test_preempted_with_requeue_is_a_new_attempt_of_the_same_job
    tests/test_reconcile_cluster.py::test_slurmctld_restart_mid_sweep_loses_nothing
    tests/test_reconcile_cluster.py::test_slurmdbd_down_changes_nothing_then_catches_up
    tests/test_scron_cluster.py
)
failed=()
for v in ${SX_VERSIONS:-}; do
    if ! timed "Slurm $v cluster up" bash docker/slurm-cluster/root-cluster.sh "$v" up \
        || ! SX_TEST_CLUSTER="$v" timed "tests on Slurm $v" \
            python3 -m pytest -q -p no:cacheprovider -m cluster "${MATRIX_TESTS[@]}"; then
        failed+=("Slurm $v")
    fi
done
# The remote path (slurmexp on "a laptop", no Slurm on PATH, driving the 24.11 root's cluster
# through a real sshd inside that root) is part of the first run above: the remote_node fixture
# starts remote-sshd.sh (and the 24.11 root), and under CI=true fails rather than skips when it
# cannot. (It used to be run a second time here, the same tests against the same sshd: 74-77 s.)
if [ "${SX_DOCKER:-0}" = 1 ]; then
    timed "Docker image" bash scripts/docker-test.sh || failed+=("Docker image")
fi
if [ "${#failed[@]}" -gt 0 ]; then
    echo "[test] FAILED: ${failed[*]}" >&2
    exit 1
fi
