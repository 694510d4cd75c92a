"""The scheduler seam without a cluster: the registry and factory, the Slurm backend's command
lines (through a fake transport that records argv), the local backend as a Scheduler, and that
reconcile, retry and cancel ask the cluster an experiment's jobs went to."""
from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath

import pytest

from slurmexp.backends import base
from slurmexp.backends.local import LOCAL_CLUSTER, LocalBackend
from slurmexp.backends.slurm import backend as slurm
from slurmexp.backends.slurm import commands
from slurmexp.backends.slurm import parse as sp
from slurmexp.backends.slurm.backend import SlurmBackend, run_slurm
from slurmexp.errors import SlurmCommandError, SlurmexpError, SlurmUnavailable
from slurmexp.ledger import Ledger
from slurmexp.reconcile import cancel, retry
from slurmexp.reconcile import one_pass as rc
from slurmexp.transport import CommandNotFound, CommandResult, CommandTimeout, LocalTransport, Transport

# --- a transport that runs nothing --------------------------------------------------------


@dataclass
class Call:
    argv: list[str]
    cwd: object
    env: dict
    stdin: str | None

    @property
    def command(self) -> str:
        return self.argv[0]

    def clusters(self) -> list[str]:
        return [a.split("=", 1)[1] for a in self.argv if a.startswith("--clusters=")]

    def value(self, prefix: str) -> str | None:
        return next((a[len(prefix):] for a in self.argv if a.startswith(prefix)), None)


@dataclass
class FakeTransport:
    """Records each command; `answer(call)` says what it printed (default: nothing, exit 0)."""

    answer: object = None
    name: str = "fake"
    calls: list[Call] = field(default_factory=list)

    @property
    def root(self) -> PurePosixPath:
        return PurePosixPath("/remote")

    def run(self, argv, *, timeout, stdin=None, cwd=None, env=None, stop_on=()) -> CommandResult:
        call = Call(list(argv), cwd, dict(env or {}), stdin)
        self.calls.append(call)
        out = self.answer(call) if self.answer else None
        if isinstance(out, BaseException):
            raise out
        rc, stdout, stderr = out if isinstance(out, tuple) else (0, out or "", "")
        return CommandResult(tuple(argv), rc, stdout, stderr)

    def of(self, command: str) -> list[Call]:
        return [c for c in self.calls if c.command == command]

    # files are not used by the backends yet
    def read_text(self, path):
        raise NotImplementedError

    read_bytes = write_text = write_bytes = listdir = exists = makedirs = read_text


def sacct_line(**values: str) -> str:
    return sp.DELIMITER.join(values.get(f, "") for f in sp.SACCT_FIELDS) + "\n"


def squeue_line(**values: str) -> str:
    return sp.DELIMITER.join(values.get(name, "") for name, _ in sp.SQUEUE_FIELDS) + "\n"


# --- registry and factory -----------------------------------------------------------------


def test_registry_says_what_each_kind_does():
    assert set(base.KINDS) == {"slurm", "local"}
    s, loc = base.KINDS["slurm"], base.KINDS["local"]
    assert (s.reconciled, s.retried, s.cancellable, s.live_checks, s.in_process) == (True, True, True, True, False)
    assert (loc.reconciled, loc.retried, loc.cancellable, loc.live_checks, loc.in_process) == (
        False, False, False, False, True)
    assert base.kind_names(reconciled=True) == ("slurm",)
    assert base.kind_names(in_process=True) == ("local",)
    assert base.kind_names() == ("slurm", "local")
    assert base.backend_kind("slurm") is s and base.find_kind("nope") is None and base.find_kind(None) is None


@pytest.mark.parametrize("build", [
    lambda: base.backend_kind("pbs"),
    lambda: base.scheduler_for("pbs"),
    lambda: base.scheduler_for_experiment({"backend": "pbs", "cluster": "x"}),
])
def test_unknown_kind_is_a_clear_error_naming_the_fix(build):
    with pytest.raises(SlurmexpError, match="unknown backend 'pbs'") as info:
        build()
    [problem] = info.value.problems
    assert problem.fix == "use one of: slurm, local"
    assert "unknown backend 'pbs'" in info.value.format() and "use one of: slurm, local" in info.value.format()


