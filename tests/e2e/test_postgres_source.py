"""A dataset read from PostgreSQL through an Airflow connection, on the running Airflow: its spec drafted by
infer-dataset from the table, a three-day CLI backfill reading only each day's rows, secrets masked."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ml_tasks.core.layout import Layout
from ml_tasks.ingestion.synthetic import generate_chunk
from tests.e2e.helpers import ARTIFACTS

pytestmark = [pytest.mark.slow, pytest.mark.ignite]
DAG_ID = "kiln_training_card_events"
DAYS = ["2026-05-01", "2026-05-02", "2026-05-03", "2026-05-04", "2026-05-05"]
BACKFILL = DAYS[2:4]  # two days between neighbours that hold rows too: each reads only its own
CONF = {"candidates": ["mxnet_mlp"], "warm_cache": False}


def rows_of(ds: str) -> int:
    return 1_500 + 100 * DAYS.index(ds)  # a different count per day: a partition holding another day's rows shows


@pytest.fixture(scope="module")
def card_events(airflow_server):
    """Five days of card events in the kiln_source database, and the spec infer-dataset drafts from the table."""
    import psycopg2

    with psycopg2.connect(airflow_server.source_uri) as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS public.card_events")
        cur.execute("""CREATE TABLE public.card_events (entity_id text, event_ts timestamp, amount double precision,
            hour_of_day integer, distance_from_home_km double precision, tx_count_24h integer, account_age_days integer,
            is_foreign integer, merchant_category text, channel text, label integer)""")
        for ds in DAYS:
            buffer = io.StringIO()
            generate_chunk(ds, 0, rows_of(ds), 1_000).to_pandas().to_csv(buffer, index=False, header=False)
            buffer.seek(0)
            cur.copy_expert("COPY public.card_events FROM STDIN WITH (FORMAT csv)", buffer)
    env = {"PATH": "/usr/bin:/bin", "AIRFLOW_CONN_KILN_SOURCE": airflow_server.source_uri}
    drafted = subprocess.run([sys.executable, "-m", "ml_tasks", "infer-dataset", "postgres:kiln_source/public.card_events",
                              "--label", "label", "--key", "entity_id", "--date-column", "event_ts"],
                             capture_output=True, text=True, timeout=120, env=env)
    assert drafted.returncode == 0, drafted.stderr
    spec = drafted.stdout + "settings: {max_positive_rate: 0.6, candidates: [mxnet_mlp]}\n"  # the review's edit
    spec += "input_roots: [/nowhere]\n"  # where the masking test's input_path (a file that is not there) may point
    (airflow_server.datasets / "card_events.yaml").write_text(spec)
    airflow_server.wait_for_dag(DAG_ID)
    with airflow_server.api() as api:
        assert api.patch(f"/dags/{DAG_ID}", json={"is_paused": False}).status_code == 200
    return spec


def test_the_drafted_spec_reads_the_table_by_day(card_events):
    assert "kind: postgres" in card_events and "date_column: event_ts" in card_events and "table: public.card_events" in card_events


def test_a_postgres_dataset_backfills_two_days_reading_only_each_days_rows(airflow_server, card_events):
    out = airflow_server.script("cli", "backfill", "create", "--dag-id", DAG_ID, "--from-date", BACKFILL[0],
                                "--to-date", BACKFILL[-1], "--max-active-runs", "1", "--dag-run-conf", json.dumps(CONF))
    assert out.returncode == 0, out.stdout + out.stderr
    deadline = time.monotonic() + 900
    runs: list[dict] = []
    while time.monotonic() < deadline:
        runs = sorted((r for r in airflow_server.runs(DAG_ID) if r["run_type"] == "backfill"), key=lambda r: r["logical_date"])
        if len(runs) == len(BACKFILL) and all(r["state"] in ("success", "failed") for r in runs):
            break
        time.sleep(5)
    assert [r["state"] for r in runs] == ["success"] * len(BACKFILL), runs
    for run in runs:
        ds = run["logical_date"][:10]
        raw = pq.read_table(Layout(airflow_server.data_root, "card_events", ds).raw_dir)
        assert raw.num_rows == rows_of(ds)
        days = {d.isoformat() for d in pc.unique(pc.cast(raw.column("event_ts"), "date32")).to_pylist()}
        assert days == {ds}
    state = json.loads((airflow_server.data_root / "registry/card_events/registry.json").read_text())
    assert set(state["versions"]) == set(BACKFILL)


def test_a_day_without_rows_in_the_table_fails_validation_naming_the_rule(airflow_server, card_events):
    """Unpausing created the run of the latest interval, a day the table has no rows for."""
    deadline = time.monotonic() + 300
    scheduled: list[dict] = []
    while time.monotonic() < deadline:
        scheduled = [r for r in airflow_server.runs(DAG_ID) if r["run_type"] == "scheduled"]
        if scheduled and scheduled[0]["state"] in ("success", "failed"):
            break
        time.sleep(3)
    assert scheduled and scheduled[0]["state"] == "failed"
    log = airflow_server.task_log(DAG_ID, scheduled[0]["dag_run_id"], "validate")
    assert "rule 'non_empty' failed: the partition has no rows" in log
    assert not (airflow_server.data_root / "registry/card_events/versions" / scheduled[0]["logical_date"][:10]).exists()


def test_a_stage_printing_a_connection_password_is_masked_in_its_task_log(airflow_server, card_events):
    """Stages inherit Kiln's connections; whatever a stage prints must not carry their secrets into task logs."""
    from tests.e2e.airflow_server import MASK_PROBE_PASSWORD

    # A path that happens to hold a password stands for a stage printing a DSN: ingest fails echoing it.
    source_password = airflow_server.secret("KILN_SOURCE_PASSWORD")
    with airflow_server.api() as api:
        resp = api.post(f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {
            **CONF, "partition_date": "2026-04-01", "input_path": f"/nowhere/{MASK_PROBE_PASSWORD}/{source_password}.csv"}})
    assert resp.status_code == 200, resp.text
    run = airflow_server.wait_for_run(DAG_ID, resp.json()["dag_run_id"])
    assert run["state"] == "failed"
    log = airflow_server.task_log(DAG_ID, run["dag_run_id"], "ingest")
    (ARTIFACTS / "masking-ingest.log").write_text(log.replace(MASK_PROBE_PASSWORD, "<PROBE>").replace(source_password, "<SOURCE>"))
    assert "does not exist" in log, log[-2000:]  # the stage did print the path
    assert MASK_PROBE_PASSWORD not in log and source_password not in log
    assert "/nowhere/***/***.csv" in log


def test_a_query_source_reads_only_its_days_rows_in_bounded_batches(airflow_server, card_events, tmp_path):
    """A spec whose source is a query (a filter here) streams the day's rows of that query, nothing else."""
    from ml_tasks.core.spec import parse_spec
    from ml_tasks.ingestion.ingest import ingest

    spec = parse_spec(card_events.replace("  table: public.card_events\n",
                                          "  query: SELECT * FROM public.card_events WHERE channel <> 'atm'\n"),
                      "card_events_no_atm", "card_events_no_atm.yaml", tmp_path)
    lay = Layout(tmp_path, spec.name, DAYS[0])
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AIRFLOW_CONN_KILN_SOURCE", airflow_server.source_uri)
        result = ingest(spec, lay.ds, lay.raw_dir)
    expected = generate_chunk(DAYS[0], 0, rows_of(DAYS[0]), 1_000).to_pandas()
    raw = pq.read_table(lay.raw_dir).to_pandas()
    assert result["rows"] == len(raw) == int((expected.channel != "atm").sum())
    assert set(raw.channel) == {"online", "pos"} and set(raw.event_ts.dt.date.astype(str)) == {DAYS[0]}
