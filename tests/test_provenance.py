from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from slurmexp import __version__
from slurmexp.ledger import provenance
from slurmexp.ledger.provenance import _parse_status, _redact_url, collect, distributions

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org",
         "-c", "commit.gpgsign=false", *args],
        check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    # Keep git from finding a repository above tmp_path or reading the user's config.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    (r / "train.py").write_text("lr = 0.1\n")
    (r / "util.py").write_text("x = 1\n")
    git(r, "add", ".")
    git(r, "commit", "-q", "-m", "init")
    return r


@needs_git
def test_uncommitted_change_is_recorded(repo, tmp_path):
    (repo / "train.py").write_text("lr = 0.2\n")            # unstaged
    (repo / "util.py").write_text("x = 2\n")
    git(repo, "add", "util.py")                             # staged
    (repo / "notes.txt").write_text("scratch\n")            # untracked
    out = tmp_path / "exp"
    info = collect(repo / ".", out)
    g = info["git"]
    assert g["commit"] == git(repo, "rev-parse", "HEAD")
    assert g["branch"] == "main" and g["dirty"] is True
    assert g["untracked"] == ["notes.txt"]
    diff = Path(g["diff_path"]).read_text()
    assert g["diff_path"] == str(out / "git.diff")
    assert "+lr = 0.2" in diff and "+x = 2" in diff and "# untracked: notes.txt" in diff
    assert g["diff_sha256"] == hashlib.sha256(diff.encode()).hexdigest()
    # the saved diff applies to the recorded commit
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    git(clone, "checkout", "-q", g["commit"])
    git(clone, "apply", str(out / "git.diff"))
    assert (clone / "train.py").read_text() == "lr = 0.2\n"
    json.dumps(info)   # goes into the ledger as JSON


@needs_git
def test_clean_repo_writes_no_diff(repo, tmp_path):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "git.diff").write_text("stale")
    (repo / "sub").mkdir()
    info = collect(repo / "sub", out)
    assert info["git"]["dirty"] is False and info["git"]["diff_path"] is None
    assert info["git"]["root"] == str(repo.resolve())
    assert not (out / "git.diff").exists()