def test_unknown_kind_names_where_it_came_from():
    with pytest.raises(SlurmexpError) as info:
        base.backend_kind("pbs", key="--backend")
    assert info.value.problems[0].key == "--backend"


def test_factory_builds_each_kind_for_its_cluster():
    t = FakeTransport()
    s = base.scheduler_for("slurm", "alpha", transport=t)
    assert isinstance(s, SlurmBackend) and isinstance(s, base.Scheduler)
    assert (s.kind, s.cluster, s.name, s.transport) == ("slurm", "alpha", "slurm:alpha", t)
    default = base.scheduler_for("slurm")
    assert default.cluster is None and default.name == "slurm"
    assert isinstance(default.transport, LocalTransport) and isinstance(default.transport, Transport)
    assert base.scheduler_for("slurm", "").cluster is None
    exp = base.scheduler_for_experiment({"backend": "slurm", "cluster": "beta"}, transport=t)
    assert exp.cluster == "beta" and exp.transport is t
    local = base.scheduler_for_experiment({"backend": "local", "cluster": "minicluster"})
    assert isinstance(local, LocalBackend) and isinstance(local, base.Scheduler)
    assert (local.kind, local.cluster) == ("local", LOCAL_CLUSTER)


def test_local_backend_refuses_a_remote_transport():
    assert isinstance(base.scheduler_for("local", transport=LocalTransport()), LocalBackend)
    with pytest.raises(SlurmexpError, match="on this machine only"):
        base.scheduler_for("local", transport=FakeTransport(name="ssh:login1"))


# --- command lines ------------------------------------------------------------------------


def test_command_lines_are_built_purely():
    assert commands.sbatch(Path("/x/a.sbatch"), cluster="alpha", extra_args=["--array=0-3"]) == [
        "sbatch", "--parsable", "--clusters=alpha", "--array=0-3", "/x/a.sbatch"]
    assert commands.sbatch("a.sbatch", test_only=True) == ["sbatch", "--test-only", "a.sbatch"]
    assert commands.scancel(["1", "2"]) == ["scancel", "1", "2"]
    assert commands.squeue(user="ann")[-2:] == ["-u", "ann"] and commands.squeue()[-1] == "--me"
    assert commands.squeue(job_ids=["5", "6"])[-4:] == ["-t", "all", "-j", "5,6"]
    assert "-r" in commands.squeue(job_ids=["5"]) and "-r" not in commands.squeue(job_ids=["5"], per_task=False)
    argv = commands.sacct(since="2026-01-01T00:00:00", user="ann", job_ids=["5", "6"])
    assert argv[argv.index("-S") + 1] == "2026-01-01T00:00:00" and argv[argv.index("-u") + 1] == "ann"
    assert argv[-1] == "--jobs=5,6" and "-D" in argv and f"--delimiter={sp.DELIMITER}" in argv
    assert "-a" in commands.sacct(since="now", names=["n1", "n2"])
    assert commands.sacct(since="now", names=["n1", "n2"])[-1] == "--name=n1,n2"
    facts = commands.cluster_facts("ann", "alpha")
    assert facts["config"] == ["scontrol", "--clusters=alpha", "show", "config"]
    assert facts["associations"][:6] == ["sacctmgr", "-n", "-P", "show", "user", "ann"]
    assert "--clusters=alpha" not in facts["qos"]
    assert commands.cluster_facts("ann")["nodes"] == ["scontrol", "-o", "show", "node"]


def _answers(call: Call):
    if call.command == "sbatch" and "--parsable" in call.argv:
        return "4242;alpha\n" if call.clusters() else "4242\n"
    if call.command == "sbatch":
        return (0, "", "sbatch: Job 4243 to start at 2026-01-01T00:00:00 using 1 processors\n")
    if call.command == "squeue" and "-j" in call.argv:
        return squeue_line(job_id="4242_0", array_job_id="4242", array_task="0", state="PENDING",
                           submit="2026-01-01T00:00:00", name="n")
    return ""


