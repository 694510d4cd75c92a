#!/usr/bin/env bash
# A "remote login node" for the remote tests: sshd on 127.0.0.1 whose side is the Slurm 24.11
# Debian root (root-cluster.sh 24.11), with its own file system and its own Slurm.
#
#   remote-sshd.sh up              bring the 24.11 root's cluster up (root-cluster.sh), generate
#                                  the host key and a client key once, start sshd; idempotent
#   remote-sshd.sh down            stop sshd (pid file) and end every session it serves
#   remote-sshd.sh status          exit 0 when sshd answers, 1 when not
#   remote-sshd.sh kill-sessions   end the root's sshd session processes by pid (each
#                                  /proc/PID/root points into the root), listener kept: this cuts
#                                  every connection, a ControlMaster's included
#   remote-sshd.sh stop-listener   stop only the listener (sessions survive: as a real sshd restart)
#   remote-sshd.sh info            JSON: host, port, user, identity file, known_hosts, remote root
#
# The client side (key, known_hosts) lives on the host in $ROOTS/trixie.sshd/, never inside the
# root. The login is root on the root (Slurm's user there). Every session prints a banner and a
# noisy shell profile (stdout and stderr), so slurmexp's output framing is always exercised; the
# profile also appends a line to the root's /var/log/slurmexp-sshd.commands per ssh command, so
# tests count round trips on the server's side.
# The remote experiment root, /srv/slurmexp, is a folder of the root's own: the host's /tmp and
# repository are bound into the root for the matrix tests, but /srv is not, so a remote test
# cannot pass by reading files the host wrote.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOTS="${SX_ROOTS:-/var/lib/slurmexp-roots}"
DIR="$ROOTS/trixie"
STATE="$ROOTS/trixie.sshd"
PORT="${SX_SSHD_PORT:-17122}"
REMOTE_ROOT=/srv/slurmexp
PIDFILE=/run/slurmexp-sshd.pid   # inside the root
CONF=/etc/ssh/sshd_config.slurmexp

say() { printf '[remote-sshd] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

listener_pid() {
    local pid
    pid="$(cat "$DIR$PIDFILE" 2>/dev/null || true)"
    # The pid file outlives a killed session, and its pid may since be another process's in this
    # root (a job step of its cluster): the listener is an sshd whose root is this root.
    [ -n "$pid" ] && [ -d "/proc/$pid" ] && [ "$(readlink "/proc/$pid/root")" = "$DIR" ] \
        && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = sshd ] && echo "$pid"
    return 0
}

root_sshd_pids() {
    # Every sshd process whose file system root is this root (there is no PID namespace).
    local p comm
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/root" 2>/dev/null)" = "$DIR" ] || continue
        comm="$(cat "$p/comm" 2>/dev/null || true)"
        case "$comm" in sshd | sshd-session | sshd-auth) echo "${p#/proc/}" ;; esac
    done
}

write_config() {
    mkdir -p "$STATE" "$DIR/run/sshd" "$DIR/root/.ssh" "$DIR$REMOTE_ROOT"
    chmod 700 "$STATE" "$DIR/root/.ssh"
    [ -f "$DIR/etc/ssh/ssh_host_ed25519_key" ] || chroot "$DIR" ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
    [ -f "$STATE/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C slurmexp-remote-tests -f "$STATE/id_ed25519"
    install -m 600 "$STATE/id_ed25519.pub" "$DIR/root/.ssh/authorized_keys"
    printf '[127.0.0.1]:%s %s\n' "$PORT" "$(cut -d' ' -f1-2 "$DIR/etc/ssh/ssh_host_ed25519_key.pub")" >"$STATE/known_hosts"
    cat >"$DIR$CONF" <<EOF
# slurmexp remote tests (remote-sshd.sh): key login as root on 127.0.0.1 only.
ListenAddress 127.0.0.1
Port $PORT
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile $PIDFILE
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AuthorizedKeysFile .ssh/authorized_keys
Banner /etc/ssh/slurmexp-banner
PrintMotd yes
MaxStartups 100
MaxSessions 100
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
    printf 'Welcome to the slurmexp remote test node.\nAuthorised use only.\n' >"$DIR/etc/ssh/slurmexp-banner"
    printf 'This is the motd of the slurmexp remote test node.\n' >"$DIR/etc/motd"
    # A noisy profile, as on many clusters: prints on stdout and stderr for every ssh command
    # (not inside Slurm jobs, which may inherit SSH_CONNECTION).
    cat >"$DIR/root/.bashrc" <<'EOF'
# slurmexp remote tests: a noisy shell profile (remote-sshd.sh)
if [ -n "${SSH_CONNECTION:-}" ] && [ -z "${SLURM_JOB_ID:-}" ]; then
    echo "profile: loading modules... done"
    echo "profile: quota ok" >&2
    # One line per ssh command the node ran (each round trip starts a shell): tests count them.
    # (bash started by that shell read this file again: count the outermost shell only)
    [ -n "${SX_SSH_COUNTED:-}" ] || echo "$$" >>/var/log/slurmexp-sshd.commands
    export SX_SSH_COUNTED=1
fi
EOF
}

answers() {
    ssh -o BatchMode=yes -o ConnectTimeout=5 -o StrictHostKeyChecking=yes -o ControlMaster=no \
        -o UserKnownHostsFile="$STATE/known_hosts" -i "$STATE/id_ed25519" -p "$PORT" root@127.0.0.1 true \
        >/dev/null 2>&1
}

cmd_up() {
    [ "$(id -u)" = 0 ] || die "run as root"
    bash "$HERE/root-cluster.sh" 24.11 up
    write_config
    if [ -z "$(listener_pid)" ]; then
        chroot "$DIR" /usr/sbin/sshd -f "$CONF" -E /var/log/slurmexp-sshd.log || die "sshd did not start: $(tail -n 5 "$DIR/var/log/slurmexp-sshd.log" 2>/dev/null)"
    fi
    local i
    for i in $(seq 50); do
        answers && return 0
        sleep 0.2
    done
    die "sshd on 127.0.0.1:$PORT does not accept the test key: $(tail -n 5 "$DIR/var/log/slurmexp-sshd.log" 2>/dev/null)"
}

kill_pids() {
    local p
    for p in "$@"; do kill -9 "$p" 2>/dev/null || true; done
}

case "${1:-}" in
up) cmd_up ;;
down)
    pid="$(listener_pid)"
    [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
    # shellcheck disable=SC2046
    kill_pids $(root_sshd_pids)
    ;;
stop-listener)
    pid="$(listener_pid)"
    [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
    ;;
kill-sessions)
    pid="$(listener_pid)"
    # shellcheck disable=SC2046
    kill_pids $(root_sshd_pids | grep -vx "${pid:-none}")
    ;;
status) [ -n "$(listener_pid)" ] && answers ;;
info)
    printf '{"host": "127.0.0.1", "port": %s, "user": "root", "identity_file": "%s", "known_hosts": "%s", "remote_root": "%s", "fs_root": "%s", "cluster": "sx2411"}\n' \
        "$PORT" "$STATE/id_ed25519" "$STATE/known_hosts" "$REMOTE_ROOT" "$DIR"
    ;;
*) sed -n '2,21p' "$0"; exit 2 ;;
esac
