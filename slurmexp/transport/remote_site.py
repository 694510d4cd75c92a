"""The SSH transport of a site's `[remote]` table: the one place a site's remote settings become
an `SshTransport`, so launch, reconcile, validation and `site discover` all reach the cluster
the same way (and through one ControlMaster per invocation: one object per remote here)."""
from __future__ import annotations

from typing import Any

from slurmexp.transport.ssh import SshTransport

_OPEN: dict[tuple, SshTransport] = {}


def remote_key(remote: Any) -> tuple:
    return (remote.host, remote.user, remote.port, remote.identity_file,
            tuple(remote.ssh_options), remote.root)


def transport_for_remote(remote: Any) -> SshTransport:
    """One `SshTransport` per distinct `[remote]` table in this process."""
    key = remote_key(remote)
    if key not in _OPEN:
        _OPEN[key] = SshTransport(remote.host, user=remote.user, port=remote.port,
                                  identity_file=remote.identity_file,
                                  ssh_options=remote.ssh_options, root=remote.root)
    return _OPEN[key]


def parse_target(target: str) -> tuple[str | None, str]:
    """`[USER@]HOST` -> (user or None, host)."""
    user, sep, host = target.rpartition("@")
    return (user or None, host) if sep else (None, target)


def remote_toml(host: str, *, user: str | None, port: int | None, identity_file: str | None,
                ssh_options: list[str], root: str) -> str:
    """The `[remote]` table `site discover --remote` appends to the site.toml it writes."""
    from slurmexp.sites.discover import toml_value

    lines = ["", "# How this machine reaches the cluster (slurmexp site discover --remote).", "[remote]",
             f"host = {toml_value(host)}"]
    if user:
        lines.append(f"user = {toml_value(user)}")
    if port:
        lines.append(f"port = {port}")
    if identity_file:
        lines.append(f"identity_file = {toml_value(identity_file)}")
    if ssh_options:
        lines.append(f"ssh_options = {toml_value(list(ssh_options))}")
    lines.append(f"root = {toml_value(root)}")
    return "\n".join(lines) + "\n"