def test_a_backend_for_cluster_x_passes_clusters_x_to_every_command(tmp_path):
    t = FakeTransport(_answers)
    b = SlurmBackend(cluster="alpha", user="ann", transport=t)
    script = tmp_path / "a.sbatch"
    result = b.submit(script, extra_args=["--array=0-1"], cwd=tmp_path)
    assert (result.job_id, result.cluster) == ("4242", "alpha")
    assert b.test_only(script) == (True, "sbatch: Job 4243 to start at 2026-01-01T00:00:00 using 1 processors")
    b.queue()
    b.queue(["4242"])
    b.accounting(["4242"], since="2026-01-01T00:00:00")
    b.accounting([], since="2026-01-01T00:00:00", names=["sx.e.000"])
    assert b.submit_times(["4242"]) == {"4242": "2026-01-01T00:00:00"}
    b.cancel(["4242"])
    b.cluster_facts()
    assert len(t.calls) == 15        # submit_times found the job in squeue: no sacct
    for call in t.calls:
        expect = [] if call.command == "sacctmgr" else ["alpha"]
        assert call.clusters() == expect, call.argv
        assert call.env == {"SLURM_TIME_FORMAT": "standard"}
    assert t.of("sbatch")[0].cwd == tmp_path and t.of("sbatch")[0].argv[-1] == str(script)
    for call in t.of("sacct"):
        assert call.argv[call.argv.index("-S") + 1] == "2026-01-01T00:00:00"
        assert call.argv[call.argv.index("-u") + 1] == "ann"
    # The Slurm names of queue and accounting are the same commands.
    t.calls.clear()
    b.squeue_rows(["4242"])
    b.sacct_rows(["4242"], since="now-1hours")
    assert [c.command for c in t.calls] == ["squeue", "sacct"]
    assert all(c.clusters() == ["alpha"] for c in t.calls)


def test_a_backend_without_cluster_asks_the_default_one(tmp_path):
    t = FakeTransport(_answers)
    b = SlurmBackend(user="ann", transport=t)
    assert b.submit(tmp_path / "a.sbatch").cluster is None
    b.queue()
    b.accounting(["1"], since="now-1hours")
    b.cluster_facts()
    assert all(c.clusters() == [] for c in t.calls)


def test_run_slurm_through_a_transport_maps_its_errors_and_counts_calls():
    slurm.reset_call_log()
    t = FakeTransport(lambda c: CommandTimeout("sacct did not finish", "sacct", 5))
    with pytest.raises(SlurmUnavailable, match="did not answer within 5s"):
        run_slurm(["sacct"], timeout=5, transport=t)
    t.answer = lambda c: CommandNotFound("squeue: not found", "squeue")
    with pytest.raises(SlurmUnavailable, match="not on PATH on ssh:login1") as info:
        run_slurm(["squeue"], transport=FakeTransport(t.answer, name="ssh:login1"))
    assert "not a job failure" in info.value.message
    t.answer = lambda c: (1, "", "sbatch: error: Batch job submission failed: Unable to contact slurm controller")
    with pytest.raises(SlurmUnavailable, match="could not reach a Slurm daemon"):
        run_slurm(["sbatch", "x"], transport=t)
    t.answer = lambda c: (1, "", "sbatch: error: invalid partition specified: nope")
    with pytest.raises(SlurmCommandError, match="invalid partition"):
        run_slurm(["sbatch", "x"], transport=t)
    assert run_slurm(["sbatch", "x"], transport=t, check=False).returncode == 1
    assert slurm.CALL_COUNTS == {"sacct": 1, "squeue": 1, "sbatch": 3}
    assert [c.returncode for c in slurm.CALLS] == [None, None, 1, 1, 1]


