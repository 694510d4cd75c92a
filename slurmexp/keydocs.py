"""What each key of sweep.toml and site.toml is for: (example as TOML, description), by key path.

`docsgen` joins this to the schema's types and defaults for the reference pages in docs/ and
the JSON Schema `slurmexp schema` prints. A key the schema has and this table lacks, or a path
here the schema does not have, fails `tests/test_reference.py`. A table of tables is written
with a placeholder entry (`nodes.<node>.cpus`), an array of tables with `[]`; the key "" is the
page's introduction. A `None` example: the key is a table, its keys are listed below it.
"""
from __future__ import annotations

TIME = 'a Slurm time ("MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM" or "D-HH:MM:SS")'
MEM = 'a whole number with a unit K, M, G or T ("500M", "4G"; no unit: M), not zero'
NAME = "one name as Slurm lists it (no whitespace, quotes, backslash, '#' or comma)"

SWEEP = {
    "": "A sweep is one command (or Python function) run over parameter values, with the resources "
        "each run asks for. Paths are relative to the sweep file's folder. Anything left out of "
        "`[resources]` comes from site.toml's `[defaults]` (see site-reference.md). "
        "`slurmexp init` writes a commented starter; `slurmexp validate --offline sweep.toml` checks one.",
    "name": ('"lr-sweep"', "The sweep's name: it begins the experiment id, the experiment's folder and its job "
             "names, and names its newest experiment in every command. Starts with a letter or digit; "
             "letters, digits, `.`, `_` and `-` only."),
    "command": ('"python3 train.py --lr {lr} --seed {seed}"', "The shell command of one run. `{param}` "
                "placeholders are filled in and shell-quoted by slurmexp (do not quote them); "
                "`{run_id}`, `{run_dir}` and `{experiment_id}` too. Exactly one of `command` and "
                "`function`."),
    "function": ('"train:main"', "Instead of `command`: a Python callable, `module:callable`, called with "
                 "each run's parameters as keyword arguments; its module is found (not imported) in "
                 "`workdir`."),
    "workdir": ('"."', "The folder the command runs in."),
    "output_dir": ('"slurmexp-runs"', "Where experiment folders are written (run folders, logs, scripts, "
                   "provenance). A relative path must stay inside the sweep's project (its git work tree, "
                   "or the sweep's folder); an absolute path (scratch space) is taken as written."),
    "template": ('"templates/my-layer.sh.j2"', "A jinja2 layer over the package's job script templates "
                 "(`{% extends %}` and blocks), used instead of site.toml's `template`."),
    "allow_unused": ('["notes"]', "Parameters the command does not use as `{placeholders}` (otherwise that is "
                     "refused as a likely typo)."),
    "params": ('{ lr = [0.1, 0.01], seed = [0, 1, 2] }', "The grid: every combination of the values "
               "(a single value is a list of one). Values are strings, numbers or booleans."),
    "zip": ('[{ model = ["resnet18", "vit"], batch = [256, 64] }]', "`[[zip]]` groups: the lists of a group "
            "go together, element by element (all of one length), crossed with the grid and the other groups."),
    "runs": ('[{ lr = 0.5, seed = 9 }]', "`[[runs]]`: explicit runs, each a table of parameter values, added "
             "after the product of the grid, zips and sample."),
    "sample": (None, "Seeded random samples of parameters, crossed with the grid and zips."),
    "sample.seed": ("0", "The random seed: the same seed gives the same samples (and run ids)."),
    "sample.n": ("20", "How many samples to draw."),
    "sample.params": (None, "One distribution per sampled parameter."),
    "sample.params.<param>.dist": ('"loguniform"', "`uniform` and `loguniform` (low > 0) between `low` and "
                                   "`high`, `int` between them inclusive, `choice` among `values`."),
    "sample.params.<param>.low": ("1e-5", "The lower bound (uniform, loguniform, int)."),
    "sample.params.<param>.high": ("1e-1", "The upper bound (uniform, loguniform, int)."),
    "sample.params.<param>.values": ('["adam", "sgd"]', "The values to choose from (choice)."),
    "resources": (None, "What each run asks of Slurm; a key left out comes from site.toml's `[defaults]` "
                  "(`explain` marks such values with `*`)."),
    "resources.gpus": ("1", "GPUs per run (0 or absent: a CPU run, routed to site.toml's `[routing] cpu`)."),
    "resources.gpu_type": ('"a100"', f"The GPU type (the gres name, `gpu:TYPE:N`); {NAME}, and no `:`."),
    "resources.cpus": ("4", "CPUs per run (`--cpus-per-task`)."),
    "resources.mem": ('"16G"', f"Memory per run (`--mem`): {MEM}."),
    "resources.time": ('"04:00:00"', f"The time limit of a run: {TIME}. Finite: not UNLIMITED, not zero."),
    "resources.partition": ('"gpu"', f"Force a partition instead of routing; {NAME}."),
    "resources.qos": ('"high"', f"The QOS; {NAME}."),
    "resources.reservation": ('"resv1"', f"A reservation to run in; {NAME}."),
    "resources.account": ('"research"', f"The account to charge (default: site.toml's `account`); {NAME}."),
    "resources.constraint": ('"skylake&ib"', "Node features (`--constraint`), joined with `&` or `|`."),
    "resources.nodes": ("1", "Nodes per run (`--nodes`)."),
    "resources.array_parallelism": ("4", "At most this many runs of the whole sweep at once. A sweep cut into "
                                    "several job arrays (MaxArraySize) shares it among them, each array's `%N` "
                                    "in proportion to its size and at least 1: with more arrays than this "
                                    "value each array runs one task at a time (`explain` says so and shows "
                                    "the split). A retry's array gets its array's share. With [[override]] "
                                    "groups, each group's value (an override table may set its own) is "
                                    "shared among that group's arrays."),
    "resources.sbatch": ('["--exclusive", "--mail-type=END"]', "Other sbatch options, long form, one per "
                         "item, written as `#SBATCH` lines of every array. Options slurmexp writes itself or "
                         "a `[resources]` key stands for are refused, with the key to use."),
    "override": (None, "`[[override]]` tables: other resources for the runs a table's `where` matches. "
                 "Each table may set any key of `[resources]` (checked the same way); a run matched by "
                 "several tables gets each one's keys in file order, so a later table wins key by key. "
                 "Runs that end up asking for the same resources form one resource group, and each "
                 "group is its own job arrays, validated, retried and escalated within its own "
                 "partition's limits. A table whose `where` matches no run is refused."),
    "override[].where": ('{ model = "vit" }', "Which runs: every key must be a parameter, and the run's "
                         "value must equal the value given (a list: any of them)."),
    "env": (None, "The environment a run's command starts in."),
    "env.setup": ('["source .venv/bin/activate"]', "Shell lines run before the command (a sourced file must "
                  "exist)."),
    "env.modules": ('["cuda/12.1"]', "Environment modules to `module load` first."),
    "env.vars": ('{ OMP_NUM_THREADS = "1" }', "Environment variables to export."),
    "retry": (None, "What reconcile does with runs the infrastructure broke (node failure, preemption, "
              "timeouts, out of memory)."),
    "retry.max_attempts": ("3", "Attempts per run, the first included."),
    "retry.escalate": ("true", "Give a run that ran out of time or memory more of it on the next attempt."),
    "retry.escalate_factor": ("2.0", "How much more, per escalation (capped by the partition's and QOS's "
                              "limits)."),
    "retry.backoff_s": ("60.0", "Seconds to wait before the first retry, doubled for each later one."),
    "checkpoint": (None, "Signal the command before its time limit and, with `requeue`, continue it as its "
                   "next attempt. Runs get `$SLURMEXP_CHECKPOINT_DIR` and `$SLURMEXP_ATTEMPT`."),
    "checkpoint.signal": ('"USR1"', "The signal sent to the task script and forwarded to the command "
                          "(sbatch `--signal=B:SIG@SECONDS`), its name without `SIG`."),
    "checkpoint.before": ('"90s"', 'How long before the time limit ("90s", "2m"); shorter than '
                          '`[resources] time`.'),
    "checkpoint.requeue": ("true", "Continue a signalled or preempted attempt that did not complete as the "
                           "run's next attempt (no backoff, no escalation), within `[retry] max_attempts`."),
    "liveness": (None, "Find runs Slurm calls RUNNING that show no life: the task script writes a "
                 "heartbeat while the command runs, and reconcile shows a run whose heartbeat is 10 beats "
                 "old (or, with `stall_after`, whose output has not changed) as STALLED."),
    "liveness.heartbeat": ('"30s"', 'How often the task script writes the attempt\'s `heartbeat` file '
                           '("20s", "30m", "2h").'),
    "liveness.stall_after": ('"30m"', "Also STALLED when the run's stdout, stderr and metrics files have not "
                             "changed for this long. Left out: never."),
    "liveness.stall_action": ('"requeue"', '"flag" shows a STALLED run; "requeue" also cancels its job and '
                              "retries it as an infrastructure failure, within `[retry] max_attempts`."),
    "provenance": (None, "What a launch records about the code. Not part of the fingerprint."),
    "provenance.secret_patterns": ('[".env*", "*.pem", "credentials.json"]', "Changed tracked files matching "
                                   "one of these (name or path, any case) are left out of `git.diff`; only "
                                   "their names and sha256 are recorded. `[]` records every diff."),
    "meta": (None, "What `slurmexp status` shows and filters on. Not part of the fingerprint."),
    "meta.tags": ('["baseline", "v2"]', "Tags (`status --tag`): letters, digits and `_ . : + -`, 64 at most; "
                  "`launch --tag` adds more."),
    "meta.description": ('"the first grid"', "A note on the experiment (`launch --note` replaces it)."),
    "notify": (None, "A shell command `slurmexp reconcile` runs once when the experiment has finished "
               "(FINISHED, FINISHED_WITH_FAILURES, FAILED or CANCELLED), in `workdir`, with the summary in "
               "`$SLURMEXP_EXPERIMENT`, `$SLURMEXP_STATE`, `$SLURMEXP_COUNTS`, `$SLURMEXP_COUNT_<STATE>`, "
               "`$SLURMEXP_REPORT`, ... Not part of the fingerprint."),
    "notify.command": ('"echo $SLURMEXP_EXPERIMENT $SLURMEXP_STATE | mail -s slurmexp me@example.org"',
                       "Run through `/bin/sh -c`; never twice (the ledger records it). A failure is a "
                       "warning of the pass, never a failed pass."),
    "notify.timeout": ('"60s"', 'The command is killed past this ("30s", "2m"; 1s to 10m).'),
    "depends": (None, "Experiments this one waits for: every array is submitted with sbatch "
                "`--dependency=afterok:` on all their jobs. Not part of the fingerprint."),
    "depends.after_ok": ('"prepare-data"', "An experiment id (a unique prefix will do) or a sweep name "
                         "(its newest experiment); a list for several. One that already FINISHED with "
                         "every run COMPLETED needs no dependency; one that failed refuses the launch "
                         "(exit 2). When an upstream job fails the runs become DEPENDENCY_FAILED at the "
                         "next reconcile and their jobs are cancelled."),
}

