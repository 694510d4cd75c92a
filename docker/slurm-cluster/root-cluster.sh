#!/usr/bin/env bash
# The test cluster on another Slurm release, in a Debian root next to the host's Slurm 22.05:
#   24.11  Debian 13 (trixie)     cluster sx2411, slurmctld 6917, slurmdbd 6919, slurmd 17101-17112
#   26.05  Debian unstable (sid)  cluster sx2605, slurmctld 7017, slurmdbd 7019, slurmd 17201-17212
# Same topology as the native cluster (cluster.sh runs inside the root with its own ports, its
# own munge key and socket, its own StateSaveLocation and its own database in the host's MariaDB
# at 127.0.0.1:3306, which `up` starts when it is not running).
#
#   root-cluster.sh VERSION up       create the root once (debootstrap + apt, ~1 min), mount it,
#                                    start its cluster; idempotent and fast when it runs
#   root-cluster.sh VERSION down     stop this root's Slurm daemons (by their pid files)
#   root-cluster.sh VERSION down --all   ... and its munged
#   root-cluster.sh VERSION env      shell lines that point Slurm commands at this cluster
#   root-cluster.sh VERSION info     JSON: version, cluster name, root, bin folder, site.toml
#   root-cluster.sh VERSION CMD ...  any other cluster.sh command, inside the root (status,
#                                    reset, fail-node N, preempt N, stop-dbd, logs, ...)
#
# How the host talks to the root's Slurm: the `bin` folder holds one wrapper per Slurm command
# that chroots into the root and runs the root's own binary in the caller's directory. The root's
# binaries need the root's glibc, plugin folder, slurmstepd and munge socket (all compiled-in
# paths), so running them on the host with SLURM_CONF alone does not work; chroot gives each of
# them its own. The host's /tmp and this repository are bind-mounted at the same paths inside the
# root, so jobs see the test folders and sbatch sees the caller's scripts (and so is the host's
# Python when it is not /usr's; SX_ROOT_EXTRA_BINDS adds folders).
# The root itself (mkroot.sh) is reusable as-is, e.g. as a "remote login node" with sshd.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
ROOTS="${SX_ROOTS:-/var/lib/slurmexp-roots}"
PKGS="slurm-wlm slurmdbd munge mariadb-client procps python3 openssh-server"
COMMANDS="sbatch squeue sacct scontrol sacctmgr scancel sinfo srun salloc sstat sprio sshare sreport sdiag scrontab"

say() { printf '[root-cluster] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

VERSION="${1:-}"
case "$VERSION" in
24.11) SUITE=trixie NAME=sx2411 CTLD=6917 DBD=6919 BASE=17100 ;;
26.05) SUITE=sid NAME=sx2605 CTLD=7017 DBD=7019 BASE=17200 ;;
*) sed -n '2,22p' "$0"; exit 2 ;;
esac
shift
DIR="$ROOTS/$SUITE"
BIN="$ROOTS/$SUITE.bin"
SITE="$ROOTS/$SUITE.site.toml"
DB_NAME="slurm_acct_db_$NAME"

in_root() {
    # cluster.sh inside the root, with this cluster's settings and a clean environment.
    chroot "$DIR" env -i HOME=/root LC_ALL=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        SX_CLUSTER_NAME="$NAME" SX_CTLD_PORT="$CTLD" SX_DBD_PORT="$DBD" SX_SLURMD_PORT_BASE="$BASE" \
        SX_DB_EXTERNAL=1 SX_DB_HOST=127.0.0.1 SX_DB_PORT=3306 SX_DB_USER="$NAME" SX_DB_NAME="$DB_NAME" \
        SX_CLUSTER_WAIT_S="${SX_CLUSTER_WAIT_S:-90}" SX_MAX_JOB_COUNT="${SX_MAX_JOB_COUNT:-10000}" \
        bash /opt/slurm-cluster/cluster.sh "$@"
}

host_db() {
    # The root's slurmdbd logs into the host's MariaDB over TCP as its own user, own database.
    if ! mysqladmin ping >/dev/null 2>&1; then
        bash "$HERE/cluster.sh" db-up
    fi
    mysql -e "CREATE USER IF NOT EXISTS '$NAME'@'127.0.0.1' IDENTIFIED BY 'slurmexp-test';
              CREATE USER IF NOT EXISTS '$NAME'@'localhost' IDENTIFIED BY 'slurmexp-test';
              GRANT ALL ON $DB_NAME.* TO '$NAME'@'127.0.0.1';
              GRANT ALL ON $DB_NAME.* TO '$NAME'@'localhost'; FLUSH PRIVILEGES;"
}

