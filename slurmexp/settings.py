"""What an experiment keeps from its sweep and site so it can be retried without either file.

Launch writes one `ExperimentSettings` into the ledger (`experiments.settings_json`); reconcile
and `slurmexp retry` read it back. It holds the `[retry]` policy, the `[notify]` command, the
`[depends]` experiments with the jobs it waits for, the `[checkpoint]` table
(whether a signalled attempt is continued) and, per resource group, the resources the group
asked for and the limits of where it was placed, so a retry of a GPU chunk
escalates within the GPU partition's limits and a retry of a CPU chunk within the CPU one's.
The rendered scripts are never parsed for this: the settings are the one source.

Imports nothing from slurmexp, so a cron pass pays nothing for it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

SETTINGS_VERSION = 2
# [liveness]: a heartbeat this many beats old is stale (reconcile.liveness).
STALE_BEATS = 10


@dataclass(frozen=True)
class RetrySettings:
    """The sweep's `[retry]` table, as launched."""

    max_attempts: int = 3
    escalate: bool = False
    escalate_factor: float = 2.0
    backoff_s: float = 60.0


@dataclass(frozen=True)
class CheckpointSettings:
    """The sweep's `[checkpoint]` table, as launched: which signal comes how many seconds before
    the end, and whether an attempt that received it is continued as the run's next attempt."""

    signal: str = "USR1"
    before_s: int = 90
    requeue: bool = False


@dataclass(frozen=True)
class LivenessSettings:
    """The sweep's `[liveness]` table (or its defaults), as launched: how often the task script
    writes its heartbeat, after how long without output a run is STALLED (None: never), and
    whether a STALLED job is only shown ("flag") or cancelled and retried ("requeue").
    Experiments launched before liveness existed have none: their scripts write no heartbeat."""

    heartbeat_s: int = 30
    stall_after_s: int | None = None
    stall_action: str = "flag"

    @property
    def stale_after_s(self) -> int:
        """A heartbeat older than this is stale: STALE_BEATS beats were missed, not one late."""
        return self.heartbeat_s * STALE_BEATS


@dataclass(frozen=True)
class NotifySettings:
    """The sweep's `[notify]` table, as launched: the shell command reconcile runs once when
    the experiment finishes, where (the sweep's workdir), and for how long at most."""

    command: str = ""
    timeout_s: int = 60
    workdir: str | None = None


@dataclass(frozen=True)
class DependsSettings:
    """One `[depends] after_ok` reference, as launch resolved it: the experiment it named and
    the jobs every array was submitted after (`--dependency=afterok:`; none when that
    experiment had already finished with every run COMPLETED)."""

    ref: str = ""
    exp_id: str = ""
    job_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class GroupSettings:
    """One resource group: what its tasks asked for and the caps escalation must stay under."""

    group: int = 0
    chunks: tuple[int, ...] = ()        # empty: every chunk (settings written before version 2)
    partition: str | None = None
    time_min: int | None = None
    mem_mb: int | None = None
    cpus: int | None = None
    gpus: int | None = None
    gpu_type: str | None = None
    qos: str | None = None
    throttle: int | None = None          # the `%N` of the group's arrays
    max_time_min: int | None = None      # min(partition MaxTime, QOS MaxWall)
    max_mem_mb: int | None = None        # the largest node of the partition


@dataclass(frozen=True)
class RemoteSettings:
    """Where an experiment launched over SSH lives: the site's `[remote]` table as launched
    (so reconcile, retry, cancel and logs reach the same login node without the site file),
    the experiment's folder and synced sources on the cluster, and the sweep's workdir here.
    The ledger's paths name the local mirror; `exp_dir` and `src_dir` are their cluster side."""

    host: str = ""
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    ssh_options: tuple[str, ...] = ()
    root: str = ""
    exp_dir: str = ""                    # <root>/experiments/<experiment id>
    src_dir: str = ""                    # <root>/src/<content hash>: where the runs execute
    src_hash: str = ""
    local_workdir: str = ""              # the sweep's workdir on this machine


