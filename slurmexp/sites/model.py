"""The `site.toml` schema: facts about one cluster, written once and shared by every sweep.

Routing and static validation are only as good as this file, so it is held to the same
strictness as a sweep: a misspelt partition here would otherwise send every run of every
sweep to the wrong place without a word.
"""
from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, PrivateAttr, computed_field, model_validator

from slurmexp import units
from slurmexp.errors import Problem
from slurmexp.sweep.slurm_names import SlurmName, slurm_name_error
from slurmexp.sweep.strict_toml import (
    MemStr,
    RelPath,
    RunTimeStr,
    StrictModel,
    Text,
    TimeStr,
    parse_strict,
    read_text,
    toml_type,
)


def _iso_time(value: Any) -> datetime:
    # TOML has native date-times, but people quote them just as often; take both.
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"expected an ISO date-time such as \"2026-01-01T00:00:00\", "
                     f"got {toml_type(value)} {value!r}")


IsoTime = Annotated[datetime, BeforeValidator(_iso_time)]
Count = Annotated[int, Field(ge=0)]


class Node(StrictModel):
    cpus: Annotated[int, Field(ge=1)]
    mem: MemStr
    gpus: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    features: list[str] = Field(default_factory=list)
    _name: str = PrivateAttr(default="")

    @property
    def name(self) -> str:
        """The node's key under [nodes]; set by the Site so that a Node alone can be reported."""
        return self._name

    @computed_field  # type: ignore[prop-decorator]
    @property
    def mem_mb(self) -> int:
        return units.parse_mem(self.mem)

    @property
    def gpu_count(self) -> int:
        return sum(self.gpus.values())


class Partition(StrictModel):
    nodes: Annotated[list[Text], Field(min_length=1)]
    max_time: TimeStr = "UNLIMITED"
    allow_qos: list[str] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def max_time_min(self) -> int | None:
        return units.parse_time(self.max_time)


class Qos(StrictModel):
    max_wall: TimeStr | None = None
    max_tres_pu: dict[str, Count] = Field(default_factory=dict)
    max_tres_pj: dict[str, Count] = Field(default_factory=dict)
    preempt: list[str] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def max_wall_min(self) -> int | None:
        return units.parse_time(self.max_wall) if self.max_wall is not None else None


class Reservation(StrictModel):
    nodes: list[str] = Field(default_factory=list)
    users: list[str] = Field(default_factory=list)
    accounts: list[str] = Field(default_factory=list)
    start: IsoTime | None = None
    end: IsoTime | None = None


class Routing(StrictModel):
    """Partition preference lists; None in the file means "work it out" (see Site)."""

    cpu: list[str] | None = None
    gpu: list[str] | None = None


class SiteDefaults(StrictModel):
    """What a sweep gets for each [resources] key it leaves out (`mem_per_cpu` is memory per
    CPU asked, as Slurm's DefMemPerCPU; `mem` a fixed amount per task: one of the two)."""

    cpus: Annotated[int, Field(ge=1)] = 1
    mem: MemStr | None = None
    mem_per_cpu: MemStr | None = None
    time: RunTimeStr = "01:00:00"
    qos: SlurmName("qos") | None = None

    @model_validator(mode="after")
    def _one_mem(self) -> SiteDefaults:
        if self.mem is not None and self.mem_per_cpu is not None:
            raise ValueError("set mem (per task) or mem_per_cpu (per CPU), not both")
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def mem_mb(self) -> int | None:
        return units.parse_mem(self.mem) if self.mem is not None else None

    def mem_mb_for(self, cpus: int) -> int | None:
        """The default memory of a task asking for `cpus` CPUs (None: Slurm's own default)."""
        if self.mem_per_cpu is not None:
            return units.parse_mem(self.mem_per_cpu) * cpus
        return self.mem_mb

    @computed_field  # type: ignore[prop-decorator]
    @property
    def time_min(self) -> int:
        minutes = units.parse_time(self.time)
        assert minutes is not None  # RunTimeStr refuses UNLIMITED
        return minutes


class Remote(StrictModel):
    """`[remote]`: the cluster is reached over SSH (`transport.ssh`); every command then runs
    from this machine exactly as on the login node. Only `host` and `root` are required."""

    host: Text                          # anything ssh accepts, ~/.ssh/config aliases included
    user: Text | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    identity_file: Text | None = None
    ssh_options: list[Text] = Field(default_factory=list)   # each passed as `-o OPT`
    root: Text                          # on the cluster: synced sources, experiment folders

    @model_validator(mode="after")
    def _check(self) -> Remote:
        if not self.root.startswith("/"):
            raise ValueError(f"root must be an absolute path on the cluster, got {self.root!r}")
        for opt in self.ssh_options:
            if "=" not in opt or opt.startswith("-"):
                raise ValueError(f"ssh_options entries are ssh -o options as KEY=VALUE "
                                 f"(e.g. \"ProxyJump=bastion\"), got {opt!r}")
        return self


