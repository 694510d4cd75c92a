#!/usr/bin/env bash
# Start, stop, reset and break the slurmexp test cluster on this machine, as root, without a
# Docker engine (the Dockerfile runs this same script). One slurmctld, one slurmdbd with MariaDB,
# munge, and five slurmd (`slurmd -N`): c1-c3 (CPU), g1 (2x a100), g2 (2x v100).
#
#   cluster.sh up            idempotent: reuses what runs and is healthy, starts the rest, waits
#                            until every node is idle and sacct answers (or fails with log lines)
#   cluster.sh down          stops every daemon
#   cluster.sh reset         stops slurmctld, wipes its state (job ids restart at 1; the
#                            accounting database keeps the old jobs) and brings the cluster up
#   cluster.sh status        daemons, nodes, queue
#   cluster.sh fail-node N   marks node N DOWN under its running jobs (they end NODE_FAIL)
#   cluster.sh resume-node N brings node N back
#   cluster.sh restart-ctld  restarts slurmctld with its state kept
#   cluster.sh stop-ctld     stops slurmctld (start it again with restart-ctld or up)
#   cluster.sh stop-dbd      stops slurmdbd (sacct fails; jobs keep running)
#   cluster.sh start-dbd     starts slurmdbd again
#   cluster.sh preempt N     submits a high-QOS job that needs all of node N (preempts low QOS)
#   cluster.sh logs          the tail of every daemon log
#   cluster.sh db-up         only MariaDB (the other versions' roots use the host's)
#
# Settings (environment; the defaults are the native cluster's). root-cluster.sh runs this same
# script inside a Debian root for Slurm 24.11/26.05, and the Docker image runs it in a container
# that shares the host's network: each such cluster needs its own name, ports and database.
#   SX_CLUSTER_NAME (minicluster)   SX_CTLD_PORT (6817)   SX_DBD_PORT (6819)
#   SX_SLURMD_PORT_BASE (17000: c1-c3 = base+1..3, g1/g2 = base+11/12)
#   SX_DB_HOST (localhost)   SX_DB_PORT (3306)   SX_DB_NAME (slurm_acct_db)   SX_DB_USER (slurm)
#   SX_DB_EXTERNAL=1         use a MariaDB that runs elsewhere (never start or stop one)
#   SX_CLUSTER_STATE, SX_CLUSTER_LOG, SX_CLUSTER_WAIT_S
#   SX_MAX_JOB_COUNT (10000)  slurm.conf's MaxJobCount (bench/run.py's 100,000-run launch raises it)
# `down` stops only this cluster's daemons: slurmd/slurmctld/slurmdbd by their pid files, and the
# slurmstepd processes that this cluster's slurmd started (found by a marker in their environment).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${SX_CLUSTER_STATE:-/var/lib/slurmexp-cluster}"
LOG="${SX_CLUSTER_LOG:-/var/log/slurmexp-cluster}"
HOST="$(hostname -s)"
NODES=(c1 c2 c3 g1 g2)
CLUSTER="${SX_CLUSTER_NAME:-minicluster}"
CTLD_PORT="${SX_CTLD_PORT:-6817}"
DBD_PORT="${SX_DBD_PORT:-6819}"
PORT_BASE="${SX_SLURMD_PORT_BASE:-17000}"
DB_HOST="${SX_DB_HOST:-localhost}"
DB_PORT="${SX_DB_PORT:-3306}"
DB_NAME="${SX_DB_NAME:-slurm_acct_db}"
DB_USER="${SX_DB_USER:-slurm}"
DB_PASS=slurmexp-test
DB_EXTERNAL="${SX_DB_EXTERNAL:-0}"
# Every slurmd of this cluster, and so every slurmstepd it forks, carries this in its environment.
CLUSTER_ID="$CLUSTER:$STATE"
WAIT_S="${SX_CLUSTER_WAIT_S:-90}"
MAX_JOB_COUNT="${SX_MAX_JOB_COUNT:-10000}"

say() { printf '[cluster] %s\n' "$*" >&2; }
die() {
    say "ERROR: $*"
    show_logs >&2 || true
    exit 1
}

show_logs() {
    local f
    for f in "$LOG"/slurmctld.log "$LOG"/slurmdbd.log "$LOG"/slurmd-*.log "$LOG"/mysql/mysqld.log "$LOG"/munged.log; do
        [ -f "$f" ] || continue
        echo "---- last lines of $f (errors first) ----"
        grep -iE 'error|fatal' "$f" | grep -v 'mpi/pmix' | tail -n 8 || true
        tail -n 8 "$f"
    done
}

slurm_major() {
    # "slurm 24.11.5" -> 24 (0 when slurmd is missing)
    local v
    v="$(slurmd -V 2>/dev/null | awk '{print $2}')"
    echo "${v%%.*}" | grep -E '^[0-9]+$' || echo 0
}

