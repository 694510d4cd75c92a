"""Names that reach #SBATCH lines (partition, QOS, account, reservation, GPU type, constraint),
checked where they are written, so a refusal names the sweep or site key instead of the line
of the template where sbatch would have split, stripped or cut them.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, Strict

from slurmexp.sweep.strict_toml import FixError

# Where each kind of Slurm name can be looked up on the cluster, for the fix line.
SLURM_NAME_SOURCES = {
    "partition": "sinfo -h -o %R", "qos": "sacctmgr -n show qos format=name",
    "account": "sacctmgr -n show assoc user=$USER format=account",
    "reservation": "scontrol show reservation", "GPU type": "sinfo -h -o %G",
    "constraint": "sinfo -h -o %f",
}
# What sbatch changes on an #SBATCH line: it splits on whitespace, strips quotes and backslashes
# and ends the line at '#'. Render refuses these too, but can only name the template line.
_MANGLED = "\\s\"'\\\\#\\x00-\\x1f\\x7f"
# Beyond that, a name is one name: a comma makes a list; in a GPU type ':' would change the gres.
_EXTRA = {"constraint": "", "GPU type": ",:=", "partition": ",", "qos": ",", "account": ",",
          "reservation": ","}
_WHY = {",": "has a comma, which Slurm reads as a list (slurmexp places a run on one {kind})",
        ":": "has a ':', which would change the gres gpu:TYPE:COUNT",
        "=": "has a '=', which would change the gres gpu:TYPE:COUNT",
        "#": "has a '#', where sbatch ends the #SBATCH line",
        "'": "has a quote, which sbatch strips", '"': "has a quote, which sbatch strips",
        "\\": "has a backslash, which sbatch strips"}


def slurm_name_error(value: str, kind: str) -> FixError | None:
    """Why `value` cannot go on an #SBATCH line as one `kind`, or None when it can.

    The fix suggests the first name in the value (quotes, backslashes and what follows a '#'
    dropped; for a constraint the words joined with '&') and where the real names are listed.
    """
    bad = re.compile(f"[{_MANGLED}{re.escape(_EXTRA.get(kind, ','))}]")
    found = bad.search(value)
    if found is None and value:
        return None
    source = SLURM_NAME_SOURCES.get(kind)
    listing = f"one {kind} as `{source}` lists it" if source else f"one {kind}"
    if kind == "constraint":
        listing = f"features as `{source}` lists them, joined with & (and) or | (or)"
    if not value.strip():
        return FixError(f"{kind} {value!r} is empty", f"remove the key, or give {listing}")
    if value != value.strip() and not bad.search(value.strip()):
        what = "has spaces around it"
    elif found.group(0).isspace():
        what = "has whitespace, where sbatch splits the #SBATCH line"
    elif found.group(0) in _WHY:
        what = _WHY[found.group(0)].format(kind=kind)
    else:
        what = "has a control character, which an #SBATCH line cannot carry"
    kept = re.sub(r"[\x00-\x1f\x7f]", " ", re.sub(r"[\"'\\]", "", value)).split("#")[0].strip()
    if kind == "constraint":
        words = [re.sub(r"\s+", "&", re.sub(r"\s*([&|,()\[\]*])\s*", r"\1", kept))] if kept else []
    else:
        words = [w for w in re.split(r"[\s,]+", kept) if w]
    if kind == "GPU type":
        words = [w for w in (re.split("[:=]", w)[0] for w in words) if w]
    return FixError(f"{kind} {value!r} {what}", listing, words[0] if words else None)


def _slurm_name(kind: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        error = slurm_name_error(value, kind)
        if error is not None:
            raise error
        return value
    return check


def SlurmName(kind: str) -> Any:  # noqa: N802 - used like a type: partition: SlurmName("partition")
    """A string that reaches an #SBATCH line as one `kind` (see slurm_name_error)."""
    return Annotated[str, Strict(), AfterValidator(_slurm_name(kind))]
