#!/usr/bin/env bash
# Create (once) and mount a Debian root file system next to the host, for running another Slurm
# release (or a "remote login node" with sshd) on this machine without a container engine.
#
#   mkroot.sh create SUITE DIR [PACKAGE...]   debootstrap SUITE into DIR, install PACKAGEs there;
#                                              idempotent: a finished root that has these packages
#                                              (or more) is only (re)mounted, in well under a second
#   mkroot.sh mount DIR                       mount /proc, bind /dev and /sys, copy resolv/hosts
#   mkroot.sh umount DIR                      undo `mount` (the root's daemons must be stopped)
#   mkroot.sh run DIR CMD...                  CMD inside the root, in the caller's directory when
#                                              that directory exists in the root
#
# Facts this relies on (../../shared/slurm-here.md): `debootstrap --variant=minbase` takes ~20 s,
# the sid mirror's Release file can be expired, there is no PID namespace (a root's daemons are
# host processes: stop them by their pid files, never by name).
# SX_ROOT_BINDS: space-separated host directories bind-mounted at the same path inside the root
# (so the root's Slurm jobs see the host's test folders); empty for a root of its own.
set -euo pipefail

MIRROR="${SX_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
say() { printf '[mkroot] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

apt_in() {
    local dir="$1"
    shift
    chroot "$dir" env DEBIAN_FRONTEND=noninteractive LC_ALL=C apt-get -q -o Acquire::Check-Valid-Until=false "$@"
}

same_dir() {
    # same_dir HOST_DIR BOUND_DIR: the bind at BOUND_DIR shows HOST_DIR itself (same device and
    # inode, and its mount's root not marked deleted in mountinfo).
    [ "$(stat -c %d:%i "$1")" = "$(stat -c %d:%i "$2")" ] || return 1
    ! awk -v m="$2" '$5 == m && $4 ~ /\/\/deleted$/ {found = 1} END {exit !found}' /proc/self/mountinfo
}

cmd_mount() {
    local dir="$1" b
    [ -x "$dir/bin/sh" ] || die "$dir is not a root file system"
    mountpoint -q "$dir/proc" || mount -t proc proc "$dir/proc"
    mountpoint -q "$dir/dev" || mount --bind /dev "$dir/dev"
    mountpoint -q "$dir/sys" || mount --bind /sys "$dir/sys"
    mkdir -p "$dir/run"
    for b in ${SX_ROOT_BINDS:-}; do
        [ -d "$b" ] || continue
        mkdir -p "$dir$b"
        if mountpoint -q "$dir$b"; then
            same_dir "$b" "$dir$b" && continue
            # A bind of a folder that is gone: a clone deleted and made again at the same path
            # (CI on a machine that keeps its roots) leaves the root seeing the deleted folder,
            # where every command fails with "getcwd failed". Bind the folder there now instead.
            say "$dir$b shows a deleted or other folder than $b: binding $b again"
            umount -l "$dir$b"
        fi
        mount --bind "$b" "$dir$b"
    done
    # slurmd resolves its node's host name; apt needs the resolver.
    cp -L /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true
    cmp -s /etc/hosts "$dir/etc/hosts" || cp /etc/hosts "$dir/etc/hosts"
    [ "$(cat "$dir/etc/hostname" 2>/dev/null)" = "$(hostname)" ] || hostname >"$dir/etc/hostname"
}

cmd_umount() {
    local dir="$1" m
    # Innermost first: bind mounts below the root, then /sys, /dev, /proc.
    while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" || true
    done < <(awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r)
}

has_all() {
    # has_all "MARKER" SUITE PKG...: the marker names SUITE and every PKG (a root made with more
    # packages, e.g. openssh-server for remote-sshd.sh, serves callers that ask for fewer).
    local marker=" $1 " suite="$2" p
    shift 2
    case "$marker" in " $suite "*) ;; *) return 1 ;; esac
    for p in "$@"; do
        case "$marker" in *" $p "*) ;; *) return 1 ;; esac
    done
}

cmd_create() {
    local suite="$1" dir="$2"
    shift 2
    local pkgs="$*" marker="$dir/.slurmexp-root"
    [ "$(id -u)" = 0 ] || die "run as root"
    if [ -f "$marker" ] && has_all "$(cat "$marker")" "$suite" $pkgs; then
        cmd_mount "$dir"
        return
    fi
    if [ ! -x "$dir/usr/bin/apt-get" ]; then
        command -v debootstrap >/dev/null || {
            say "installing debootstrap"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap \
                || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap; }
        }
        say "debootstrap $suite into $dir"
        # A half-made root may still have the host's folders bound into it: unmount first, and
        # never let rm cross into another file system.
        cmd_umount "$dir"
        cmd_umount "$dir.partial"
        rm -rf --one-file-system "$dir" "$dir.partial"
        mkdir -p "$(dirname "$dir")"
        debootstrap --variant=minbase "$suite" "$dir.partial" "$MIRROR" >"$dir.debootstrap.log" 2>&1 \
            || { tail -n 20 "$dir.debootstrap.log" "$dir.partial/debootstrap/debootstrap.log" 2>/dev/null; die "debootstrap $suite failed"; }
        mv "$dir.partial" "$dir"
        # No init system in a root: packages must not try to start their services.
        printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
        chmod +x "$dir/usr/sbin/policy-rc.d"
        echo 'Acquire::Check-Valid-Until "false";' >"$dir/etc/apt/apt.conf.d/99slurmexp-no-valid-until"
    fi
    cmd_mount "$dir"
    if [ -n "$pkgs" ]; then
        say "installing in $dir: $pkgs"
        # shellcheck disable=SC2086
        apt_in "$dir" install -y --no-install-recommends $pkgs >"$dir.apt.log" 2>&1 || {
            apt_in "$dir" update >>"$dir.apt.log" 2>&1
            # shellcheck disable=SC2086
            apt_in "$dir" install -y --no-install-recommends $pkgs >>"$dir.apt.log" 2>&1
        } || { tail -n 30 "$dir.apt.log"; die "apt-get install in $dir failed"; }
        chroot "$dir" apt-get clean
    fi
    echo "$suite $pkgs" >"$marker"
}

cmd_run() {
    local dir="$1"
    shift
    # shellcheck disable=SC2016
    exec chroot "$dir" /bin/sh -c 'cd "$1" 2>/dev/null || cd /; shift; exec "$@"' sh "$PWD" "$@"
}

case "${1:-}" in
create) shift; [ $# -ge 2 ] || die "usage: mkroot.sh create SUITE DIR [PACKAGE...]"; cmd_create "$@" ;;
mount) [ -n "${2:-}" ] || die "usage: mkroot.sh mount DIR"; cmd_mount "$2" ;;
umount) [ -n "${2:-}" ] || die "usage: mkroot.sh umount DIR"; cmd_umount "$2" ;;
run) shift; [ $# -ge 2 ] || die "usage: mkroot.sh run DIR CMD..."; cmd_run "$@" ;;
*) sed -n '2,20p' "$0"; exit 2 ;;
esac