pid_alive() {
    # True when the pid file names a live daemon of this cluster. A pid file outlives the daemon
    # when a session is killed, and its pid may since have been taken by another Slurm process on
    # this machine: the native cluster's slurmstepd, or the daemon of a cluster in a Debian root
    # (same pid namespace). So the process must be the daemon the file is named for (slurmd for
    # slurmd-c1.pid, not a slurmstepd) and see the same file system root as this script (a
    # chroot's daemons see the root's directory, the host's see the host's /). Without both
    # checks `up` skipped a node whose pid a job step had taken, and `down` could kill it.
    local pid name
    [ -f "$1" ] || return 1
    pid="$(cat "$1" 2>/dev/null)"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    name="$(basename "$1" .pid)"
    name="${name%%-*}"
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
    # A killed daemon that its parent has not reaped yet still answers kill -0.
    [ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 1
    [ "$(stat -L -c %d:%i "/proc/$pid/root/" 2>/dev/null)" = "$(stat -c %d:%i /)" ]
}

render_conf() {
    # Fill the templates in conf/; return 0 when /etc/slurm changed.
    local changed=1 name src dst tmp
    mkdir -p /etc/slurm "$STATE"/{ctld,run,spool} "$LOG"
    local names=(slurm.conf gres.conf slurmdbd.conf)
    # Slurm 24.11 and later need a cgroup.conf here (see conf/cgroup.conf.in); 22.05 has none.
    [ "$(slurm_major)" -ge 24 ] && names+=(cgroup.conf)
    # scrontab (`slurmexp cron --scrontab`) where this Slurm has the command: the 24.11/26.05
    # roots. Debian 12's 22.05 packages ship none, so the native cluster's slurm.conf has no
    # ScronParameters line (and is unchanged by it, so `up` does not restart it).
    local scron='/^#@SCRON@/d'
    command -v scrontab >/dev/null && scron='s|^#@SCRON@||'
    for name in "${names[@]}"; do
        src="$HERE/conf/$name.in"
        dst="/etc/slurm/$name"
        tmp="$(mktemp)"
        sed -e "s|@HOST@|$HOST|g" -e "s|@STATE@|$STATE|g" -e "s|@LOG@|$LOG|g" \
            -e "s|@CLUSTER@|$CLUSTER|g" -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@DBD_PORT@|$DBD_PORT|g" \
            -e "s|@PORT_C1@|$((PORT_BASE + 1))|g" -e "s|@PORT_C2@|$((PORT_BASE + 2))|g" \
            -e "s|@PORT_C3@|$((PORT_BASE + 3))|g" -e "s|@PORT_G1@|$((PORT_BASE + 11))|g" \
            -e "s|@PORT_G2@|$((PORT_BASE + 12))|g" -e "s|@DB_HOST@|$DB_HOST|g" -e "s|@DB_PORT@|$DB_PORT|g" \
            -e "s|@DB_USER@|$DB_USER|g" -e "s|@DB_NAME@|$DB_NAME|g" -e "s|@MAX_JOB_COUNT@|$MAX_JOB_COUNT|g" \
            -e "$scron" "$src" >"$tmp"
        if ! cmp -s "$tmp" "$dst" 2>/dev/null; then
            install -m 644 "$tmp" "$dst"
            changed=0
        fi
        rm -f "$tmp"
    done
    chmod 600 /etc/slurm/slurmdbd.conf
    for n in g1 g2; do
        mkdir -p "$STATE/fakegpu/$n"
        touch "$STATE/fakegpu/$n/nvidia0" "$STATE/fakegpu/$n/nvidia1"
    done
    for n in "${NODES[@]}"; do mkdir -p "$STATE/spool/$n"; done
    return $changed
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
    say "starting munged"
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
    [ -f /etc/munge/munge.key ] || mungekey --create --force 2>/dev/null || /usr/sbin/create-munge-key -f
    munged --force --log-file="$LOG/munged.log" || true
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return
        sleep 0.1
    done
    die "munged did not start"
}

db_ping() {
    if [ "$DB_EXTERNAL" = 1 ]; then
        # MariaDB 11 clients (Debian 13+) insist on TLS unless told not to; the server here has none.
        mysqladmin --skip-ssl --protocol=tcp -h "$DB_HOST" -P "$DB_PORT" -u "$DB_USER" -p"$DB_PASS" ping >/dev/null 2>&1
    else
        mysqladmin ping >/dev/null 2>&1
    fi
}

start_mariadb() {
    if db_ping; then return; fi
    [ "$DB_EXTERNAL" = 1 ] && die "the MariaDB at $DB_HOST:$DB_PORT does not answer for user $DB_USER"
    say "starting MariaDB (port $DB_PORT)"
    mkdir -p /run/mysqld "$LOG/mysql"
    chown mysql:mysql /run/mysqld "$LOG/mysql"
    if [ ! -d /var/lib/mysql/mysql ]; then
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    fi
    (setsid mysqld_safe --user=mysql --port="$DB_PORT" --log-error="$LOG/mysql/mysqld.log" >/dev/null 2>&1 &)
    for _ in $(seq 300); do
        mysqladmin ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    mysqladmin ping >/dev/null 2>&1 || die "MariaDB did not answer mysqladmin ping"
    mysql -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmexp-test';
              GRANT ALL ON $DB_NAME.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
}

start_slurmdbd() {
    if pid_alive "$STATE/run/slurmdbd.pid" && sacctmgr -n show cluster format=cluster >/dev/null 2>&1; then
        return
    fi
    say "starting slurmdbd"
    slurmdbd
    for _ in $(seq 150); do
        sacctmgr -n show cluster format=cluster >/dev/null 2>&1 && return
        sleep 0.2
    done
    die "slurmdbd did not answer sacctmgr"
}

ensure_cluster_row() {
    # slurmctld must find its cluster in slurmdbd on its first start.
    sacctmgr -n -P show cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER" && return
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
}

setup_accounting() {
    # sacctmgr objects live in MariaDB, so this runs once per database; it needs slurmctld up
    # first, because gres/gpu only becomes a known TRES once slurmctld has registered it.
    if sacctmgr -n -P show assoc where user=root account=research format=qos 2>/dev/null | grep -q low; then
        return
    fi
    say "creating accounts and QOS"
    local line out
    while IFS= read -r line; do
        case "$line" in ''|'#'*) continue ;; esac
        # shellcheck disable=SC2086
        out="$(sacctmgr -i $line 2>&1)" || say "sacctmgr $line: $out"
    done <"$HERE/conf/accounts.txt"
    sacctmgr -n -P show assoc where user=root account=research format=qos | grep -q low \
        || die "accounting setup failed: no association root/research with QOS low"
}

