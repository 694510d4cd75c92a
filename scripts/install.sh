#!/usr/bin/env bash
# Install everything slurmexp and its tests need on a fresh Debian 12 machine (as root):
# Slurm + MariaDB + munge from Debian's packages, the extra packages in .ci/apt-packages.txt,
# and slurmexp itself with its test dependencies. Fast when all of it is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
bash docker/slurm-cluster/install.sh
if [ -f .ci/apt-packages.txt ]; then
    missing=()
    while IFS= read -r p; do
        case "$p" in ''|'#'*) continue ;; esac
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done <.ci/apt-packages.txt
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "[install] installing: ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
            || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; }
    fi
fi
python3 -m pip install -q -e '.[test]' 2>&1 | grep -v -e '^WARNING: Running pip as' -e 'is ignored: it is neither' || true
python3 -c 'import slurmexp, pandas, jinja2, click, pydantic' \
    || { echo "[install] Python dependencies are missing" >&2; exit 1; }