write_if_changed() {
    # write_if_changed FILE MODE < content
    local tmp
    tmp="$(mktemp)"
    cat >"$tmp"
    if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else install -m "$2" "$tmp" "$1"; rm -f "$tmp"; fi
}

write_client() {
    local c
    mkdir -p "$BIN"
    for c in $COMMANDS; do
        # shellcheck disable=SC2016
        printf '#!/bin/sh\n# Slurm %s (cluster %s) in its Debian root: see %s\nexec chroot %s /bin/sh -c '\''cd "$0" 2>/dev/null || cd /; exec /usr/bin/%s "$@"'\'' "$PWD" "$@"\n' \
            "$VERSION" "$NAME" "$HERE/root-cluster.sh" "$DIR" "$c" | write_if_changed "$BIN/$c" 755
    done
    # The repository's site.toml, for this cluster's name (template path made absolute).
    sed -e "s|^cluster = \"minicluster\"|cluster = \"$NAME\"|" \
        -e "s|^template = \"templates/|template = \"$REPO/templates/|" \
        -e "1s|.*|# The bundled test cluster on Slurm $VERSION ($NAME, root-cluster.sh); generated from site.toml.|" \
        "$REPO/site.toml" | write_if_changed "$SITE" 644
}

sync_scripts() {
    mkdir -p "$DIR/opt/slurm-cluster/conf"
    cmp -s "$HERE/cluster.sh" "$DIR/opt/slurm-cluster/cluster.sh" || cp "$HERE/cluster.sh" "$DIR/opt/slurm-cluster/"
    local f
    for f in "$HERE"/conf/*; do
        cmp -s "$f" "$DIR/opt/slurm-cluster/conf/${f##*/}" || cp "$f" "$DIR/opt/slurm-cluster/conf/"
    done
}

binds() {
    # /tmp and the repository; and the host's Python when it lives outside /usr (pyenv, a
    # venv's base), because test jobs run `sys.executable`: in the root /usr/bin/python3 is the
    # root's own Python, and /usr itself must stay the root's.
    local py
    py="$(python3 -c 'import sys; print(sys.base_prefix)' 2>/dev/null || true)"
    case "$py" in '' | /usr | /usr/local | /) py= ;; esac
    echo "/tmp $REPO $py ${SX_ROOT_EXTRA_BINDS:-}"
}

cmd_up() {
    [ "$(id -u)" = 0 ] || die "run as root"
    SX_ROOT_BINDS="$(binds)" bash "$HERE/mkroot.sh" create "$SUITE" "$DIR" $PKGS
    host_db
    sync_scripts
    write_client
    in_root up
    local v
    v="$("$BIN/sinfo" --version)"
    case "$v" in "slurm $VERSION."* | "slurm-wlm $VERSION."*) ;; *) die "expected Slurm $VERSION in $DIR, found: $v" ;; esac
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
up) cmd_up ;;
env)
    echo "export PATH=\"$BIN:\$PATH\""
    echo "export SX_TEST_CLUSTER=$VERSION"
    ;;
info)
    printf '{"version": "%s", "name": "%s", "root": "%s", "bin": "%s", "site_toml": "%s", "script": "%s"}\n' \
        "$VERSION" "$NAME" "$DIR" "$BIN" "$SITE" "$HERE/root-cluster.sh"
    ;;
down)
    [ -f "$DIR/opt/slurm-cluster/cluster.sh" ] || exit 0
    bash "$HERE/mkroot.sh" mount "$DIR"
    # This checkout's cluster.sh, not the copy an earlier checkout left in the root: what decides
    # which pids are this cluster's daemons must be the same code that `up` started them with.
    sync_scripts
    in_root down "$@"
    ;;
'') sed -n '2,22p' "$0"; exit 2 ;;
*)
    [ -f "$DIR/opt/slurm-cluster/cluster.sh" ] || die "no cluster in $DIR yet: run root-cluster.sh $VERSION up"
    sync_scripts
    in_root "$cmd" "$@"
    ;;
esac
