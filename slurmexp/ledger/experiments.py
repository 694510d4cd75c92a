"""Experiments: creating one with all its runs, finding it again, its settings and its state."""
from __future__ import annotations

import difflib
import json
import os
import re
import sqlite3
from collections.abc import Iterable

from slurmexp.errors import ExperimentExists, Problem, SlurmexpError
from slurmexp.ledger.connection import _in_list, _json, _now, _path_str
from slurmexp.settings import ExperimentSettings
from slurmexp.states import PLANNED

_RUN_COLS = ["exp_id", "run_id", "idx", "params_json", "seed", "source", "state", "reason",
             "run_dir", "chunk", "task_index", "n_attempts", "updated"]


def _run_cols(runs: list[dict]) -> list[str]:
    """`_RUN_COLS`, with `reuse_key` (schema 6) when a run has one."""
    return [*_RUN_COLS, "reuse_key"] if any(r.get("reuse_key") for r in runs) else _RUN_COLS


def _run_rows(exp_id: str, runs: list[dict], now: str) -> list[list]:
    """`runs` rows (PLANNED) in `_run_cols(runs)` order."""
    key = ([r.get("reuse_key")] for r in runs) if _run_cols(runs) != _RUN_COLS else ([] for _ in runs)
    return [[exp_id, r["run_id"], r.get("idx", r.get("index")),
             r.get("params_json") or _json(r.get("params", {})),
             r.get("seed"), r.get("source"), PLANNED, None, _path_str(r.get("run_dir")),
             r.get("chunk"), r.get("task_index"), 0, now, *k] for r, k in zip(runs, key)]