def test_run_slurm_runs_real_commands_on_the_local_transport(tmp_path):
    result = run_slurm([sys.executable, "-c", "import os; print(os.environ['SLURM_TIME_FORMAT'], os.getcwd())"],
                       cwd=tmp_path)
    assert result.stdout.split() == ["standard", str(tmp_path)]


# --- the local backend as a Scheduler -----------------------------------------------------


def test_local_backend_runs_a_scripts_array_and_says_what_it_knows(tmp_path):
    script = tmp_path / "scripts" / "chunk-000.sbatch"
    script.parent.mkdir()
    script.write_text("#!/bin/bash\n#SBATCH --job-name=sx.loc.000\n#SBATCH --array=0-2%2\n"
                      'echo "$SLURM_ARRAY_TASK_ID $PWD" > "out.$SLURM_ARRAY_TASK_ID"\n'
                      '[ "$SLURM_ARRAY_TASK_ID" != 1 ]\n')
    b = base.scheduler_for("local")
    assert b.test_only(script) == (True, "local backend: runs on this machine (no scheduler to ask)")
    assert b.test_only(tmp_path / "missing")[0] is False
    result = b.submit(script, cwd=tmp_path)
    assert result.cluster == LOCAL_CLUSTER and result.job_id.startswith("local-")
    assert result.submit_time == b.submit_times([result.job_id])[result.job_id]
    assert sorted(p.read_text().split()[0] for p in tmp_path.glob("out.*")) == ["0", "1", "2"]
    assert {p.read_text().split()[1] for p in tmp_path.glob("out.*")} == {str(tmp_path)}
    assert b.queue() == [] and b.queue([result.job_id]) == []
    rows = b.accounting([result.job_id], since="now-1hours")
    assert [(r.job_id, r.array_task, r.state, r.exit_code) for r in rows] == [
        (f"{result.job_id}_0", 0, "COMPLETED", 0), (f"{result.job_id}_1", 1, "FAILED", 1),
        (f"{result.job_id}_2", 2, "COMPLETED", 0)]
    assert all(r.job_name == "sx.loc.000" and r.cluster == LOCAL_CLUSTER and r.submit for r in rows)
    assert b.accounting([], since="now-1hours", names=["sx.loc.000"]) == rows
    assert b.accounting(["other"], since="now-1hours") == []
    assert set(b.submit_times([result.job_id, "other"])) == {result.job_id}
    # --array in the arguments overrides the script's, as for sbatch.
    again = b.submit(script, extra_args=["--array=2"], cwd=tmp_path)
    assert [r.array_task for r in b.accounting([again.job_id], since="now")] == [2]
    assert b.cancel([again.job_id]) is None
    facts = b.cluster_facts()
    assert facts.cluster == LOCAL_CLUSTER and facts.partitions is None and facts.skipped
    with pytest.raises(SlurmexpError, match="cannot read the array"):
        b.submit(script, extra_args=["--array=x"])


# --- reconcile, retry and cancel ask the experiment's own cluster -------------------------

SCRIPT = """#!/bin/bash
#SBATCH --job-name=sx.{exp}.000
#SBATCH --comment=slurmexp:{exp}
#SBATCH --array=0-1%2
#SBATCH --partition=cpu
#SBATCH --time=0-00:10:00
#SBATCH --mem=500M
true
"""


def local_ts(dt: datetime) -> str:
    return dt.astimezone().strftime("%Y-%m-%dT%H:%M:%S")


def make_exp(ledger: Ledger, tmp_path: Path, exp_id: str, cluster: str, job: str, submit: datetime) -> None:
    exp_dir = tmp_path / exp_id
    runs = [dict(run_id=f"r{i}", idx=i, params={"i": i}, run_dir=str(exp_dir / "runs" / f"r{i}"),
                 chunk=0, task_index=i) for i in range(2)]
    ledger.create_experiment(exp_id, exp_id, "fp-" + exp_id, cluster, "slurm", exp_dir, None, None,
                             None, None, None, {}, runs)
    ledger.set_experiment_settings(exp_id, {
        "retry": {"max_attempts": 3, "escalate": False, "escalate_factor": 2.0, "backoff_s": 0},
        "limits": {"max_time_min": 1440, "max_mem_mb": 3900},
        "resources": {"time_min": 10, "mem_mb": 500, "partition": "cpu"}})
    script = exp_dir / "scripts" / "chunk-000.sbatch"
    script.parent.mkdir(parents=True)
    script.write_text(SCRIPT.format(exp=exp_id))
    sub = ledger.record_intent(exp_id, 0, "0-1%2", 2, script,
                               hashlib.sha256(script.read_bytes()).hexdigest(), cluster)
    ledger.record_submitted(sub, job, local_ts(submit))


