"""A short-lived copy of the cluster facts that change rarely: sacctmgr's QOS and associations.

The two sacctmgr round trips through slurmdbd are the slowest part of validation (about 0.3 s
each on the bundled cluster, more than submitit's whole launch), yet a QOS or an association
changes when an admin changes it, not between two launches a minute apart. So their raw
output is kept in `$SLURMEXP_HOME/cache/` for `MAX_AGE_S` and parsed again on reuse, exactly as
if sacctmgr had just printed it: validation checks the same things either way.

Rules that keep this safe:
- only the answers of both commands succeeding are stored (a failure is never replayed);
- an entry is used only within its age, and only for the same commands (argv), cluster, user,
  transport and slurm.conf; validation says the age (`ClusterFacts.cached_age_s`);
- launch never refuses on cached facts: when a live check fails with cached facts, it asks
  again (`launcher.check`), and `--fresh` skips the cache altogether.
A cache file that cannot be read or written is ignored: it only ever saves time.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from slurmexp import layout
from slurmexp.atomic import replace_file

CACHED_PARTS = ("qos", "associations")
MAX_AGE_S = 300.0


def cache_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def load(path: Path, queries: dict[str, list[str]], max_age_s: float) -> tuple[dict[str, str], float] | None:
    """(part -> the command's stdout, age in seconds), or None when absent, stale or other."""
    if max_age_s <= 0:
        return None
    try:
        data = json.loads(path.read_text())
        age = time.time() - float(data["written"])
        texts = {p: data["texts"][p] for p in CACHED_PARTS}
        same = all(data["argv"][p] == queries[p] for p in CACHED_PARTS)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not same or not (0 <= age <= max_age_s) or not all(isinstance(t, str) for t in texts.values()):
        return None
    return texts, age


def store(path: Path, queries: dict[str, list[str]], texts: dict[str, str | None]) -> None:
    if any(texts.get(p) is None for p in CACHED_PARTS):
        return
    data = {"written": time.time(), "argv": {p: queries[p] for p in CACHED_PARTS},
            "texts": {p: texts[p] for p in CACHED_PARTS}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, json.dumps(data))
    except OSError:
        pass    # a cache that cannot be written is only a slower next validate


def path_for(*identity: object) -> Path:
    return layout.facts_cache_file(cache_key(*identity))