class ExperimentsMixin:
    def create_experiment(self, exp_id: str, name: str, fingerprint: str, cluster: str | None,
                          backend: str, exp_dir: str | os.PathLike | None,
                          sweep_path: str | os.PathLike | None,
                          sweep_copy_path: str | os.PathLike | None,
                          site_path: str | os.PathLike | None, site_hash: str | None,
                          template_hash: str | None, provenance: dict | None,
                          runs: list[dict]) -> dict:
        """Experiment and all its runs (PLANNED) in one transaction: never half a sweep.

        A run's "params_json", where given, is its parameters already as the column stores
        them (`sweep.expand.params_text`), so they are not encoded again."""
        now = _now()
        s = _path_str
        rows = _run_rows(exp_id, runs, now)
        try:
            with self.transaction():
                self.db.insert("experiments", {
                    "exp_id": exp_id, "name": name, "fingerprint": fingerprint, "created": now,
                    "cluster": cluster, "backend": backend, "state": "PLANNED",
                    "reason": None, "updated": now, "sweep_path": s(sweep_path),
                    "exp_dir": s(exp_dir), "sweep_copy_path": s(sweep_copy_path),
                    "site_path": s(site_path), "site_hash": site_hash,
                    "template_hash": template_hash, "provenance_json": _json(provenance or {}),
                    "n_runs": len(rows)})
                self._insert_rows("runs", _run_cols(runs), rows)
                self._event("created", exp_id, to_state="PLANNED", reason=f"{len(rows)} runs")
        except sqlite3.IntegrityError as e:
            if self.db.execute("SELECT 1 FROM experiments WHERE exp_id = ?", [exp_id]).fetchone():
                what, fix = f"experiment {exp_id!r} already exists", "launch with --new for a copy"
                raise ExperimentExists(what, [Problem(str(self.path), "runs", str(e), fix)]) from e
            what, fix = f"experiment {exp_id!r} could not be recorded", "check the run ids"
            raise SlurmexpError(what, [Problem(str(self.path), "runs", str(e), fix)]) from e
        return self.get_experiment(exp_id, required=True)

    def add_runs(self, exp_id: str, runs: list[dict]) -> int:
        """Append PLANNED runs to an existing experiment (a drop-in executor extending a named
        experiment, slurmexp.functions). Same row shape as `create_experiment`'s runs; one
        transaction."""
        now = _now()
        rows = _run_rows(exp_id, runs, now)
        try:
            with self.transaction():
                self.get_experiment(exp_id, required=True)
                self._insert_rows("runs", _run_cols(runs), rows)
                self.db.execute("UPDATE experiments SET n_runs = n_runs + ?, updated = ? "
                                "WHERE exp_id = ?", [len(rows), now, exp_id])
                self._event("extended", exp_id, reason=f"{len(rows)} runs added")
        except sqlite3.IntegrityError as e:
            raise SlurmexpError(f"experiment {exp_id!r}: runs could not be added",
                                [Problem(str(self.path), "runs", str(e), "check the run ids")]) from e
        return len(rows)

    @staticmethod
    def _experiment_dict(row: dict) -> dict:
        row["provenance"] = json.loads(row["provenance_json"] or "{}")
        row["tags"] = json.loads(row.get("tags_json") or "[]")
        return row

    def get_experiment(self, exp_id: str, required: bool = False) -> dict | None:
        rows = self._rows("SELECT * FROM experiments WHERE exp_id = ?", [exp_id])
        if rows:
            return self._experiment_dict(rows[0])
        if not required:
            return None
        known = [r["exp_id"] for r in self._rows(
            "SELECT exp_id FROM experiments ORDER BY created DESC")]
        close = [k for k in known if k.startswith(exp_id)] or difflib.get_close_matches(
            exp_id, known, n=3)
        if close:
            fix = f"did you mean {', '.join(close[:5])}?"
        elif known:
            more = f" (and {len(known) - 10} more)" if len(known) > 10 else ""
            shown = ", ".join(known[:10]) + more
            fix = f"known experiments, newest first: {shown}"
        else:
            fix = "this ledger has no experiments yet; launch one first (or check SLURMEXP_HOME)"
        raise SlurmexpError(f"no experiment {exp_id!r} in ledger {self.path}",
                            [Problem(str(self.path), "experiments", f"unknown id {exp_id!r}", fix)])

    def find_experiment_by_fingerprint(self, fingerprint: str) -> list[dict]:
        return [self._experiment_dict(r) for r in self._rows(
            "SELECT * FROM experiments WHERE fingerprint = ? ORDER BY created, exp_id",
            [fingerprint])]

    def experiments(self, *, backend: str | Iterable[str] | None = None) -> list[dict]:
        """Every experiment (of `backend`, a kind or several, when given), oldest first."""
        sql, params = "SELECT * FROM experiments", []
        if backend is not None:
            clause, params = _in_list("backend", backend)
            sql += f" WHERE {clause}"
        return [self._experiment_dict(r) for r in self._rows(
            sql + " ORDER BY created, exp_id", params)]

    def experiment_ids(self) -> list[str]:
        """Every experiment id, oldest first."""
        return [r[0] for r in self.db.execute(
            "SELECT exp_id FROM experiments ORDER BY created, exp_id")]

    def experiment_state(self, exp_id: str) -> str:
        row = self.db.execute("SELECT state FROM experiments WHERE exp_id = ?",
                              [exp_id]).fetchone()
        if row is None:
            self.get_experiment(exp_id, required=True)   # raises with the usual hints
        return row[0]

    def next_experiment_suffix(self, base_id: str) -> str:
        """"" when `base_id` is free, else "-N" with N one past the highest suffix in use."""
        like = base_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "-%"
        ids = [r[0] for r in self.db.execute(
            "SELECT exp_id FROM experiments WHERE exp_id = ? OR exp_id LIKE ? ESCAPE '\\'",
            [base_id, like])]
        if base_id not in ids:
            return ""
        taken = [int(m.group(1)) for i in ids
                 if (m := re.fullmatch(re.escape(base_id) + r"-(\d+)", i))]
        return f"-{max([1, *taken]) + 1}"

    def experiment_settings(self, exp_id: str) -> ExperimentSettings:
        """The experiment's stored settings (empty ones when none were stored)."""
        row = self.db.execute("SELECT settings_json FROM experiments WHERE exp_id = ?",
                              [exp_id]).fetchone()
        if row is None:
            self.get_experiment(exp_id, required=True)   # raises with the usual hints
        return ExperimentSettings.from_json(row[0] if row else None)

    def set_experiment_settings(self, exp_id: str, settings: ExperimentSettings | dict) -> None:
        if isinstance(settings, dict):      # the version-1 layout, as older callers write it
            settings = ExperimentSettings.from_dict(settings)
        with self.transaction():
            self.get_experiment(exp_id, required=True)
            self.db.execute("UPDATE experiments SET settings_json = ? WHERE exp_id = ?",
                            [settings.to_json(), exp_id])

    def set_experiment_meta(self, exp_id: str, tags: Iterable[str] = (), note: str | None = None) -> None:
        """The experiment's tags (kept in the order given, once each) and note."""
        tags = list(dict.fromkeys(tags))
        with self.transaction():
            self.get_experiment(exp_id, required=True)
            self.db.execute("UPDATE experiments SET tags_json = ?, note = ? WHERE exp_id = ?",
                            [json.dumps(tags), note, exp_id])

    def set_experiment_archived(self, exp_id: str, archived: bool) -> None:
        """Hide the experiment from `status` (its time), or show it again (NULL)."""
        with self.transaction():
            self.get_experiment(exp_id, required=True)
            self.db.execute("UPDATE experiments SET archived = ? WHERE exp_id = ?",
                            [_now() if archived else None, exp_id])
            self._event("archived" if archived else "unarchived", exp_id)

    def delete_experiment(self, exp_id: str) -> int:
        """The experiment and everything of it (runs, submissions, attempts, events) in one
        transaction; returns the number of runs it had."""
        with self.transaction():
            n = self.get_experiment(exp_id, required=True)["n_runs"]
            for table in ("events", "attempts", "submissions", "runs", "experiments"):
                self.db.execute(f"DELETE FROM {table} WHERE exp_id = ?", [exp_id])
        return n

    def set_experiment_state(self, exp_id: str, state: str, reason: str | None = None) -> None:
        with self.transaction():
            old = self.get_experiment(exp_id, required=True)["state"]
            self.db.execute("UPDATE experiments SET state = ?, reason = ?, updated = ? "
                            "WHERE exp_id = ?", [state, reason, _now(), exp_id])
            self._event("experiment_state", exp_id, from_state=old, to_state=state, reason=reason)