def two_clusters(tmp_path: Path):
    ledger = Ledger(tmp_path / "ledger.db")
    submit = datetime.now().replace(microsecond=0) - timedelta(minutes=5)
    make_exp(ledger, tmp_path, "aa-00000001", "alpha", "100", submit)
    make_exp(ledger, tmp_path, "bb-00000002", "beta", "200", submit)
    return ledger, local_ts(submit)


def cluster_answers(submit: str, states: dict[str, dict[str, str]], down: set[str] = frozenset()):
    """sacct per cluster: job -> task -> state; sbatch on beta answers 300."""
    exps = {"alpha": "aa-00000001", "beta": "bb-00000002"}

    def answer(call: Call):
        [cluster] = call.clusters() or [None]
        if cluster in down:
            return (1, "", f"{call.command}: error: Unable to contact slurm controller (connect failure)")
        if call.command == "sacct":
            jobs = (call.value("--jobs=") or "").split(",")
            return "".join(
                sacct_line(JobID=f"{job}_{task}", JobIDRaw=f"{job}{task}", State=state, Submit=submit,
                           Start=submit, End=submit, ElapsedRaw="5", ExitCode="0:0", NodeList="c1",
                           Partition="cpu", QOS="normal", Account="research", Cluster=cluster,
                           JobName=f"sx.{exps[cluster]}.000", Comment=f"slurmexp:{exps[cluster]}")
                for job, tasks in states.get(cluster, {}).items() if job in jobs
                for task, state in tasks.items())
        if call.command == "sbatch":
            return f"300;{cluster}\n"
        if call.command == "squeue" and "-j" in call.argv:
            return squeue_line(job_id="300_0", array_job_id="300", array_task="0", state="PENDING",
                               submit=local_ts(datetime.now()), name=f"sx.{exps[cluster]}.000")
        return ""
    return answer


def test_reconcile_asks_each_cluster_once_for_its_own_experiments(tmp_path):
    ledger, submit = two_clusters(tmp_path)
    t = FakeTransport(cluster_answers(submit, {
        "alpha": {"100": {"0": "COMPLETED", "1": "COMPLETED"}},
        "beta": {"200": {"0": "NODE_FAIL", "1": "COMPLETED"}}}))
    s = rc.reconcile_pass(ledger, transport=t, grace_s=600)
    assert s.ok, s.error
    queries = [(c.command, c.clusters(), c.value("--jobs=")) for c in t.calls
               if c.command == "sacct" or (c.command == "squeue" and "-j" not in c.argv)]
    assert queries == [("sacct", ["alpha"], "100"), ("squeue", ["alpha"], None),
                       ("sacct", ["beta"], "200"), ("squeue", ["beta"], None)]
    assert {r["state"] for r in ledger.runs("aa-00000001")} == {"COMPLETED"}
    # beta's NODE_FAIL is retried on beta, by the submission path, through the same factory.
    [sbatch] = t.of("sbatch")
    assert sbatch.clusters() == ["beta"] and sbatch.value("--array=") == "0%2"
    assert all(c.clusters() == ["beta"] for c in t.of("squeue") if "-j" in c.argv)
    assert s.retries_submitted == 1 and s.retry_jobs == ["300"]
    assert {r["run_id"]: r["state"] for r in ledger.runs("bb-00000002")} == {"r0": "SUBMITTED", "r1": "COMPLETED"}
    ledger.close()