start_slurmctld() {
    if pid_alive "$STATE/run/slurmctld.pid" && scontrol ping 2>/dev/null | grep -q UP; then
        return
    fi
    say "starting slurmctld"
    slurmctld
    for _ in $(seq 150); do
        scontrol ping 2>/dev/null | grep -q UP && return
        sleep 0.2
    done
    die "slurmctld did not answer scontrol ping"
}

start_slurmds() {
    local n
    for n in "${NODES[@]}"; do
        if pid_alive "$STATE/run/slurmd-$n.pid"; then continue; fi
        say "starting slurmd -N $n"
        SLURMEXP_CLUSTER_ID="$CLUSTER_ID" slurmd -N "$n"
    done
}

ensure_reservation() {
    if scontrol show reservation resv1 >/dev/null 2>&1; then return; fi
    say "creating reservation resv1 on c3"
    scontrol create reservation ReservationName=resv1 Nodes=c3 Users=root \
        StartTime=now Duration=infinite Flags=IGNORE_JOBS >/dev/null
}

resume_bad_nodes() {
    # A node left DOWN/DRAIN by fault injection (or by a restart) is brought back by `up`.
    local bad
    bad="$(sinfo -h -N -o '%N %t' | awk '$2 ~ /down|drain|drng|fail|unk|inval/ {print $1}' | sort -u | paste -sd, -)"
    if [ -n "$bad" ]; then
        scontrol update NodeName="$bad" State=RESUME 2>/dev/null || true
    fi
}

wait_ready() {
    local deadline=$((SECONDS + WAIT_S)) states
    while :; do
        states="$(sinfo -h -N -o '%N %t' 2>/dev/null | sort -u)"
        if [ -n "$states" ] && ! echo "$states" | awk '{print $2}' | grep -qvE '^(idle|mix|alloc|comp|resv|planned)$' \
            && [ "$(echo "$states" | wc -l)" -ge "${#NODES[@]}" ] \
            && sacct -n -X -S now-1minutes -o jobid >/dev/null 2>&1; then
            say "ready: $(echo "$states" | tr '\n' ' ')"
            return
        fi
        if ((SECONDS > deadline)); then
            echo "$states" >&2
            die "cluster not ready after ${WAIT_S}s (nodes above)"
        fi
        resume_bad_nodes
        sleep 0.5
    done
}

cmd_up() {
    [ "$(id -u)" = 0 ] || die "run as root (the test cluster's daemons run as root)"
    command -v slurmctld >/dev/null || die "Slurm is not installed: run $HERE/install.sh first"
    local conf_changed=1
    render_conf && conf_changed=0
    if [ "$conf_changed" = 0 ] && pid_alive "$STATE/run/slurmctld.pid"; then
        say "configuration changed: restarting daemons"
        cmd_down
    fi
    start_munge
    start_mariadb
    start_slurmdbd
    ensure_cluster_row
    start_slurmctld
    setup_accounting
    start_slurmds
    wait_ready
    ensure_reservation
}

