"""Transports: how slurmexp runs a command and touches a file on the machine Slurm runs on.

`base` says what a transport does (the `Transport` Protocol and its result and errors); `local`
does it on this machine, `ssh` on a login node through the OpenSSH client (imported from
`slurmexp.transport.ssh`). Every Slurm command goes through one transport object, so running
slurmexp from another machine is a matter of handing the backends another transport.
"""
from slurmexp.transport.base import (  # noqa: F401
    CommandNotFound,
    CommandResult,
    CommandTimeout,
    PathNotFound,
    RemotePath,
    Transport,
    TransportError,
    TransportUnreachable,
)
from slurmexp.transport.local import LocalTransport  # noqa: F401
