#!/usr/bin/env bash
# Re-capture the real Slurm output that tests/test_slurm_parse.py parses, from the test cluster
# (docker/slurm-cluster/cluster.sh up). Run as root from anywhere; takes about 4 minutes (the
# TIMEOUT job needs its minute to run out). Jobs are named sx-test-cap-* so they are easy to
# find; nothing here resets or stops the cluster, but `fail-node c2` briefly takes c2 down.
#
#   bash tests/data/capture.sh [SECTION...]      (default: all sections, in this order)
#   sections: version static sbatch pending array simple nodefail preempt timeout limits; and, only
#   when named, ctlddown (stops and restarts slurmctld: never on the shared native cluster)
#   SX_CAPTURE_OUT=DIR overrides the output folder (default: tests/data/captured/<version>, the
#                      Slurm release sinfo reports, e.g. 22.05)
#   SX_TEST_CLUSTER=24.11 (or 26.05) captures from that release's cluster in its Debian root
#                      (docker/slurm-cluster/root-cluster.sh), as the tests select it
#
# The cluster is shared: capture jobs run with --qos=high so that other people's big arrays do
# not hold them up, and the TIMEOUT job runs in reservation resv1 (c3) where fault injection by
# other tests does not kill it.
#
# The sacct/squeue field lists come from slurmexp.backends.slurm.parse, and are written next to
# the output (sacct_fields.txt, squeue_format.txt) so that the captured files stay readable
# after the product's field list changes.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CLUSTER_SH=("$REPO/docker/slurm-cluster/cluster.sh")
if [ -n "${SX_TEST_CLUSTER:-}" ] && [ "$SX_TEST_CLUSTER" != native ]; then
    CLUSTER_SH=("$REPO/docker/slurm-cluster/root-cluster.sh" "$SX_TEST_CLUSTER")
    eval "$(bash "${CLUSTER_SH[@]}" env)"
fi
VERSION="$(sinfo --version | awk '{print $2}' | cut -d. -f1,2)"
OUT="${SX_CAPTURE_OUT:-$HERE/captured/$VERSION}"
export SLURM_TIME_FORMAT=standard
SEP=$'\x1f'
mkdir -p "$OUT"
cd /tmp

say() { printf '[capture] %s\n' "$*" >&2; }

SACCT_FIELDS="$(cd "$REPO" && python3 -c 'from slurmexp.backends.slurm.parse import SACCT_FIELDS; print(",".join(SACCT_FIELDS))')"
SQUEUE_FMT="$(cd "$REPO" && python3 -c 'from slurmexp.backends.slurm.parse import squeue_format; print(squeue_format(), end="")')"
QOS_FIELDS="$(cd "$REPO" && python3 -c 'from slurmexp.backends.slurm.parse import QOS_FIELDS; print(",".join(QOS_FIELDS))')"
ASSOC_FIELDS="$(cd "$REPO" && python3 -c 'from slurmexp.backends.slurm.parse import ASSOC_FIELDS; print(",".join(ASSOC_FIELDS))')"
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

