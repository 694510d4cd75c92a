#!/usr/bin/env bash
# Re-capture the real Slurm output that tests/test_slurm_parse.py parses, from the test cluster
# (docker/slurm-cluster/cluster.sh up). Run as root from anywhere; takes about 4 minutes (the
# TIMEOUT job needs its minute to run out). Jobs are named sx-test-cap-* so they are easy to
# find; nothing here resets or stops the cluster, but `fail-node c2` briefly takes c2 down.
#
#   bash tests/data/capture.sh [OUT_DIR]     (default: tests/data/captured)
#
# The sacct/squeue field lists come from slurmexp.backends.slurm_parse, and are written next to
# the output (sacct_fields.txt, squeue_format.txt) so that the captured files stay readable
# after the product's field list changes.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
OUT="${1:-$HERE/captured}"
CLUSTER_SH="$REPO/docker/slurm-cluster/cluster.sh"
export SLURM_TIME_FORMAT=standard
SEP=$'\x1f'
mkdir -p "$OUT"
cd /tmp

say() { printf '[capture] %s\n' "$*" >&2; }

SACCT_FIELDS="$(cd "$REPO" && python3 -c 'from slurmexp.backends.slurm_parse import SACCT_FIELDS; print(",".join(SACCT_FIELDS))')"
SQUEUE_FMT="$(cd "$REPO" && python3 -c 'from slurmexp.backends.slurm_parse import squeue_format; print(squeue_format(), end="")')"
QOS_FIELDS="$(cd "$REPO" && python3 -c 'from slurmexp.backends.slurm_parse import QOS_FIELDS; print(",".join(QOS_FIELDS))')"
ASSOC_FIELDS="$(cd "$REPO" && python3 -c 'from slurmexp.backends.slurm_parse import ASSOC_FIELDS; print(",".join(ASSOC_FIELDS))')"
echo "$SACCT_FIELDS" >"$OUT/sacct_fields.txt"
printf '%s\n' "$SQUEUE_FMT" | tr "$SEP" ',' >"$OUT/squeue_format.txt"
echo "$QOS_FIELDS" >"$OUT/qos_fields.txt"
echo "$ASSOC_FIELDS" >"$OUT/assoc_fields.txt"

# Job ids restart after a controller reset while accounting keeps the old jobs: never look
# before this script started.
SINCE="$(date -d '-5 seconds' +%Y-%m-%dT%H:%M:%S)"

sbatch_p() { sbatch --parsable --output=/dev/null "$@" | cut -d';' -f1; }

sacct_raw() { # ids...
    sacct -n -P "--delimiter=$SEP" -D -o "$SACCT_FIELDS" -S "$SINCE" -j "$(IFS=,; echo "$*")"
}

# wait_sacct "STATE_REGEX" N ids... : until N allocation rows match the state regex and no
# bracketed pending row is left.
wait_sacct() {
    local want="$1" n="$2" deadline=$((SECONDS + ${WAIT:-180})) out rows
    shift 2
    while :; do
        out="$(sacct -n -X -P "--delimiter=$SEP" -D -o JobID,State -S "$SINCE" -j "$(IFS=,; echo "$*")" || true)"
        rows="$(printf '%s\n' "$out" | grep -v '^$' | grep -v '\[' | cut -d"$SEP" -f2 | grep -cE "^($want)" || true)"
        if [ "$rows" -ge "$n" ] && ! printf '%s' "$out" | grep -q '\['; then return 0; fi
        if ((SECONDS > deadline)); then say "timeout waiting for $* ($want x$n): $out"; return 1; fi
        sleep 1
    done
}

wait_running() { # id node
    local deadline=$((SECONDS + 60))
    until squeue -h -j "$1" -o %T | grep -q RUNNING; do
        ((SECONDS > deadline)) && { say "job $1 did not start"; return 1; }
        sleep 0.5
    done
}

# --- static facts ---------------------------------------------------------------------------
say "scontrol / sacctmgr"
scontrol -o show partition >"$OUT/scontrol_partition.txt"
scontrol -o show node >"$OUT/scontrol_node.txt"
scontrol -o show reservation >"$OUT/scontrol_reservation.txt"
scontrol show config >"$OUT/scontrol_config.txt"
sacctmgr -n -P show qos "format=$QOS_FIELDS" >"$OUT/sacctmgr_qos.txt"
sacctmgr -n -P show user root withassoc "format=$ASSOC_FIELDS" >"$OUT/sacctmgr_assoc.txt"

# --- sbatch ---------------------------------------------------------------------------------
say "sbatch --parsable / --test-only"
sbatch --parsable --output=/dev/null --job-name=sx-test-cap-parsable --wrap true >"$OUT/sbatch_parsable.txt"
sbatch --test-only --output=/dev/null --job-name=sx-test-cap-testonly --wrap true \
    >/dev/null 2>"$OUT/sbatch_test_only_ok.txt"
sbatch --test-only --output=/dev/null --job-name=sx-test-cap-testonly -p nosuchpartition --wrap true \
    >/dev/null 2>"$OUT/sbatch_test_only_refused_partition.txt" || true
sbatch --test-only --output=/dev/null --job-name=sx-test-cap-testonly -p gpu --gres=gpu:h100:1 --wrap true \
    >/dev/null 2>"$OUT/sbatch_test_only_refused_gres.txt" || true

# --- long-running captures first, so they overlap ------------------------------------------
say "TIMEOUT job (runs ~1-2 minutes)"
TIMEOUT_JOB="$(sbatch_p --job-name=sx-test-cap-timeout -p cpu -w c1 --time=1 --wrap 'sleep 120')"