@dataclass(frozen=True)
class ExperimentSettings:
    retry: RetrySettings = field(default_factory=RetrySettings)
    groups: tuple[GroupSettings, ...] = ()
    checkpoint: CheckpointSettings | None = None     # None: the sweep has no [checkpoint]
    remote: RemoteSettings | None = None             # None: launched on this machine's Slurm
    liveness: LivenessSettings | None = None         # None: launched before [liveness] existed
    notify: NotifySettings | None = None             # None: the sweep has no [notify]
    depends: tuple[DependsSettings, ...] = ()        # [depends] after_ok, resolved at launch

    def group_of(self, chunk: int | None) -> GroupSettings:
        """The group a chunk belongs to. Retries keep their run's chunk number, so this also
        answers for them; an unknown chunk gets an empty group (no escalation caps known)."""
        for g in self.groups:
            if not g.chunks or (chunk is not None and int(chunk) in g.chunks):
                return g
        return GroupSettings(group=-1)

    def to_json(self) -> str:
        data = {"version": SETTINGS_VERSION, "retry": asdict(self.retry),
                "groups": [asdict(g) | {"chunks": list(g.chunks)} for g in self.groups]}
        if self.checkpoint is not None:
            data["checkpoint"] = asdict(self.checkpoint)
        if self.liveness is not None:
            data["liveness"] = asdict(self.liveness)
        if self.remote is not None:
            data["remote"] = asdict(self.remote) | {"ssh_options": list(self.remote.ssh_options)}
        if self.notify is not None:
            data["notify"] = asdict(self.notify)
        if self.depends:
            data["depends"] = [asdict(d) | {"job_ids": list(d.job_ids)} for d in self.depends]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> ExperimentSettings:
        if not text:
            return cls()
        try:
            data = json.loads(text)
        except ValueError:
            return cls()
        return cls.from_dict(data if isinstance(data, dict) else {})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentSettings:
        """Version 2 (`groups`), or the version-1 dict of older ledgers: `retry`, `limits` and
        `resources` of chunk 0, which then stand for every chunk."""
        retry = RetrySettings(**_known(RetrySettings, data.get("retry") or {}))
        ckpt = data.get("checkpoint")
        checkpoint = CheckpointSettings(**_known(CheckpointSettings, ckpt)) \
            if isinstance(ckpt, dict) else None
        live = data.get("liveness")
        liveness = LivenessSettings(**_known(LivenessSettings, live)) if isinstance(live, dict) else None
        rem = data.get("remote")
        remote = RemoteSettings(**(_known(RemoteSettings, rem) | {
            "ssh_options": tuple(str(o) for o in rem.get("ssh_options") or ())})) \
            if isinstance(rem, dict) else None
        note = data.get("notify")
        notify = NotifySettings(**_known(NotifySettings, note)) if isinstance(note, dict) else None
        depends = tuple(DependsSettings(**(_known(DependsSettings, d) | {
            "job_ids": tuple(str(j) for j in d.get("job_ids") or ())}))
            for d in data.get("depends") or [] if isinstance(d, dict))
        if "groups" in data:
            groups = tuple(GroupSettings(**(_known(GroupSettings, g)
                                            | {"chunks": tuple(int(c) for c in g.get("chunks") or ())}))
                           for g in data["groups"] or [] if isinstance(g, dict))
            return cls(retry, groups, checkpoint, remote, liveness, notify, depends)
        limits, res = data.get("limits") or {}, data.get("resources") or {}
        if not limits and not res:
            return cls(retry, (), checkpoint, remote, liveness, notify)
        return cls(retry, (GroupSettings(**_known(GroupSettings, {**res, **limits})),), checkpoint, remote,
                   liveness, notify)


def _known(kind: type, values: dict[str, Any]) -> dict[str, Any]:
    """The fields of `kind` present in `values`, with numbers coerced as the dataclass types say
    (a settings row written by hand or by an older version may hold "3" or 3.0)."""
    out: dict[str, Any] = {}
    for name, f in kind.__dataclass_fields__.items():
        if name not in values or values[name] is None or name in ("chunks", "ssh_options", "job_ids"):
            continue
        value = values[name]
        kind_name = str(f.type)
        try:
            if kind_name.startswith("int"):
                value = int(value)
            elif kind_name.startswith("float"):
                value = float(value)
            elif kind_name.startswith("bool"):
                value = bool(value)
            elif kind_name.startswith("str"):
                value = str(value)
        except (TypeError, ValueError):
            continue
        out[name] = value
    return out