stop_pidfile() {
    local f="$1" name="$2" pid
    pid_alive "$f" || return 0
    pid="$(cat "$f")"
    say "stopping $name"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}

own_stepds() {
    # The slurmstepd processes of this cluster's slurmd: same mount namespace as this script (not
    # a container's) and this cluster's marker in their environment (not another Slurm's on this
    # machine, such as a Debian root's, which shares the host's pid and mount namespaces).
    local d ns
    ns="$(readlink /proc/self/ns/mnt)"
    for d in /proc/[0-9]*; do
        [ "$(cat "$d/comm" 2>/dev/null)" = slurmstepd ] || continue
        [ "$(readlink "$d/ns/mnt" 2>/dev/null)" = "$ns" ] || continue
        tr '\0' '\n' <"$d/environ" 2>/dev/null | grep -qxF "SLURMEXP_CLUSTER_ID=$CLUSTER_ID" || continue
        echo "${d#/proc/}"
    done
}

stop_stepds() {
    local pids
    pids="$(own_stepds | paste -sd' ' -)"
    [ -n "$pids" ] || return 0
    say "stopping slurmstepd $pids"
    # shellcheck disable=SC2086
    kill $pids 2>/dev/null || true
}

stop_munged() {
    local f=/run/munge/munged.pid pid
    pid_alive "$f" || return 0
    pid="$(cat "$f")"
    say "stopping munged"
    kill "$pid" 2>/dev/null || true
}

cmd_down() {
    local n
    for n in "${NODES[@]}"; do stop_pidfile "$STATE/run/slurmd-$n.pid" "slurmd $n"; done
    stop_stepds
    stop_pidfile "$STATE/run/slurmctld.pid" slurmctld
    stop_pidfile "$STATE/run/slurmdbd.pid" slurmdbd
    if [ "${1:-}" = --all ]; then
        [ "$DB_EXTERNAL" = 1 ] || mysqladmin shutdown 2>/dev/null || true
        stop_munged
    fi
}

cmd_reset() {
    # Wiping StateSaveLocation is what a controller state loss does: job ids start again at 1,
    # while slurmdbd still holds the earlier jobs under the same ids.
    cmd_down
    say "wiping slurmctld state in $STATE/ctld"
    rm -rf "$STATE/ctld" "$STATE"/spool/*
    cmd_up
}

cmd_status() {
    local d
    for d in slurmctld slurmdbd; do
        if pid_alive "$STATE/run/$d.pid"; then echo "$d: running"; else echo "$d: stopped"; fi
    done
    for n in "${NODES[@]}"; do
        if pid_alive "$STATE/run/slurmd-$n.pid"; then echo "slurmd $n: running"; else echo "slurmd $n: stopped"; fi
    done
    db_ping && echo "mariadb: running" || echo "mariadb: stopped"
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && echo "munge: running" || echo "munge: stopped"
    sinfo -N -o '%N %P %t %G' 2>/dev/null || true
    squeue 2>/dev/null || true
}

case "${1:-}" in
up) cmd_up ;;
db-up) start_mariadb ;;
down) shift; cmd_down "$@" ;;
reset) cmd_reset ;;
status) cmd_status ;;
logs) show_logs ;;
fail-node)
    [ -n "${2:-}" ] || die "usage: cluster.sh fail-node NODE"
    scontrol update NodeName="$2" State=DOWN Reason="slurmexp fault injection"
    ;;
resume-node)
    [ -n "${2:-}" ] || die "usage: cluster.sh resume-node NODE"
    # With ReturnToService=2 a failed node whose slurmd still runs comes back by itself.
    if sinfo -h -n "$2" -o %t | grep -qE 'down|drain|drng|fail'; then
        scontrol update NodeName="$2" State=RESUME
    fi
    ;;
stop-ctld) stop_pidfile "$STATE/run/slurmctld.pid" slurmctld ;;
restart-ctld)
    stop_pidfile "$STATE/run/slurmctld.pid" slurmctld
    start_slurmctld
    ;;
stop-dbd) stop_pidfile "$STATE/run/slurmdbd.pid" slurmdbd ;;
start-dbd) start_slurmdbd ;;
preempt)
    [ -n "${2:-}" ] || die "usage: cluster.sh preempt NODE [SECONDS]"
    part="$(sinfo -h -n "$2" -o %R | head -n 1)"
    sbatch --parsable --qos=high --partition="$part" --nodelist="$2" --exclusive --job-name=sx-preemptor \
        --output=/dev/null --time=00:05:00 --wrap "sleep ${3:-30}"
    ;;
*)
    sed -n '2,31p' "$0"
    exit 2
    ;;
esac