# wait_sacct "STATE_REGEX" N ids... : until N allocation rows match the state regex, no
# bracketed pending row is left, and no row is a placeholder: for seconds after a short job
# ends, slurmdbd can have its end but not its submit record (JobName "allocation", no
# partition/QOS/comment).
wait_sacct() {
    local want="$1" n="$2" deadline=$((SECONDS + ${WAIT:-180})) out rows
    shift 2
    while :; do
        out="$(sacct -n -X -P "--delimiter=$SEP" -D -o JobID,State,JobName -S "$SINCE" -j "$(IFS=,; echo "$*")" || true)"
        rows="$(printf '%s\n' "$out" | grep -v '^$' | grep -v '\[' | cut -d"$SEP" -f2 | grep -cE "^($want)" || true)"
        if [ "$rows" -ge "$n" ] && ! printf '%s' "$out" | grep -q '\[' \
            && ! printf '%s\n' "$out" | grep -q "${SEP}allocation\$"; then return 0; fi
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


sec_version() {
    sinfo --version >"$OUT/version.txt"
}

sec_ctlddown() {
    # What a client says while slurmctld is stopped (reconcile must call that "unavailable").
    # Stops and restarts this cluster's slurmctld: not run by default.
    say "clients while slurmctld is down"
    local cluster
    cluster="$(scontrol show config | awk '$1 == "ClusterName" {print $3}')"
    bash "${CLUSTER_SH[@]}" stop-ctld
    squeue "--clusters=$cluster" -h >/dev/null 2>"$OUT/squeue_clusters_ctld_down.txt" || true
    squeue -h >/dev/null 2>"$OUT/squeue_ctld_down.txt" || true
    sbatch "--clusters=$cluster" --parsable --output=/dev/null --job-name=sx-test-cap-down --wrap true \
        >/dev/null 2>"$OUT/sbatch_clusters_ctld_down.txt" || true
    sbatch --parsable --output=/dev/null --job-name=sx-test-cap-down --wrap true \
        >/dev/null 2>"$OUT/sbatch_ctld_down.txt" || true
    bash "${CLUSTER_SH[@]}" restart-ctld
}

sec_limits() {
    # sbatch refused by a submit limit, and by a full queue. A QOS of its own with
    # MaxSubmitJobsPerUser=1 (removed again at the end) gives the first without touching
    # anybody else's limits; the second fills the controller up to MaxJobCount with held
    # arrays (each task counts) for the ~2 minutes sbatch spends retrying, then cancels them.
    say "sbatch refused by MaxSubmitJobsPerUser, and by MaxJobCount"
    local max_count max_array size held=() i job
    sacctmgr -i add qos sxcaplimit MaxSubmitJobsPerUser=1 >/dev/null
    sacctmgr -i modify user root where account=research set qos+=sxcaplimit >/dev/null
    sleep 2  # slurmdbd pushes the new QOS and association to slurmctld
    sbatch --parsable --output=/dev/null --job-name=sx-test-cap-limit --qos=sxcaplimit --hold \
        --array=0-3 --wrap true >/dev/null 2>"$OUT/sbatch_max_submit_refused.txt" || true
    sacctmgr -i modify user root where account=research set qos-=sxcaplimit >/dev/null
    sacctmgr -i delete qos sxcaplimit >/dev/null
    max_count="$(scontrol show config | awk '$1 == "MaxJobCount" {print $3}')"
    max_array="$(scontrol show config | awk '$1 == "MaxArraySize" {print $3}')"
    size=$((max_array - 1))
    for i in $(seq $((max_count / size + 1))); do
        job="$(sbatch --parsable --output=/dev/null --job-name=sx-test-cap-fill --hold \
            "--array=0-$((size - 1))" --wrap true 2>"$OUT/sbatch_queue_full.txt")" || break
        held+=("${job%%;*}")
    done
    say "queue filled with ${#held[@]} held arrays of $size; sbatch retried until it gave up"
    [ ${#held[@]} -gt 0 ] && scancel "${held[@]}"
}

sec_static() {
    say "scontrol / sacctmgr"
    scontrol -o show partition >"$OUT/scontrol_partition.txt"
    scontrol -o show node >"$OUT/scontrol_node.txt"
    scontrol -o show reservation >"$OUT/scontrol_reservation.txt"
    scontrol show config >"$OUT/scontrol_config.txt"
    sacctmgr -n -P show qos "format=$QOS_FIELDS" >"$OUT/sacctmgr_qos.txt"
    sacctmgr -n -P show user root withassoc "format=$ASSOC_FIELDS" >"$OUT/sacctmgr_assoc.txt"
}

sec_sbatch() {
    say "sbatch --parsable / --test-only"
    sbatch --parsable --output=/dev/null --job-name=sx-test-cap-parsable --wrap true >"$OUT/sbatch_parsable.txt"
    sbatch --test-only --output=/dev/null --job-name=sx-test-cap-testonly --wrap true \
        >/dev/null 2>"$OUT/sbatch_test_only_ok.txt"
    sbatch --test-only --output=/dev/null --job-name=sx-test-cap-testonly -p nosuchpartition --wrap true \
        >/dev/null 2>"$OUT/sbatch_test_only_refused_partition.txt" || true
    sbatch --test-only --output=/dev/null --job-name=sx-test-cap-testonly -p gpu --gres=gpu:h100:1 --wrap true \
        >/dev/null 2>"$OUT/sbatch_test_only_refused_gres.txt" || true
}

sec_pending() {
    say "pending arrays (held, and with a begin time)"
    local held begin deadline
    held="$(sbatch_p --job-name=sx-test-cap-pending --hold --array=0-9%4 --comment=slurmexp:capture --wrap 'sleep 1')"
    begin="$(sbatch_p --job-name=sx-test-cap-pending --begin=now+3600 --array=1,3,5-7 --wrap 'sleep 1')"
    deadline=$((SECONDS + 30))
    until [ "$(sacct_raw "$held" "$begin" | grep -c .)" -ge 2 ] || ((SECONDS > deadline)); do sleep 0.5; done
    sacct_raw "$held" "$begin" >"$OUT/sacct_pending_array.txt"
    squeue -h -r -j "$held,$begin" -o "$SQUEUE_FMT" >"$OUT/squeue_pending_array_r.txt"
    squeue -h -j "$held,$begin" -o "$SQUEUE_FMT" >"$OUT/squeue_pending_array.txt"
    scancel "$held" "$begin"
    deadline=$((SECONDS + 30))
    until sacct_raw "$held" | grep -q CANCELLED || ((SECONDS > deadline)); do sleep 0.5; done
    sacct_raw "$held" >"$OUT/sacct_cancelled_pending_array.txt"
}

sec_array() {
    say "completed array with srun steps (MaxRSS, TotalCPU)"
    local array early i
    array="$(sbatch_p --job-name=sx-test-cap-array --qos=high --array=0-3 -p cpu --mem=300M \
        --comment=slurmexp:capture --wrap 'srun python3 -c "import time; x = bytearray(60 * 1024 * 1024); t = time.time()
while time.time() - t < 2: pass
time.sleep(5)"')"
    # Right after the start, accounting may show the task that keeps the array's own id as a
    # bare "N" row named "allocation". Keep the file only when that transient was caught.
    for i in $(seq 60); do
        early="$(sacct_raw "$array")"
        if printf '%s\n' "$early" | grep -q "^$array$SEP"; then
            printf '%s\n' "$early" >"$OUT/sacct_array_early.txt"
            say "caught the bare-id transient row"
            break
        fi
        [ -n "$early" ] && ! printf '%s\n' "$early" | grep -q '\[' && break
        sleep 0.1
    done
    squeue -h -r -j "$array" -o "$SQUEUE_FMT" >"$OUT/squeue_running_array.txt" || true
    WAIT=180 wait_sacct 'COMPLETED|FAILED' 4 "$array"
    sleep 6  # the steps' final accounting arrives after the allocation's
    sacct_raw "$array" >"$OUT/sacct_completed_array.txt"
}

sec_simple() {
    say "FAILED (exit 3), CANCELLED, gpu job on g1"
    local failed cancelled gpu
    failed="$(sbatch_p --job-name=sx-test-cap-failed --qos=high -p cpu --wrap 'exit 3')"
    cancelled="$(sbatch_p --job-name=sx-test-cap-cancel --qos=high -p cpu --wrap 'sleep 60')"
    gpu="$(sbatch_p --job-name=sx-test-cap-gpu --qos=high -p gpu --gres=gpu:a100:1 \
        --wrap 'test "$SLURM_GPUS_ON_NODE" = 1; sleep 2')"
    # The FAILED job ends within a second: try to catch its placeholder record on the way.
    local i early
    for i in $(seq 100); do
        early="$(sacct_raw "$failed")"
        if printf '%s\n' "$early" | grep -q "^$failed${SEP}.*FAILED.*${SEP}allocation${SEP}"; then
            printf '%s\n' "$early" >"$OUT/sacct_failed_incomplete.txt"
            say "caught a placeholder (incomplete) record"
            break
        fi
        printf '%s\n' "$early" | grep -q "${SEP}sx-test-cap-failed${SEP}" && break
        sleep 0.1
    done
    wait_running "$cancelled"
    sleep 2
    scancel "$cancelled"
    WAIT=120 wait_sacct 'FAILED' 1 "$failed"
    sacct_raw "$failed" >"$OUT/sacct_failed.txt"
    WAIT=60 wait_sacct 'CANCELLED' 1 "$cancelled"
    sacct_raw "$cancelled" >"$OUT/sacct_cancelled.txt"
    WAIT=120 wait_sacct 'COMPLETED|FAILED' 1 "$gpu"
    sacct_raw "$gpu" >"$OUT/sacct_gpu.txt"
}

sec_nodefail() {
    say "NODE_FAIL on c2"
    local job deadline
    job="$(sbatch_p --job-name=sx-test-cap-nodefail --qos=high -p cpu -w c2 --wrap 'sleep 120')"
    wait_running "$job"
    sleep 2
    bash "${CLUSTER_SH[@]}" fail-node c2
    scontrol -o show node c2 >"$OUT/scontrol_node_down.txt"
    WAIT=60 wait_sacct 'NODE_FAIL' 1 "$job" || true
    bash "${CLUSTER_SH[@]}" resume-node c2
    sacct_raw "$job" >"$OUT/sacct_node_fail.txt"
    deadline=$((SECONDS + 60))
    until sinfo -h -n c2 -o %t | grep -qE '^(idle|mix|alloc)'; do
        ((SECONDS > deadline)) && { say "c2 did not come back"; break; }
        sleep 1
    done
}

sec_preempt() {
    say "preempted + requeued job on c2"
    local job preemptor deadline
    # A low-QOS job waits behind everybody on a busy shared cluster; an admin-set priority lets
    # it start while it keeps QOS low, which is what preemption looks at.
    job="$(sbatch_p --job-name=sx-test-cap-preempted --requeue --qos=low -p cpu -w c2 --exclusive --wrap 'sleep 15')"
    scontrol update JobId="$job" Priority=1000000
    wait_running "$job"
    sleep 2
    preemptor="$(bash "${CLUSTER_SH[@]}" preempt c2 5 | cut -d';' -f1)"
    # Slurm holds a requeued job back (BeginTime) for a while, then runs it again; -D shows both
    # records. Wait for the rerun when the queue lets it run, else keep what is there.
    WAIT=240 wait_sacct 'COMPLETED' 2 "$job" "$preemptor" || true
    sacct_raw "$job" >"$OUT/sacct_preempted.txt"
    scancel "$job" 2>/dev/null || true
}

sec_timeout() {
    say "TIMEOUT job (runs 1-2 minutes)"
    local job try
    for try in 1 2; do
        job="$(sbatch_p --job-name=sx-test-cap-timeout --reservation=resv1 --time=1 --wrap 'sleep 120')"
        WAIT=240 wait_sacct 'TIMEOUT|NODE_FAIL|CANCELLED|FAILED' 1 "$job"
        if sacct -n -X -P -o State -S "$SINCE" -j "$job" | grep -q TIMEOUT; then break; fi
        say "timeout job $job did not end in TIMEOUT (shared cluster?); trying again"
    done
    sleep 3
    sacct_raw "$job" >"$OUT/sacct_timeout.txt"
}

SECTIONS=("$@")
[ ${#SECTIONS[@]} -gt 0 ] || SECTIONS=(version static sbatch pending array simple nodefail preempt timeout limits)
for s in "${SECTIONS[@]}"; do "sec_$s"; done

cat "$OUT"/sacct_{completed_array,failed,cancelled,gpu,node_fail,preempted,timeout}.txt \
    >"$OUT/sacct_all.txt" 2>/dev/null || true
say "done: $OUT"