def test_one_cluster_down_does_not_stop_the_others(tmp_path):
    ledger, submit = two_clusters(tmp_path)
    t = FakeTransport(cluster_answers(submit, {"beta": {"200": {"0": "COMPLETED", "1": "COMPLETED"}}},
                                      down={"alpha"}))
    s = rc.reconcile_pass(ledger, transport=t, grace_s=600)
    assert not s.ok and s.exit_code == 3
    assert s.error.startswith("alpha: ") and "could not reach a Slurm daemon" in s.error
    assert {r["state"] for r in ledger.runs("bb-00000002")} == {"COMPLETED"}
    assert {r["state"] for r in ledger.runs("aa-00000001")} == {"SUBMITTED"}
    ledger.close()


def test_a_given_backend_is_used_for_its_cluster_only(tmp_path):
    ledger, submit = two_clusters(tmp_path)
    t = FakeTransport(cluster_answers(submit, {"alpha": {"100": {"0": "COMPLETED", "1": "COMPLETED"}}}))
    s = rc.reconcile_pass(ledger, SlurmBackend(cluster="alpha", transport=t), grace_s=600)
    assert s.ok and {tuple(c.clusters()) for c in t.calls} == {("alpha",)}
    assert {r["state"] for r in ledger.runs("aa-00000001")} == {"COMPLETED"}
    assert {r["state"] for r in ledger.runs("bb-00000002")} == {"SUBMITTED"}
    ledger.close()


def test_retry_and_cancel_use_the_experiments_cluster(tmp_path, monkeypatch):
    ledger, submit = two_clusters(tmp_path)
    t = FakeTransport(cluster_answers(submit, {"beta": {"200": {"0": "FAILED", "1": "COMPLETED"}}}))
    rc.reconcile_pass(ledger, transport=t, grace_s=600)        # FAILED: a user error, not retried
    assert t.of("sbatch") == []
    t.calls.clear()
    # `slurmexp retry` / `cancel` pass no backend: the factory's, over the default transport.
    monkeypatch.setattr(slurm, "_default_transport", t)
    assert len(retry.retry_experiment(ledger, None, "bb-00000002", "failed")) == 1
    assert [c.clusters() for c in t.of("sbatch")] == [["beta"]]
    # cancel stops what the queue holds: the controller lists the retry's job 300
    plain = t.answer

    def queued(call):
        if call.command == "squeue" and "-j" not in call.argv:
            return plain(Call([*call.argv, "-j", "300"], call.cwd, call.env, call.stdin))
        return plain(call)

    t.answer = queued
    assert cancel.cancel_experiment(ledger, None, "bb-00000002") == 1
    [scancel] = t.of("scancel")
    assert scancel.clusters() == ["beta"] and scancel.argv[-1] == "300"
    assert t.of("squeue") and {tuple(c.clusters()) for c in t.calls} == {("beta",)}
    ledger.close()


def test_the_local_cluster_is_asked_without_clusters(tmp_path, monkeypatch):
    """--clusters only for a cluster other than the one slurm.conf names: -M sends every
    command through slurmdbd (slower, and no queue while slurmdbd is down)."""
    conf = tmp_path / "slurm.conf"
    conf.write_text("# test\nSlurmctldHost=x\nClusterName=MiniCluster\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))

    class ConfTransport(FakeTransport):
        def read_text(self, path):
            return Path(path).read_text()

    local = ConfTransport()
    b = SlurmBackend(cluster="minicluster", transport=local)
    b.queue()
    b.cancel(["5"])
    other = ConfTransport()
    SlurmBackend(cluster="faraway", transport=other).queue()
    assert b.cluster == "minicluster" and b.cluster_flag is None
    assert all(not any(a.startswith("--clusters") for a in c.argv) for c in local.calls), local.calls
    assert all("--clusters=faraway" in c.argv for c in other.calls), other.calls
    # slurm.conf unreadable: the cluster is named, as before (never the wrong cluster)
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "missing.conf"))
    assert SlurmBackend(cluster="minicluster", transport=ConfTransport()).cluster_flag == "minicluster"