class Site(StrictModel):
    cluster: Text
    account: SlurmName("account") | None = None
    default_partition: SlurmName("partition")
    template: RelPath | None = None
    max_array_size: Annotated[int, Field(ge=1)] = 1001
    max_job_count: Annotated[int, Field(ge=1)] | None = None
    max_submit_jobs: Count = 0
    defaults: SiteDefaults = Field(default_factory=SiteDefaults)
    nodes: dict[str, Node] = Field(default_factory=dict)
    partitions: dict[str, Partition]
    qos: dict[str, Qos] = Field(default_factory=dict)
    reservations: dict[str, Reservation] = Field(default_factory=dict)
    routing: Routing = Field(default_factory=Routing)
    remote: Remote | None = None
    # Filled in by the loader, never read from the file.
    path: Path
    raw_text: str

    @model_validator(mode="after")
    def _fill_in(self) -> Site:
        for name, node in self.nodes.items():
            node._name = name
        if self.routing.cpu is None:
            self.routing.cpu = [self.default_partition]
        if self.routing.gpu is None:
            self.routing.gpu = [p for p in self.partitions if self.gpu_types(p)]
        return self

    def partition_nodes(self, name: str) -> list[Node]:
        return [self.nodes[n] for n in self.partitions[name].nodes if n in self.nodes]

    def gpu_types(self, partition: str) -> dict[str, int]:
        """GPU type -> the most of that type on any one node, since a task runs on one node."""
        types: dict[str, int] = {}
        for node in self.partition_nodes(partition):
            for kind, count in node.gpus.items():
                types[kind] = max(types.get(kind, 0), count)
        return types

    def hash(self) -> str:
        """sha256 of the file text: part of the experiment fingerprint."""
        return hashlib.sha256(self.raw_text.encode("utf-8")).hexdigest()


def describe_site(site: Site) -> dict[str, Any]:
    """What `slurmexp site show` prints: plain data, the same for its table and JSON."""
    d = site.defaults
    defaults = {"cpus": d.cpus, "mem": d.mem, "mem_per_cpu": d.mem_per_cpu, "time": d.time, "qos": d.qos}
    return {
        "cluster": site.cluster, "path": str(site.path),
        "partitions": [{"partition": name, "max_time": p.max_time, "nodes": ",".join(p.nodes),
                        "gpus": ",".join(f"{k}:{v}" for k, v in site.gpu_types(name).items()),
                        "default": name == site.default_partition} for name, p in site.partitions.items()],
        "qos": {k: q.model_dump() for k, q in site.qos.items()},
        "reservations": {k: r.model_dump() for k, r in site.reservations.items()},
        "routing": {"cpu": list(site.routing.cpu or []), "gpu": list(site.routing.gpu or [])},
        "defaults": {k: v for k, v in defaults.items() if v is not None},
    }


def _names(data: dict[str, Any], key: str) -> dict[str, Any]:
    # Defined names come from the raw file: an entry with a bad value is still defined.
    table = data.get(key)
    return table if isinstance(table, dict) else {}


def check_site(data: dict[str, Any], parts: dict[str, Any], file: str) -> list[Problem]:
    """Cross-references between sections: every name used must be defined."""
    out: list[Problem] = []

    def undefined(key: str, what: str, name: str, where: str, known: dict) -> None:
        choices = ", ".join(known) or "none"
        out.append(Problem(file, key, f"{what} {name!r} is not defined under [{where}] "
                                      f"(defined: {choices})",
                           f"define [{where}.{name}] or fix the name", check="undefined_name"))

    nodes, partitions, qos = _names(data, "nodes"), _names(data, "partitions"), _names(data, "qos")
    # Names that reach #SBATCH lines through routing (partitions) or a sweep's request.
    for table, kind in (("partitions", "partition"), ("qos", "qos"), ("reservations", "reservation")):
        for name in _names(data, table):
            error = slurm_name_error(name, kind)
            if error is not None:
                fix = (f"rename the table to [{table}.{error.suggest}] ({error.fix})" if error.suggest
                       else error.fix)
                out.append(Problem(file, f"{table}.{name}", str(error), fix, check="value"))
    default = parts.get("default_partition")
    if default is not None and default not in partitions:
        undefined("default_partition", "partition", default, "partitions", partitions)
    for pname, part in (parts.get("partitions") or {}).items():
        for node in part.nodes:
            if node not in nodes:
                undefined(f"partitions.{pname}.nodes", "node", node, "nodes", nodes)
        # Without a [qos] table the site simply does not describe QOS; nothing to check against.
        for q in part.allow_qos if qos else []:
            if q not in qos:
                undefined(f"partitions.{pname}.allow_qos", "qos", q, "qos", qos)
    routing = parts.get("routing")
    for kind in ("cpu", "gpu"):
        for pname in (getattr(routing, kind) or []) if routing is not None else []:
            if pname not in partitions:
                undefined(f"routing.{kind}", "partition", pname, "partitions", partitions)
    for qname, q in (parts.get("qos") or {}).items():
        for other in q.preempt:
            if other not in qos:
                undefined(f"qos.{qname}.preempt", "qos", other, "qos", qos)
    defaults = parts.get("defaults")
    if defaults is not None and defaults.qos and qos and defaults.qos not in qos:
        undefined("defaults.qos", "qos", defaults.qos, "qos", qos)
    for rname, resv in (parts.get("reservations") or {}).items():
        for node in resv.nodes:
            if node not in nodes:
                undefined(f"reservations.{rname}.nodes", "node", node, "nodes", nodes)
        if resv.start and resv.end and resv.start >= resv.end:
            out.append(Problem(file, f"reservations.{rname}.end",
                               f"end {resv.end.isoformat()} is not after start {resv.start.isoformat()}",
                               "swap start and end", check="value"))
    return out


def parse_site(text: str, path: str | Path) -> Site:
    """Validate site text as if read from `path` (what `discover` writes goes through here too)."""
    return parse_strict(Site, text, path, check_site, "site")


def load_site(path: str | Path) -> Site:
    """Read and validate a site file; SpecError lists every problem found."""
    path, text = read_text(path)
    return parse_site(text, path)
