"""scripts/airflow.sh's metadata PostgreSQL: the roles it creates get their passwords without any process having
them on its command line (which every local user can read in /proc/<pid>/cmdline or ps)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.ports import shifted

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # a real PostgreSQL server (airflow.sh postgres)


@pytest.fixture
def state():
    # PostgreSQL runs as the postgres user, which cannot enter pytest's root-only temp folders.
    folder = Path(tempfile.mkdtemp(prefix="kiln-airflow-sh-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_role_passwords_never_reach_a_command_line(state):
    if not shutil.which("strace"):
        pytest.fail("strace is needed to see every command line the script runs; install strace")
    pg_port = shifted(5633)
    env = {**os.environ, "KILN_AIRFLOW_STATE": str(state), "KILN_PG_PORT": str(pg_port)}
    script = str(ROOT / "scripts" / "airflow.sh")
    # the psql of the server's own PostgreSQL, found as the script finds it
    psql = Path(subprocess.run(["bash", "-c", "readlink -f \"$(command -v initdb || echo /usr/lib/postgresql/15/bin/initdb)\""],
                               capture_output=True, text=True).stdout.strip()).parent / "psql"
    trace = state / "execve.trace"
    try:
        # PostgreSQL is started first, untraced (strace would wait for the server it forks to exit); its roles are
        # dropped, so the traced second start is the one that creates them.
        assert subprocess.run([script, "postgres"], env=env, capture_output=True, timeout=300).returncode == 0
        drop = "DROP DATABASE airflow; DROP DATABASE kiln_source; DROP ROLE airflow; DROP ROLE kiln_source;"
        out = subprocess.run(["runuser", "-u", "postgres", "--", str(psql), "-h", str(state / "pg-socket"), "-p",
                              str(pg_port), "-d", "postgres", "-v", "ON_ERROR_STOP=1"], input=drop, env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        out = subprocess.run(["strace", "-f", "-qq", "-e", "trace=execve", "-s", "4096", "-o", str(trace), script,
                              "postgres"], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        secrets = dict(line.split("=", 1) for line in (state / "secrets.env").read_text().split())
        commands = trace.read_text()
        assert "psql" in commands and "CREATE ROLE" not in commands  # psql ran, no CREATE ROLE was in an argv
        for name in ("KILN_PG_PASSWORD", "KILN_SOURCE_PASSWORD"):
            assert secrets[name] not in commands, f"{name} was on a command line"
        # the roles exist again and log in over TCP with their passwords (scram-sha-256)
        for role, name in (("airflow", "KILN_PG_PASSWORD"), ("kiln_source", "KILN_SOURCE_PASSWORD")):
            login = subprocess.run([str(psql), "-h", "127.0.0.1", "-p", str(pg_port), "-U", role, "-d", role, "-tAc",
                                    "SELECT current_user"], env={**env, "PGPASSWORD": secrets[name]},
                                   capture_output=True, text=True, timeout=30)
            assert login.returncode == 0 and login.stdout.strip() == role, login.stderr
    finally:
        subprocess.run([script, "down"], env=env, capture_output=True, timeout=120)
