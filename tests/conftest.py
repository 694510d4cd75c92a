"""Shared fixtures. The `cluster` fixture brings the real mini Slurm cluster up once per session.

Under CI=true a cluster that cannot be started is a test failure, never a skip: a skipped
cluster test proves nothing about Slurm.
"""
from __future__ import annotations

import os

import pytest
from clusterlib import Cluster, ClusterUnavailable, slurm_installed

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config, items):
    # Tests that wipe or break the whole cluster run after everything else.
    items.sort(key=lambda item: 1 if item.get_closest_marker("destructive") else 0)


def pytest_configure(config):
    config.addinivalue_line("markers", "destructive: wipes or restarts the whole cluster; runs last")


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    if not slurm_installed():
        msg = ("the test cluster is not installed: run `bash docker/slurm-cluster/install.sh` "
               "then `bash docker/slurm-cluster/cluster.sh up`")
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    c = Cluster()
    try:
        c.up()
    except ClusterUnavailable as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    return c
