"""What a report is: the `Report` every format renders, the formats, and the small value rules
(what a finite number is) that the builder and the renderers share. What counts as a failed
attempt is `slurmexp.states.FAILED_STATES`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd



FORMATS = ("table", "csv", "json", "markdown", "html")


@dataclass
class Report:
    experiments: list[dict]                 # one summary per experiment (see summarise())
    runs: pd.DataFrame                      # the run table (RUN_COLUMNS + param.* + metric.*)
    attempts: pd.DataFrame                  # attempts_frame(), for plots and the curious
    params: list[str]
    metrics: list[str]
    by: list[str] | None = None
    by_table: pd.DataFrame | None = None    # exp_id, param.*, n_runs, metric.<m>.mean/std/n
    best_metric: str | None = None
    minimize: bool | None = None
    minimize_guessed: bool = False
    best: pd.DataFrame | None = None        # the best run of each experiment (run-table rows)
    generated: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    columns: list[str] | None = None        # --columns: what the table/Markdown run table shows
    continuous: list[str] = field(default_factory=list)   # params [sample] draws from uniform/loguniform
    plot_metrics: list[str] | None = None   # --metric: what the HTML report plots (None: every metric)

def finite_float(value: Any) -> float | None:
    """A float, or None for what is missing, not a number or infinite (JSON has no NaN)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
