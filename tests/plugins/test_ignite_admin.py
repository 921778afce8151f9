"""What Kiln's Ignite pods run, against a real node: the readiness check and the activation of
ignite/kiln-ignite-admin.sh (thin-client requests, not an open port), and the backups setting every
Kiln cache takes from the node's configuration."""

from __future__ import annotations

import socket
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.ignite_node import ROOT, IgniteNode
from tests.ports import free_port

pytestmark = pytest.mark.ignite
ADMIN = ROOT / "ignite" / "kiln-ignite-admin.sh"


def admin(command: str, port: int) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ADMIN), command, "127.0.0.1", str(port)], capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "KILN_IGNITE_LIBS": str(ROOT / ".ignite" / "libs")})


@pytest.fixture(scope="module")
def two_backup_node(tmp_path_factory):
    """A persistent node configured as in Kubernetes with more than one pod (kiln.ignite.backups=1), started
    inactive as a fresh persistent cluster is."""
    node = IgniteNode(tmp_path_factory.mktemp("ignite-admin"), port=10970, discovery_port=47670,
                      communication_port=47270, backups=1, activate=False)
    node.start()
    yield node
    node.stop()


@pytest.mark.slow  # a real Ignite node
def test_ready_means_a_thin_client_request_answered_by_an_active_cluster(two_backup_node):
    """The port is open from the start; the node is ready only once the cluster is activated."""
    with socket.create_connection(("127.0.0.1", two_backup_node.port), timeout=5):
        pass
    not_ready = admin("ready", two_backup_node.port)
    assert not_ready.returncode == 1 and "Cluster state: INACTIVE" in not_ready.stderr
    activated = admin("activate", two_backup_node.port)
    assert activated.returncode == 0, activated.stdout + activated.stderr
    assert admin("ready", two_backup_node.port).returncode == 0
    again = admin("activate", two_backup_node.port)  # the Job re-run, the overlay re-applied: nothing changes
    assert again.returncode == 0, again.stdout + again.stderr
    assert admin("ready", two_backup_node.port).returncode == 0


def test_a_closed_port_is_not_ready():
    assert admin("ready", free_port()).returncode == 1


@pytest.mark.slow  # a real Ignite node
def test_every_kiln_cache_takes_the_node_s_backups(two_backup_node, tmp_path):
    from pyignite.datatypes.prop_codes import PROP_BACKUPS_NUMBER

    from ml_tasks.features.feature_cache import ALIAS_CACHE, LOCK_CACHE, warm

    assert admin("activate", two_backup_node.port).returncode == 0  # whichever test runs first
    source = tmp_path / "features"
    source.mkdir()
    pq.write_table(pa.table({"entity_id": [1, 2, 3], "x": [0.1, 0.2, 0.3]}), source / "part-0.parquet")
    client = two_backup_node.client()
    try:
        result = warm(client, "kiln_backups_check", source, key="entity_id", version_prefix="v1-")
        names = [result["cache"], ALIAS_CACHE, LOCK_CACHE]
        assert {name: client.get_cache(name).settings[PROP_BACKUPS_NUMBER] for name in names} == dict.fromkeys(names, 1)
    finally:
        client.close()
