"""`make bench` / `make bench-quick`: the performance figures of Kiln, each beside its baseline (measured in the same
run) and its goal, written to bench/results/<full|quick>/ (results.md, results.json, PNG plots).

Sections: the pipeline with and without Spark start-up (spark-submit per stage vs one Spark Connect server),
online predictions (one at a time and under 32 connections, from wrk, a C load generator), cache warming vs Ignite's
Java IgniteDataStreamer, the DAG file's parse time, and streaming (freshness of Kafka events in Ignite at 2,000 and
10,000 events/s, the sustained rate vs the batch path, the driver's memory over a long run). The quick variant runs smaller sizes and shorter loads.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import bench_ignite  # noqa: E402
from bench.results import Results  # noqa: E402
from tests.spark_cluster import SparkConnectServer  # noqa: E402

CONNECT_PORT, CONNECT_UI_PORT = 15302, 4345
SPARK_TASKS = ("preprocess", "train_spark_lr", "train_spark_gbt")
DS = "2026-01-15"


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


@contextlib.contextmanager
def connect_server(state: Path) -> Iterator[SparkConnectServer]:
    """A Spark Connect server on the bench's own ports (the tests' helper over scripts/spark_connect.sh)."""
    server = SparkConnectServer(state, port=CONNECT_PORT, ui_port=CONNECT_UI_PORT)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def job_intervals(server: SparkConnectServer) -> list[tuple[float, float]]:
    """(submission, completion) of every finished Spark job on ``server``."""
    return [(spark_time(j["submissionTime"]), spark_time(j["completionTime"])) for j in server.jobs() if j.get("completionTime")]


def spark_time(text: str) -> float:
    return datetime.strptime(text.replace("GMT", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def covered(intervals: list[tuple[float, float]], start: float, end: float) -> float:
    """Seconds of [start, end] during which at least one Spark job ran."""
    spans = sorted((max(a, start), min(b, end)) for a, b in intervals if b > start and a < end)
    total, reach = 0.0, start
    for a, b in spans:
        if b > reach:
            total += b - max(a, reach)
            reach = b
    return total


def dags_test(rows: int, spark_conn: str) -> tuple[float, dict[str, tuple[float, float, float]]]:
    """One `airflow dags test kiln_training` run; its wall time and each task's (start, end, duration)."""
    data_root = Path(tempfile.mkdtemp(prefix="kiln-bench-run-"))
    env = {**os.environ, "KILN_DATA_ROOT": str(data_root), "AIRFLOW_CONN_SPARK_DEFAULT": spark_conn}
    started = time.perf_counter()
    out = subprocess.run(["airflow", "dags", "test", "kiln_training", DS, "-c", json.dumps({"rows": rows, "warm_cache": False})],
                         env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    shutil.rmtree(data_root, ignore_errors=True)
    if out.returncode != 0:
        sys.exit(f"kiln_training failed with {spark_conn}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    db = sqlite3.connect(Path(os.environ["AIRFLOW_HOME"]) / "airflow.db")
    run_id = db.execute("SELECT run_id FROM dag_run WHERE dag_id='kiln_training' ORDER BY id DESC LIMIT 1").fetchone()[0]
    tasks = {}
    for task, start, end, duration in db.execute("SELECT task_id, start_date, end_date, duration FROM task_instance "
                                                 "WHERE dag_id='kiln_training' AND run_id=?", (run_id,)):
        if start and end:
            tasks[task] = (datetime.fromisoformat(start).timestamp(), datetime.fromisoformat(end).timestamp(), duration or 0.0)
    return wall, tasks


def pipeline(results: Results, rows: int, large_rows: int | None, server: SparkConnectServer) -> None:
    """kiln_training by `airflow dags test`: spark-submit per stage vs the stages on ``server`` (already warm, as a
    long-running server is)."""
    section = "pipeline"
    log(f"pipeline: kiln_training on {rows:,} rows with spark-submit per Spark stage (the baseline)")
    submit_wall, submit_tasks = dags_test(rows, "spark://local%5B%2A%5D")
    log("pipeline: the same run with the Spark stages attached to the (warm) Spark Connect server")
    connect_wall, connect_tasks = dags_test(rows, server.url)
    jobs = job_intervals(server)
    results.add(section, f"dags test wall time, {rows:,} rows (the demo's run), over Spark Connect", connect_wall, "s",
                baseline=f"spark-submit per stage {submit_wall:.1f} s (before: 82 s for make demo)", goal=("<=", 35))
    spark_submit = sum(submit_tasks[t][2] for t in SPARK_TASKS)
    spark_connect = sum(connect_tasks[t][2] for t in SPARK_TASKS)
    results.add(section, "the three Spark tasks, summed, over Spark Connect", spark_connect, "s",
                baseline=f"spark-submit {spark_submit:.1f} s (ratio {spark_connect / spark_submit:.2f})")
    for task in SPARK_TASKS:
        start, end, duration = connect_tasks[task]
        in_jobs = covered(jobs, start, end)
        results.add(section, f"{task} task in the DAG run: time outside Spark jobs", duration - in_jobs, "s",
                    baseline=f"task {duration:.1f} s, in Spark jobs {in_jobs:.1f} s; spark-submit task {submit_tasks[task][2]:.1f} s",
                    goal=("<=", 3))
    results.plot("pipeline_tasks", kind="lines", title=f"kiln_training task durations, {rows:,} rows", xlabel="task (run order)",
                 ylabel="seconds", lines={
                     mode: (list(range(len(tasks))), [tasks[t][2] for t in sorted(tasks, key=lambda t: tasks[t][0])])
                     for mode, tasks in (("spark-submit", submit_tasks), ("Spark Connect", connect_tasks))})
    if large_rows:
        log(f"pipeline: {large_rows:,} rows over Spark Connect (wall time vs the sum of its tasks)")
        wall, tasks = dags_test(large_rows, server.url)
        total = sum(d for _, _, d in tasks.values())
        results.add(section, f"run wall time / sum of task times, {large_rows:,} rows", wall / total, "x",
                    baseline=f"wall {wall:.0f} s, tasks {total:.0f} s (before: 1.04x)", goal=("<=", 1.10))


def spark_stages(results: Results, rows: int, work: Path, quick: bool, server: SparkConnectServer) -> None:
    """The three Spark stages alone, by the stage CLI: each starting its own JVM (as a spark-submit does) vs as
    thin clients of one Spark Connect server, and how much of each Connect stage is outside Spark jobs."""
    section = "pipeline"
    data_root = work / "stages"
    stages = {"preprocess": ["preprocess"], "train_spark_lr": ["train-spark", "--model", "lr"],
              "train_spark_gbt": ["train-spark", "--model", "gbt"]}
    if quick:  # the GBT stage costs the most JVM start-up of the three; the full run measures it
        del stages["train_spark_gbt"]

    def cli(args: list[str], run_id: str, env: dict[str, str]) -> tuple[float, float, float]:
        start = time.time()
        subprocess.run([sys.executable, "-m", "ml_tasks", "--log-level", "WARNING", *args, "--data-root", str(data_root),
                        "--ds", DS, "--run-id", run_id], env=env, check=True, capture_output=True)
        return start, time.time(), time.time() - start

    own_jvm = {k: v for k, v in os.environ.items() if k != "SPARK_REMOTE"}
    for run_id in ("own-jvm", "connect-first", "connect"):
        cli(["ingest", "--rows", str(rows)], run_id, own_jvm)
    log(f"pipeline: the Spark stages on {rows:,} rows, each with a JVM of its own (the baseline)")
    baseline = {task: cli(args, "own-jvm", own_jvm)[2] for task, args in stages.items()}
    log("pipeline: the same stages as clients of one Spark Connect server, just started, then once more")
    remote = {**own_jvm, "SPARK_REMOTE": server.url}
    first = {task: cli(args, "connect-first", remote)[2] for task, args in stages.items()}  # the server's JIT warm-up
    timed = {task: cli(args, "connect", remote) for task, args in stages.items()}
    jobs = job_intervals(server)
    total_connect, total_own = sum(t[2] for t in timed.values()), sum(baseline.values())
    results.add(section, f"the {len(stages)} Spark stages, {rows:,} rows, over Spark Connect", total_connect, "s",
                baseline=f"a JVM per stage {total_own:.1f} s (ratio {total_connect / total_own:.2f}); the first stages after "
                         f"the server started: {sum(first.values()):.1f} s")
    for task, (start, end, duration) in timed.items():
        in_jobs = covered(jobs, start, end)
        results.add(section, f"{task}: time outside Spark jobs", duration - in_jobs, "s",
                    baseline=f"stage {duration:.1f} s, in Spark jobs {in_jobs:.1f} s; own JVM {baseline[task]:.1f} s",
                    goal=("<=", 3))


def parse_wrk(text: str) -> dict[str, float]:
    unit = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    out = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))}
    for pct, value, u in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M):
        out[f"p{pct}"] = float(value) * unit[u]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["non_2xx"] = float(errors.group(1)) if errors else 0.0
    return out