say "pending arrays (held, and with a begin time)"
PEND_HELD="$(sbatch_p --job-name=sx-test-cap-pending --hold --array=0-9%4 --comment=slurmexp:capture --wrap 'sleep 1')"
PEND_BEGIN="$(sbatch_p --job-name=sx-test-cap-pending --begin=now+3600 --array=1,3,5-7 --wrap 'sleep 1')"
deadline=$((SECONDS + 30))
until [ -n "$(sacct_raw "$PEND_HELD" "$PEND_BEGIN")" ] || ((SECONDS > deadline)); do sleep 0.5; done
sleep 1
sacct_raw "$PEND_HELD" "$PEND_BEGIN" >"$OUT/sacct_pending_array.txt"
squeue -h -r -j "$PEND_HELD,$PEND_BEGIN" -o "$SQUEUE_FMT" >"$OUT/squeue_pending_array_r.txt"
squeue -h -j "$PEND_HELD,$PEND_BEGIN" -o "$SQUEUE_FMT" >"$OUT/squeue_pending_array.txt"
scancel "$PEND_HELD" "$PEND_BEGIN"
sleep 1
sacct_raw "$PEND_HELD" >"$OUT/sacct_cancelled_pending_array.txt"

say "completed array with srun steps (MaxRSS, TotalCPU)"
ARRAY="$(sbatch_p --job-name=sx-test-cap-array --array=0-3 -p cpu --mem=300M --comment=slurmexp:capture \
    --wrap 'srun python3 -c "import time; x = bytearray(60 * 1024 * 1024); t = time.time()
while time.time() - t < 2: pass
time.sleep(5)"')"
# Early sacct output of a starting array: try to catch the transient bare-id row.
for _ in $(seq 40); do
    early="$(sacct_raw "$ARRAY")"
    if [ -n "$early" ]; then printf '%s\n' "$early" >"$OUT/sacct_array_early.txt"; break; fi
    sleep 0.1
done
squeue -h -r -j "$ARRAY" -o "$SQUEUE_FMT" >"$OUT/squeue_running_array.txt" || true

say "FAILED (exit 3), CANCELLED, gpu job on g1"
FAILED="$(sbatch_p --job-name=sx-test-cap-failed -p cpu --wrap 'exit 3')"
CANCELLED="$(sbatch_p --job-name=sx-test-cap-cancel -p cpu --wrap 'sleep 60')"
GPU="$(sbatch_p --job-name=sx-test-cap-gpu -p gpu --gres=gpu:a100:1 --wrap 'test "$SLURM_GPUS_ON_NODE" = 1; sleep 2')"
wait_running "$CANCELLED"
sleep 2
scancel "$CANCELLED"

WAIT=120 wait_sacct 'COMPLETED|FAILED' 4 "$ARRAY"
sleep 6  # let the steps' final accounting arrive
sacct_raw "$ARRAY" >"$OUT/sacct_completed_array.txt"
WAIT=60 wait_sacct 'FAILED' 1 "$FAILED"
sacct_raw "$FAILED" >"$OUT/sacct_failed.txt"
WAIT=60 wait_sacct 'CANCELLED' 1 "$CANCELLED"
sacct_raw "$CANCELLED" >"$OUT/sacct_cancelled.txt"
WAIT=60 wait_sacct 'COMPLETED|FAILED' 1 "$GPU"
sacct_raw "$GPU" >"$OUT/sacct_gpu.txt"

say "NODE_FAIL on c2"
NODEFAIL="$(sbatch_p --job-name=sx-test-cap-nodefail -p cpu -w c2 --wrap 'sleep 120')"
wait_running "$NODEFAIL"
sleep 2
bash "$CLUSTER_SH" fail-node c2
WAIT=60 wait_sacct 'NODE_FAIL' 1 "$NODEFAIL" || true
scontrol -o show node c2 >"$OUT/scontrol_node_down.txt"
bash "$CLUSTER_SH" resume-node c2
sacct_raw "$NODEFAIL" >"$OUT/sacct_node_fail.txt"
deadline=$((SECONDS + 60))
until sinfo -h -n c2 -o %t | grep -qE '^(idle|mix|alloc)'; do
    ((SECONDS > deadline)) && { say "c2 did not come back"; break; }
    sleep 1
done

say "preempted + requeued job on c2"
PREEMPTED="$(sbatch_p --job-name=sx-test-cap-preempted --requeue --qos=low -p cpu -w c2 --exclusive --wrap 'sleep 15')"
wait_running "$PREEMPTED"
sleep 2
PREEMPTOR="$(bash "$CLUSTER_SH" preempt c2 5 | cut -d';' -f1)"
# The requeued job waits for the preemptor, then runs again: -D shows both records.
WAIT=240 wait_sacct 'COMPLETED' 2 "$PREEMPTED" "$PREEMPTOR" || true
sacct_raw "$PREEMPTED" >"$OUT/sacct_preempted.txt"

say "waiting for the TIMEOUT job"
WAIT=240 wait_sacct 'TIMEOUT' 1 "$TIMEOUT_JOB"
sacct_raw "$TIMEOUT_JOB" >"$OUT/sacct_timeout.txt"

cat "$OUT"/sacct_{completed_array,failed,cancelled,gpu,node_fail,preempted,timeout}.txt \
    >"$OUT/sacct_all.txt"
say "done: $OUT"
