#!/usr/bin/env bash
# Build docker/slurm-cluster/Dockerfile, run the container, and run the example sweep inside it
# (launch, reconcile until every run is finished, all COMPLETED, report). Run by scripts/test.sh
# under CI=true; as root on a Debian 12 machine with or without a Docker engine.
#
# What it sets up when missing (idempotent, fast when present):
#   - Debian's docker.io, and a dockerd of its own (vfs storage, no iptables, no bridge: what
#     works on these machines) when no engine answers; stopped again by its pid file at the end
#   - the base image debian:12 when it cannot be found locally: no registry is reachable here, so
#     it is made by debootstrap + `docker import` (the Dockerfile itself stays unchanged, and a
#     normal machine pulls debian:12 as usual)
# The build gets the host's CA bundle as the build secret pip_ca (the machines' PyPI access goes
# through a TLS-intercepting proxy); nothing of it is kept in the image.
# The container shares the host's network (--network host: without a non-loopback interface
# Slurm cannot bind its sockets), so its cluster gets its own ports and its own MariaDB port,
# next to the native cluster. compose.yaml is validated with docker-compose when it installs.
#   SX_DOCKER_KEEP=1 keeps the container and the image afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
IMAGE=slurmexp-cluster:ci
NAME=slurmexp-ci-cluster
DOCKERD_PID=/run/slurmexp-dockerd.pid
say() { printf '[docker-test] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null; }
}

# --- engine ---------------------------------------------------------------------------------
if ! command -v dockerd >/dev/null || ! command -v docker-compose >/dev/null; then
    say "installing docker.io docker-compose"
    apt_install docker.io docker-compose
fi
# BuildKit (for the build secret): a client with buildx, or docker.io's 20.10 client, which has
# BuildKit built in. (A newer client without its buildx plugin refuses DOCKER_BUILDKIT=1.)
DOCKER=docker
if ! docker buildx version >/dev/null 2>&1 && [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; fi
docker() { command "$DOCKER" "$@"; }
started_dockerd=0
if ! docker info >/dev/null 2>&1; then
    say "starting dockerd (vfs, no iptables, no bridge)"
    mkdir -p /var/log/slurmexp-cluster
    (setsid dockerd --storage-driver=vfs --iptables=false --ip6tables=false --bridge=none \
        --pidfile="$DOCKERD_PID" >/var/log/slurmexp-cluster/dockerd.log 2>&1 &)
    for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || { tail -n 20 /var/log/slurmexp-cluster/dockerd.log; die "dockerd did not start"; }
    started_dockerd=1
fi

cleanup() {
    docker rm -f "$NAME" >/dev/null 2>&1 || true
    if [ "${SX_DOCKER_KEEP:-0}" != 1 ]; then
        docker image rm -f "$IMAGE" >/dev/null 2>&1 || true
        docker builder prune -af >/dev/null 2>&1 || true
    fi
    if [ "$started_dockerd" = 1 ] && [ "${SX_DOCKER_KEEP:-0}" != 1 ] && [ -f "$DOCKERD_PID" ]; then
        kill "$(cat "$DOCKERD_PID")" 2>/dev/null || true
    fi
}
trap cleanup EXIT

# --- base image -----------------------------------------------------------------------------
if ! docker image inspect debian:12 >/dev/null 2>&1; then
    say "no debian:12 image here: debootstrap bookworm + docker import"
    command -v debootstrap >/dev/null || apt_install debootstrap
    base="$(mktemp -d /var/tmp/slurmexp-debian12.XXXXXX)"
    chmod 755 "$base"  # it becomes the image's /: mktemp made it 0700
    debootstrap --variant=minbase bookworm "$base" http://deb.debian.org/debian >"$base.log" 2>&1 \
        || { tail -n 20 "$base.log"; rm -rf --one-file-system "$base"; die "debootstrap bookworm failed"; }
    rm -rf "$base"/var/cache/apt/archives/*.deb "$base"/var/lib/apt/lists/*
    tar -C "$base" -c . | docker import -c 'CMD ["bash"]' - debian:12 >/dev/null
    rm -rf --one-file-system "$base" "$base.log"
fi

# --- compose.yaml ---------------------------------------------------------------------------
say "validating compose.yaml ($(docker-compose version --short 2>/dev/null || echo '?'))"
docker-compose -f docker/slurm-cluster/compose.yaml config -q

# --- build ------------------------------------------------------------------------------------
say "building $IMAGE"
secret=()
[ -s /etc/ssl/certs/ca-certificates.crt ] && secret=(--secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt)
t=$SECONDS
DOCKER_BUILDKIT=1 docker build -q --network host "${secret[@]}" -f docker/slurm-cluster/Dockerfile \
    -t "$IMAGE" . >/dev/null
say "built in $((SECONDS - t)) s"
if docker history --no-trunc "$IMAGE" | grep -q "BEGIN CERTIFICATE"; then die "the CA bundle ended up in the image"; fi
docker run --rm "$IMAGE" test ! -e /run/secrets/pip_ca || die "the pip_ca secret is in the image"

# --- run --------------------------------------------------------------------------------------
# Its own ports, cluster state, and MariaDB on port 3317 (the native cluster's is on 3306).
docker rm -f "$NAME" >/dev/null 2>&1 || true
docker run -d --name "$NAME" --network host \
    -e SX_CTLD_PORT=7117 -e SX_DBD_PORT=7119 -e SX_SLURMD_PORT_BASE=17300 -e SX_DB_PORT=3317 \
    "$IMAGE" >/dev/null
say "waiting for the container's cluster"
for _ in $(seq 180); do
    docker exec "$NAME" sh -c 'scontrol ping | grep -q UP && sinfo -h -o %t | grep -qv -e down -e unk -e inval && sacct -n -X -S now-1minutes >/dev/null' 2>/dev/null && break
    docker inspect -f '{{.State.Running}}' "$NAME" | grep -q true || { docker logs "$NAME" | tail -n 40; die "the container stopped"; }
    sleep 1
done
docker exec "$NAME" bash /opt/slurm-cluster/cluster.sh up >/dev/null 2>&1 \
    || { docker logs "$NAME" | tail -n 40; die "the container's cluster did not come up"; }

say "example sweep inside the container"
docker exec -e SLURMEXP_HOME=/tmp/sx-home "$NAME" bash -c '
set -euo pipefail
exp="$(slurmexp launch examples/lr-sweep/sweep.toml --site site.toml --new)"
echo "experiment: $exp"
for _ in $(seq 120); do
    slurmexp reconcile --quiet || true
    if slurmexp status "$exp" --format json | python3 -c "
import json, sys
runs = json.load(sys.stdin)
sys.exit(0 if all(r[\"state\"] in (\"COMPLETED\", \"FAILED\", \"CANCELLED\", \"TIMEOUT\", \"OUT_OF_MEMORY\", \"LOST\") for r in runs) else 1)"; then
        break
    fi
    sleep 3
done
slurmexp status "$exp"
slurmexp report "$exp" --format table
slurmexp status "$exp" --format json | python3 -c "
import json, sys
runs = json.load(sys.stdin)
states = sorted({r[\"state\"] for r in runs})
print(len(runs), \"runs:\", states)
sys.exit(0 if len(runs) == 12 and states == [\"COMPLETED\"] else 1)"
'
say "example sweep: 12 runs COMPLETED inside the container"