SITE = {
    "": "site.toml describes one cluster: its nodes, partitions, QOS, reservations, where runs go and "
        "what a sweep gets for the resources it leaves out. `slurmexp site discover -o site.toml` writes "
        "it from the cluster; `slurmexp site show` prints it. Paths are relative to the file's folder.",
    "cluster": ('"minicluster"', "The cluster's name, as slurm.conf's ClusterName (`--clusters` is passed "
                "only for a cluster other than this machine's)."),
    "account": ('"research"', f"The account jobs are charged to when a sweep names none; {NAME}."),
    "default_partition": ('"cpu"', "The partition of CPU runs when `[routing] cpu` is not given; must be "
                          "defined under `[partitions]`."),
    "template": ('"templates/site.sh.j2"', "A jinja2 layer over the package's job script templates, for every "
                 "sweep on this cluster (a sweep's own `template` replaces it)."),
    "max_array_size": ("1001", "Slurm's MaxArraySize: arrays are split so that no index reaches it."),
    "max_job_count": ("10000", "Slurm's MaxJobCount: a sweep with more runs is refused before expansion."),
    "max_submit_jobs": ("500", "MaxSubmitJobs per user; 0: no limit."),
    "defaults": (None, "What a sweep gets for each `[resources]` key it leaves out."),
    "defaults.cpus": ("1", "CPUs per run."),
    "defaults.mem": ('"500M"', f"Memory per run (per task): {MEM}. Not with `mem_per_cpu`."),
    "defaults.mem_per_cpu": ('"2000M"', f"Memory per CPU asked, as Slurm's DefMemPerCPU: {MEM}. Not with "
                             "`mem`. Neither: Slurm's own default."),
    "defaults.time": ('"01:00:00"', f"The time limit: {TIME}. Finite."),
    "defaults.qos": ('"normal"', "The QOS (defined under `[qos]` when that table is given)."),
    "nodes": (None, "One table per node (or per kind of node), by name."),
    "nodes.<node>.cpus": ("16", "The node's CPUs."),
    "nodes.<node>.mem": ('"8000M"', f"The node's memory for jobs (RealMemory): {MEM}."),
    "nodes.<node>.gpus": ('{ a100 = 2 }', "GPUs by type."),
    "nodes.<node>.features": ('["skylake", "ib"]', "The node's features, for `[resources] constraint`."),
    "partitions": (None, "One table per partition, by name."),
    "partitions.<partition>.nodes": ('["c1", "c2"]', "Its nodes, each defined under `[nodes]`."),
    "partitions.<partition>.max_time": ('"1-00:00:00"', f"MaxTime: {TIME} or UNLIMITED."),
    "partitions.<partition>.allow_qos": ('["normal", "high"]', "AllowQos (empty: every QOS)."),
    "qos": (None, "One table per QOS, by name."),
    "qos.<qos>.max_wall": ('"1-00:00:00"', f"MaxWall: {TIME} or UNLIMITED."),
    "qos.<qos>.max_tres_pu": ('{ "gres/gpu" = 4 }', "MaxTRESPerUser, by TRES name."),
    "qos.<qos>.max_tres_pj": ('{ "gres/gpu" = 2 }', "MaxTRESPerJob, by TRES name."),
    "qos.<qos>.preempt": ('["low"]', "The QOS this one preempts."),
    "reservations": (None, "One table per reservation, by name."),
    "reservations.<reservation>.nodes": ('["c3"]', "Its nodes."),
    "reservations.<reservation>.users": ('["alice"]', "The users it admits."),
    "reservations.<reservation>.accounts": ('["research"]', "The accounts it admits."),
    "reservations.<reservation>.start": ('"2026-01-01T00:00:00"', "When it starts (ISO date-time, quoted "
                                         "or a TOML date-time)."),
    "reservations.<reservation>.end": ('"2026-01-02T00:00:00"', "When it ends; after `start`."),
    "routing": (None, "Where runs go, in order of preference."),
    "routing.cpu": ('["cpu"]', "Partitions for CPU runs (not set: `default_partition`)."),
    "routing.gpu": ('["gpu"]', "Partitions for GPU runs (not set: every partition with GPUs)."),
    "remote": (None, "The cluster is reached over SSH; every command runs as on its login node."),
    "remote.host": ('"login.example.org"', "The login node: anything ssh accepts, `~/.ssh/config` aliases "
                    "included."),
    "remote.user": ('"alice"', "The user to log in as (default: ssh's)."),
    "remote.port": ("22", "The SSH port (default: ssh's)."),
    "remote.identity_file": ('"~/.ssh/id_ed25519"', "The private key (`ssh -i`)."),
    "remote.ssh_options": ('["ProxyJump=bastion"]', "ssh `-o` options, each KEY=VALUE."),
    "remote.root": ('"/scratch/alice/slurmexp"', "An absolute folder on the cluster for synced sources and "
                    "experiment folders."),
}

# [[override]] tables set [resources] keys: the same examples, said of the matched runs.
SWEEP.update({f"override[].{key[len('resources.'):]}": (doc[0], f"As `[resources]` "
              f"`{key[len('resources.'):]}`, for the runs `where` matches. {doc[1]}")
              for key, doc in list(SWEEP.items()) if key.startswith("resources.")})
SWEEP["override[].sbatch"] = (SWEEP["resources.sbatch"][0], "As `[resources]` `sbatch`, for the runs "
                              "`where` matches: a list here replaces `[resources]`'s options (`[]` "
                              "drops them), none keeps them.")

KEY_DOCS = {"sweep": SWEEP, "site": SITE}
