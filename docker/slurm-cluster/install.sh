#!/usr/bin/env bash
# Install what the test cluster needs from Debian's packages (Debian 12: Slurm 22.05).
# Fast when everything is already there: apt is not touched at all then.
set -euo pipefail
PKGS=(slurm-wlm slurmdbd munge mariadb-server mariadb-client libslurm-dev procps)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "[install] Slurm packages already installed"
    exit 0
fi
[ "$(id -u)" = 0 ] || { echo "[install] run as root to install: ${missing[*]}" >&2; exit 1; }
echo "[install] installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