def wrk(base: str, script: Path, connections: int, seconds: int, ids_file: Path) -> dict[str, float]:
    out = subprocess.run(["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), base],
                         env={**os.environ, "KILN_IDS": str(ids_file)}, capture_output=True, text=True, check=True)
    figures = parse_wrk(out.stdout)
    answered = re.search(r"KILN_ANSWERED (\d+) CACHED (\d+)", out.stdout)
    if answered:
        figures["answered"], figures["cached"] = float(answered.group(1)), float(answered.group(2))
    return figures


WRK_GET = """
local ids = {}
for line in io.lines(os.getenv("KILN_IDS")) do ids[#ids + 1] = line end
local i = math.random(#ids)
request = function()
  i = i % #ids + 1
  return wrk.format("GET", "/predict/" .. ids[i])
end
"""
# Each id once, one connection: first requests of warmed entities, i.e. misses (scored, then cached). Stops after
# the last id; prints how many answers said "cached" (0 when every request was a miss).
WRK_ONCE = """
local ids = {}
for line in io.lines(os.getenv("KILN_IDS")) do ids[#ids + 1] = line end
local i = 0
answered, cached = 0, 0
local threads = {}
function setup(thread) table.insert(threads, thread) end
request = function()
  i = math.min(i + 1, #ids)
  return wrk.format("GET", "/predict/" .. ids[i])
end
response = function(status, headers, body)
  answered = answered + 1
  if body:find('"cached": true', 1, true) then cached = cached + 1 end
  if answered >= #ids then wrk.thread:stop() end
end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do io.write("KILN_ANSWERED " .. t:get("answered") .. " CACHED " .. t:get("cached") .. "\\n") end
end
"""
WRK_BATCH = """
local ids = {}
for line in io.lines(os.getenv("KILN_IDS")) do ids[#ids + 1] = '"' .. line .. '"' end
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local batch = {}
  for k = 1, 100 do i = i % #ids + 1; batch[k] = ids[i] end
  return wrk.format(nil, "/predict", nil, '{"entity_ids": [' .. table.concat(batch, ",") .. ']}')
end
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


FRESH_IDS = 2_000  # warmed entities first requested by the sequential miss run


def serving(results: Results, entities: int, load_seconds: int, soak_seconds: int, work: Path) -> None:
    section = "serving"
    log(f"serving: train, register and warm a champion; {entities:,} entities")
    # The champion is trained over a Spark Connect server that is gone before anything is measured: an idle JVM on
    # the same 2 cores is noise in a millisecond tail.
    with connect_server(work / "spark-connect-serving") as spark_server:
        os.environ["SPARK_REMOTE"] = spark_server.url  # the champion's training, without a JVM in this process
        try:
            data_root, warmed = bench_ignite.prepare_champion(work / "serving", entities + FRESH_IDS)
        finally:
            release_spark_session()  # while the server is still there to release it
            os.environ.pop("SPARK_REMOTE")
    with bench_ignite.running_service(data_root) as (base, server):
        ids, fresh = warmed[:entities], warmed[entities:entities + FRESH_IDS]  # fresh: never requested, for misses
        python_client = bench_ignite.sequential_latency(base, ids)  # also caches the predictions of ``ids``
        (py_miss, py_hit) = python_client.values()
        ids_file, fresh_file = work / "ids.txt", work / "fresh_ids.txt"
        ids_file.write_text("\n".join(ids) + "\n")
        fresh_file.write_text("\n".join(fresh) + "\n")
        get_script, once_script, batch_script = work / "get.lua", work / "once.lua", work / "batch.lua"
        get_script.write_text(WRK_GET)
        once_script.write_text(WRK_ONCE)
        batch_script.write_text(WRK_BATCH)
        results.plot("latency_histogram", kind="hist", title="Sequential request latency, Python client (ms)", xlabel="ms",
                     ylabel="requests", values={"hit": [min(v, 10) for v in py_hit], "miss": [min(v, 20) for v in py_miss]})
        log(f"serving: wrk, cache hits, 1 to 32 connections, {load_seconds} s each")
        curve = {}
        for connections in (1, 8, 32):
            curve[connections] = wrk(base, get_script, connections, load_seconds, ids_file)
        at32 = curve[32]
        results.add(section, "32 connections: hits per second", at32["rps"], "req/s",
                    baseline=f"1 connection {curve[1]['rps']:,.0f} req/s, non-2xx {sum(c['non_2xx'] for c in curve.values()):.0f} "
                             "(before: ~600 req/s at 32)", goal=(">=", 3000))
        results.add(section, "32 connections: p99", at32["p99"], "ms", baseline=f"p50 {at32['p50']:.1f} ms (before: p99 250)",
                    goal=("<=", 20))
        # After the loads above, as a service that has run a while: the first seconds after a start are slower (the
        # node's and the interpreter's warm-up; measured: p99 4.3 ms in the first 5 s, 1.0 ms after 15 s).
        log(f"serving: one wrk connection, {len(fresh):,} first requests (misses)")
        # The last id is requested once more before wrk stops: "1 answered from the cache".
        miss = wrk(base, once_script, 1, 15, fresh_file)  # wrk waits out its duration after the script stops
        results.add(section, "sequential cache miss p99 (wrk, one connection)", miss["p99"], "ms",
                    baseline=f"p50 {miss['p50']:.2f} ms over {miss.get('answered', 0):,.0f} first requests "
                             f"({miss.get('cached', 0):,.0f} answered from the cache); httpx, right after start: p50 "
                             f"{np.percentile(py_miss, 50):.2f}, p99 {np.percentile(py_miss, 99):.2f} ms (before: p99 7.63)",
                    goal=("<=", 5))
        log(f"serving: one wrk connection, cache hits for {load_seconds} s")
        hit = wrk(base, get_script, 1, load_seconds, ids_file)
        results.add(section, "sequential cache hit p99 (wrk, one connection)", hit["p99"], "ms",
                    baseline=f"p50 {hit['p50']:.2f} ms; a Python client (httpx), right after start: p50 "
                             f"{np.percentile(py_hit, 50):.2f}, p99 {np.percentile(py_hit, 99):.2f} ms (before: p50 0.87, p99 2.48)",
                    goal=("<=", 1.5))
        results.plot("throughput_vs_concurrency", kind="lines", title="Cache hits: throughput vs connections (wrk)",
                     xlabel="connections", ylabel="requests/s", lines={"hits": (list(curve), [c["rps"] for c in curve.values()])})
        log("serving: the same 32 connections against 2 server processes (--workers 2)")
        base2, server2 = bench_ignite.start_service(data_root, workers=2)
        try:
            wrk(base2, get_script, 32, 2, ids_file)  # both processes connect to Ignite and warm up first
            two = wrk(base2, get_script, 32, load_seconds, ids_file)
        finally:
            bench_ignite.stop_service(server2)
        results.add(section, "32 connections, 2 server processes: hits per second", two["rps"], "req/s",
                    baseline=f"1 process {at32['rps']:,.0f} req/s; p99 {two['p99']:.1f} ms, non-2xx {two['non_2xx']:.0f}",
                    goal=(">=", 3000))
        batch = wrk(base, batch_script, 1, load_seconds, ids_file)
        results.add(section, "batch of 100 ids, one connection: p99", batch["p99"], "ms",
                    baseline=f"p50 {batch['p50']:.1f} ms, {batch['rps'] * 100:,.0f} ids/s", goal=("<=", 10))
        log(f"serving: {soak_seconds} s under 32 connections, resident memory of the service")
        before = rss_mb(server.pid)
        soak = wrk(base, get_script, 32, soak_seconds, ids_file)
        after = rss_mb(server.pid)
        results.add(section, f"RSS growth over {soak_seconds} s at 32 connections", (after - before) / before * 100, "%",
                    baseline=f"{before:.0f} MB -> {after:.0f} MB, {soak['rps']:,.0f} req/s, non-2xx {soak['non_2xx']:.0f}",
                    goal=("<=", 10))


def warming(results: Results, sizes: list[int], work: Path) -> None:
    section = "warm"
    curve: dict[str, tuple[list[int], list[float]]] = {"Kiln warm": ([], []), "Java IgniteDataStreamer": ([], [])}
    peaks: dict[int, float] = {}
    for rows in sizes:
        log(f"warm: {rows:,} entries, Kiln vs Ignite's Java streamer, same node")
        rates = bench_ignite.warm_rates(work / f"warm-{rows}", rows, naive_rows=2_000)
        peaks[rows] = rates["warm peak RSS MB"]
        ours, java = rates["Kiln batched put_all (warm)"], rates["Ignite IgniteDataStreamer (Java)"]
        for name, rate in (("Kiln warm", ours), ("Java IgniteDataStreamer", java)):
            curve[name][0].append(rows)
            curve[name][1].append(rate)
        results.add(section, f"Kiln warm / Java streamer, {rows:,} entries", ours / java, "x",
                    baseline=f"Kiln {ours:,.0f}/s ({rates['Kiln warm, one connection']:,.0f}/s over one connection), "
                             f"streamer {java:,.0f}/s, naive put {rates['naive per-key put']:,.0f}/s "
                             "(before: 0.57x at 300k, 0.30x at 1M; previous round 0.22x at 1M)",
                    goal=(">=", 0.8) if rows >= 1_000_000 else None)
    first, last = sizes[0], sizes[-1]
    if len(sizes) > 1:
        results.add(section, f"warm process peak RSS, {last:,} / {first:,} entries", peaks[last] / peaks[first], "x",
                    baseline=f"{peaks[first]:,.0f} MB at {first:,}, {peaks[last]:,.0f} MB at {last:,} "
                             f"({last // first}x the entries)", goal=("<=", 1.5))
    results.plot("warm_rate_vs_size", kind="lines", title="Warm rate vs entries", xlabel="entries", ylabel="entries/s",
                 lines=curve, logx=True)


PARSE = """
import sys, time
t0 = time.perf_counter()
import airflow.sdk  # noqa
t1 = time.perf_counter()
import runpy
namespace = runpy.run_path(sys.argv[1])
t2 = time.perf_counter()
heavy = [m for m in ("pyspark", "mxnet", "singa", "pandas", "pyarrow", "numpy", "pyignite", "kubernetes", "sklearn") if m in sys.modules]
# What the DAG processor does next with each DAG of the file, on every parse: serialize it (dags test: twice).
from airflow.serialization.serialized_objects import DagSerialization
dags = list({value.dag_id: value for value in namespace.values() if isinstance(value, airflow.sdk.DAG)}.values())
def serialize():
    start = time.perf_counter()
    for dag in dags:
        DagSerialization.to_dict(dag)
    return time.perf_counter() - start
serialize()  # Airflow's own first-call caches
kiln = serialize()
# The same DAGs with the fields' schemas in jsonschema's default dialect (the schemas are shared by every task's copy).
for dag in dags:
    for task in [dag, *dag.tasks]:
        for name in task.params:
            task.params.get_param(name).schema.pop("$schema", None)
default = serialize()
print(f"{t1 - t0} {t2 - t1} {','.join(heavy) or '-'} {kiln} {default} {len(dags)}")
"""


def parse_time(results: Results, repeats: int) -> None:
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", PARSE, str(ROOT / "dags" / "kiln_datasets.py")], capture_output=True, text=True,
                             check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "plugins")})
        airflow_s, dag_s, heavy, kiln_s, default_s, dags = out.stdout.split()
        runs.append((float(airflow_s), float(dag_s), heavy.replace("-", ""), float(kiln_s), float(default_s), int(dags)))
    dag = statistics.median(r[1] for r in runs)
    results.add("parse", "dags/kiln_datasets.py beyond `import airflow.sdk` (median)", dag, "s",
                baseline=f"import airflow.sdk {statistics.median(r[0] for r in runs):.2f} s; {runs[0][5]} DAGs; "
                         f"heavy imports: {runs[0][2] or 'none'} (before: 0.31-0.41 s)", goal=("<=", 0.2))
    kiln, default = statistics.median(r[3] for r in runs), statistics.median(r[4] for r in runs)
    results.add("parse", "serializing the file's DAGs (the DAG processor, after each parse; median)", kiln, "s",
                baseline=f"fields in jsonschema's default dialect {default:.2f} s ({kiln / default:.2f}x)")


def release_spark_session() -> None:
    if "pyspark.sql" in sys.modules:
        from pyspark.sql import SparkSession

        session = SparkSession.getActiveSession()
        if session is not None:
            session.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes and shorter loads, under 5 minutes")
    parser.add_argument("--only", nargs="*", choices=["pipeline", "serving", "warm", "parse", "streaming"])
    args = parser.parse_args()
    sections = args.only or ["parse", "pipeline", "serving", "warm", "streaming"]
    results = Results(ROOT / "bench" / "results" / ("quick" if args.quick else "full"), quick=args.quick)
    work = Path(tempfile.mkdtemp(prefix="kiln-bench-"))
    work.chmod(0o755)
    print(f"Kiln benchmarks ({'quick' if args.quick else 'full'}): {', '.join(sections)}; scratch {work}", flush=True)
    if "parse" in sections:
        parse_time(results, repeats=3 if args.quick else 7)
    if "pipeline" in sections:
        with connect_server(work / "spark-connect") as server:
            spark_stages(results, rows=20_000, work=work, quick=args.quick, server=server)
            if not args.quick:
                pipeline(results, rows=20_000, large_rows=1_000_000, server=server)
    if "serving" in sections or "warm" in sections:
        bench_ignite.node("up", work / "node")
        try:
            if "serving" in sections:
                serving(results, entities=1_000 if args.quick else 10_000, load_seconds=4 if args.quick else 15,
                        soak_seconds=10 if args.quick else 300, work=work)
            if "warm" in sections:
                warming(results, [50_000, 200_000] if args.quick else [100_000, 300_000, 1_000_000], work)
        finally:
            bench_ignite.node("down", work / "node")
    if "streaming" in sections:
        from bench.bench_streaming import streaming

        streaming(results, args.quick, work / "streaming")
    results.finish()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