@needs_git
def test_repo_without_commits(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    r = tmp_path / "fresh"
    r.mkdir()
    git(r, "init", "-q")
    (r / "a.py").write_text("print(1)\n")
    git(r, "add", "a.py")
    info = collect(r, tmp_path / "exp")
    assert info["git"]["commit"] is None and info["git"]["dirty"] is True
    assert "+print(1)" in Path(info["git"]["diff_path"]).read_text()


def test_outside_a_repo_does_not_fail(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    work = tmp_path / "plain"
    work.mkdir()
    info = collect(work, tmp_path / "exp")
    assert info["git"] is None and info["git_reason"]
    assert not (tmp_path / "exp" / "git.diff").exists()
    assert Path(info["environment"]["path"]).exists()


def test_missing_git_does_not_fail(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    info = collect(tmp_path, tmp_path / "exp")
    assert info["git"] is None and "not installed" in info["git_reason"]


def test_environment_and_identity(tmp_path):
    info = collect(tmp_path, tmp_path / "exp")
    env = info["environment"]
    text = Path(env["path"]).read_text()
    assert env["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    lines = text.splitlines()
    assert any(line.lower().startswith("pytest==") for line in lines)
    assert lines == sorted(lines, key=str.lower) and env["n_distributions"] == len(lines)
    assert info["python"]["executable"] and info["python"]["version"].count(".") == 2
    assert info["host"] and info["user"] and info["cwd"] and isinstance(info["argv"], list)
    assert info["slurmexp_version"]
    assert info["time_utc"].endswith("+00:00")


def test_distributions_name_each_package_once():
    dists = distributions()
    assert len({d.split("==")[0].lower() for d in dists}) == len(dists)


def test_version_fallback(monkeypatch):
    def missing(name):
        raise provenance.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(provenance.importlib.metadata, "version", missing)
    assert provenance.slurmexp_version() == __version__


def test_parse_status_porcelain_v2():
    out = "\0".join([
        "# branch.oid 0123abcd", "# branch.head (detached)",
        "2 R. N... 100644 100644 100644 aaa bbb R100 new name.py", "old name.py",
        "? data/x.csv", "",
    ])
    assert _parse_status(out) == ("0123abcd", None, True, ["data/x.csv"])
    initial = "# branch.oid (initial)\0# branch.head main\0"
    assert _parse_status(initial) == (None, "main", False, [])


def test_remote_credentials_are_dropped():
    url = "https://bob:ghp_secret@github.com/o/r.git\n"
    assert _redact_url(url) == "https://github.com/o/r.git"
    assert _redact_url("git@github.com:o/r.git") == "git@github.com:o/r.git"


# ---------------------------------------------------------------- privacy (issue 9, item 14)

@needs_git
def test_provenance_files_are_private(repo, tmp_path):
    (repo / "train.py").write_text("lr = 0.2\n")
    out = tmp_path / "exp" / "provenance"
    out.mkdir(parents=True, mode=0o755)
    (out / "git.diff").write_text("stale")
    (out / "git.diff").chmod(0o644)                        # from an older slurmexp
    info = collect(repo, out)
    assert (out.stat().st_mode & 0o777) == 0o700
    for path in (info["git"]["diff_path"], info["environment"]["path"]):
        assert (Path(path).stat().st_mode & 0o777) == 0o600, path


SECRETS = {".env": "TOKEN=hunter2\n", "deploy/id_rsa": "-----BEGIN hunter2\n", "tls/server.pem": "hunter2\n",
           "conf/api.key": "hunter2\n", "config/Secrets.yaml": "pw: hunter2\n", ".netrc": "password hunter2\n",
           ".env.production": "X=hunter2\n"}


@needs_git
def test_secret_files_stay_out_of_the_diff(repo, tmp_path):
    for name in SECRETS:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("placeholder\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "secrets")
    for name, text in SECRETS.items():
        (repo / name).write_text(text)
    (repo / "train.py").write_text("lr = 0.2\n")
    info = collect(repo / "deploy", tmp_path / "exp")
    diff = Path(info["git"]["diff_path"]).read_text()
    assert "hunter2" not in diff and "+lr = 0.2" in diff
    omitted = {s["path"]: s for s in info["git"]["secrets_omitted"]}
    assert set(omitted) == set(SECRETS)
    for name, text in SECRETS.items():
        digest = hashlib.sha256(text.encode()).hexdigest()
        assert omitted[name]["sha256"] == digest and f"{name} sha256 {digest}" in diff
    assert "hunter2" not in json.dumps(info)
    # What is recorded still applies to the commit: everything but the secrets.
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    git(clone, "apply", str(tmp_path / "exp" / "git.diff"))
    assert (clone / "train.py").read_text() == "lr = 0.2\n"
    assert (clone / ".env").read_text() == "placeholder\n"


@needs_git
def test_secret_patterns_are_configurable(repo, tmp_path):
    (repo / ".env").write_text("A=1\n")
    git(repo, "add", ".env")
    git(repo, "commit", "-q", "-m", "env")
    (repo / ".env").write_text("A=2\n")
    (repo / "util.py").write_text("x = 'hunter2'\n")
    info = collect(repo, tmp_path / "a", secret_patterns=[])
    assert "+A=2" in Path(info["git"]["diff_path"]).read_text() and not info["git"]["secrets_omitted"]
    info = collect(repo, tmp_path / "b", secret_patterns=["util.*"])
    diff = Path(info["git"]["diff_path"]).read_text()
    assert "+A=2" in diff and "hunter2" not in diff
    assert [s["path"] for s in info["git"]["secrets_omitted"]] == ["util.py"]


@needs_git
def test_launch_uses_the_sweeps_secret_patterns(repo, tmp_path):
    from slurmexp.launch.launcher import launch
    from slurmexp.ledger import Ledger
    from slurmexp.sweep.spec import load_sweep

    site = Path(__file__).resolve().parent.parent / "site.toml"
    (repo / ".env").write_text("A=1\n")
    (repo / "notes.md").write_text("a\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "more")
    (repo / ".env").write_text("A=hunter2\n")
    (repo / "notes.md").write_text("b hunter3\n")
    (repo / "sweep.toml").write_text('name = "s"\ncommand = "true"\n')
    assert load_sweep(repo / "sweep.toml").provenance.secret_patterns == list(provenance.DEFAULT_SECRET_PATTERNS)
    ledger = Ledger(tmp_path / "ledger.db")
    exp = ledger.get_experiment(launch(repo / "sweep.toml", site, backend="local", ledger=ledger).exp_id)
    diff = Path(exp["provenance"]["git"]["diff_path"])
    assert "hunter2" not in diff.read_text() and "hunter3" in diff.read_text()
    assert (diff.stat().st_mode & 0o777) == 0o600
    (repo / "sweep.toml").write_text('name = "s2"\ncommand = "true"\n[provenance]\nsecret_patterns = ["*.md"]\n')
    exp = ledger.get_experiment(launch(repo / "sweep.toml", site, backend="local", ledger=ledger).exp_id)
    text = Path(exp["provenance"]["git"]["diff_path"]).read_text()
    assert "hunter2" in text and "hunter3" not in text


@needs_git
def test_the_output_folder_stays_out_of_the_untracked_files(repo, tmp_path):
    # An output_dir made before slurmexp wrote a .gitignore into it (or whose .gitignore the
    # user removed): its run folders are the tool's own files, not the user's untracked ones.
    runs = repo / "slurmexp-runs" / "exp-1" / "runs"
    for i in range(3):
        (runs / f"r{i}").mkdir(parents=True)
        (runs / f"r{i}" / "params.json").write_text("{}\n")
    (repo / "notes.txt").write_text("scratch\n")
    info = collect(repo, tmp_path / "exp", exclude=[repo / "slurmexp-runs"])
    g = info["git"]
    assert g["untracked"] == ["notes.txt"] and g["n_untracked"] == 1
    assert g["n_untracked_excluded"] == 3
    assert "slurmexp-runs" not in Path(g["diff_path"]).read_text()
    # a folder outside the repository, or the repository itself, leaves the list alone
    assert collect(repo, tmp_path / "e2", exclude=[tmp_path / "elsewhere"])["git"]["n_untracked"] == 4
    assert collect(repo, tmp_path / "e3", exclude=[repo])["git"]["n_untracked"] == 4


@needs_git
def test_launch_writes_a_gitignore_into_the_output_folder_it_creates(repo, tmp_path):
    from slurmexp.launch.launcher import launch
    from slurmexp.ledger import Ledger

    site = Path(__file__).resolve().parent.parent / "site.toml"
    (repo / "sweep.toml").write_text('name = "s"\ncommand = "echo {x}"\n[params]\nx = [1, 2, 3]\n')
    git(repo, "add", "sweep.toml")
    git(repo, "commit", "-q", "-m", "sweep")
    ledger = Ledger(tmp_path / "ledger.db")
    first = ledger.get_experiment(launch(repo / "sweep.toml", site, backend="local", ledger=ledger).exp_id)
    assert (repo / "slurmexp-runs" / ".gitignore").read_text().splitlines()[-1] == "*"
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert first["provenance"]["git"]["n_untracked"] == 0
    # a second experiment in the same folder does not see the first one's run folders
    (repo / "sweep.toml").write_text('name = "s2"\ncommand = "echo {x}"\n[params]\nx = [1, 2]\n')
    git(repo, "commit", "-q", "-am", "s2")
    second = ledger.get_experiment(launch(repo / "sweep.toml", site, backend="local", ledger=ledger).exp_id)
    assert second["provenance"]["git"]["n_untracked"] == 0 and second["provenance"]["git"]["dirty"] is False


def test_an_output_folder_the_user_made_is_left_as_it_is(tmp_path):
    from slurmexp.launch.experiment_files import make_output_dir

    mine = tmp_path / "mine"
    mine.mkdir()
    make_output_dir(mine)
    assert not (mine / ".gitignore").exists()
    made = make_output_dir(tmp_path / "a" / "b")
    assert (made / ".gitignore").is_file() and not (tmp_path / "a" / ".gitignore").exists()
