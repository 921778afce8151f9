"""Ignite warm rate and serving latency on one real node started for the run (used by bench/run.py).

Warm rate (entries/s): Kiln's batched path (``feature_cache.warm``: put_all batches, verify, switch)
vs a naive per-key ``put`` loop vs Ignite's own Java ``IgniteDataStreamer`` (bench/java), same node,
same key/value pairs. The naive loop is timed on the first naive_rows entries (its per-entry cost
is flat; a 1 M-row naive load would take minutes). Serving: a champion trained, registered and warmed in
the run, served by `python -m ml_tasks serve` processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml_tasks.core.layout import Layout  # noqa: E402
from ml_tasks.features import ignite_fast  # noqa: E402,F401
from ml_tasks.features.feature_cache import WarmOptions, iter_source, warm  # noqa: E402
from tests.ports import free_port  # noqa: E402

PORT, DISCOVERY, COMMUNICATION = 11000, 47700, 47400
JAVA = ROOT / "bench" / "java"
LIBS = ROOT / ".ignite" / "libs"


def node(action: str, state: Path) -> None:
    env = {**os.environ, "KILN_IGNITE_DIR": str(state), "KILN_IGNITE_PORT": str(PORT),
           "KILN_IGNITE_DISCOVERY_PORT": str(DISCOVERY), "KILN_IGNITE_COMMUNICATION_PORT": str(COMMUNICATION)}
    subprocess.run([str(ROOT / "scripts" / "ignite.sh"), action], env=env, check=True, capture_output=True)


def client():
    from pyignite import Client

    c = Client(timeout=30)
    c.connect("127.0.0.1", PORT)
    return c


def connect() -> contextlib.AbstractContextManager:
    """One more connection for a warm's parallel loaders, as the Ignite hook opens them."""
    return contextlib.closing(client())


def feature_table(path: Path, rows: int) -> None:
    """``rows`` distinct entities with the online feature columns (from the synthetic generator)."""
    from ml_tasks.ingestion.synthetic import generate_chunk

    table = generate_chunk("2026-01-01", 0, rows, entity_pool=rows).to_pandas()
    table["entity_id"] = [f"card_{i:08d}" for i in range(rows)]
    table["event_ts"] = table["event_ts"].astype("int64") // 1000
    table.drop(columns=["label"]).to_parquet(path, index=False)


def warm_rates(work: Path, rows: int, naive_rows: int) -> dict[str, float]:
    work.mkdir(parents=True, exist_ok=True)
    source = work / "features.parquet"
    feature_table(source, rows)
    c = client()
    # What the warm operator does (WarmOptions' batch size, parallel loaders), in a process of its own for its peak
    # memory.
    out = subprocess.run([sys.executable, __file__, "warm", str(source), "bench_batched"], check=True,
                         capture_output=True, text=True, timeout=600)
    batched = json.loads(out.stdout.strip().splitlines()[-1])
    rates = {"Kiln batched put_all (warm)": batched["entries_per_s"], "warm peak RSS MB": batched["peak_rss_mb"]}
    single = warm(c, "bench_single", source, options=WarmOptions(retain=1, loaders=1), progress=lambda _: None)
    rates["Kiln warm, one connection"] = single["entries_per_s"]
    c.get_cache(single["cache"]).destroy()

    pairs = [kv for batch in iter_source(source, "entity_id", 10_000) for kv in batch.items()]
    naive = c.get_or_create_cache("bench_naive")
    start = time.perf_counter()
    for key, value in pairs[:naive_rows]:
        naive.put(key, value)
    rates["naive per-key put"] = naive_rows / (time.perf_counter() - start)
    naive.destroy()

    tsv = work / "pairs.tsv"
    tsv.write_text("".join(f"{k}\t{v}\n" for k, v in pairs))
    subprocess.run(["javac", "-d", str(work), "-cp", f"{LIBS}/*", str(JAVA / "StreamerBench.java")], check=True)
    opts = [ln.strip() for ln in (ROOT / "ignite" / "jvm.options").read_text().splitlines() if ln.startswith("--add-opens")]
    out = subprocess.run(["java", *opts, "-DIGNITE_QUIET=true", "-cp", f"{work}:{LIBS}/*", "StreamerBench", str(tsv),
                          str(DISCOVERY), "bench_streamer"], capture_output=True, text=True, timeout=600)
    match = re.search(r"STREAMER_RATE (\d+)", out.stdout)
    if not match:
        raise RuntimeError(f"streamer failed: {out.stdout[-2000:]} {out.stderr[-2000:]}")
    rates["Ignite IgniteDataStreamer (Java)"] = float(match.group(1))
    return rates


def prepare_champion(work: Path, entities_wanted: int) -> tuple[Path, list[str]]:
    """Train, register and warm a champion on this run's node; its data root and every warmed entity id (at least
    ``entities_wanted``). Spark runs over ``SPARK_REMOTE`` when set (a Spark Connect server), else in this process."""
    import pandas as pd

    from ml_tasks.core.spec import load_named
    from ml_tasks.evaluation.evaluate import Thresholds, evaluate
    from ml_tasks.evaluation.registry import register
    from ml_tasks.features.online_features import latest_features
    from ml_tasks.features.preprocess import preprocess
    from ml_tasks.ingestion.ingest import ingest
    from ml_tasks.trainer import train_candidate
    from ml_tasks.training.candidates import BUILTIN_TRAINERS

    spec = load_named("transactions")  # the service serves every spec; the bench's data root has this one's model
    lay = Layout(work / "data", spec.name, "2026-01-01")
    ingest(spec, lay.ds, lay.raw_dir, rows=max(5 * entities_wanted, 20_000))  # about one entity per 4 rows
    preprocess(lay.raw_dir, lay.features, lay.transform)
    train_candidate(BUILTIN_TRAINERS["spark_gbt"], {"lr_reg": 0.01, "gbt_max_iter": 20, "gbt_max_depth": 4},
                    task="binary", features=lay.features, candidate=lay.candidate("spark_gbt"), checkpoint_dir=lay.checkpoint_dir("spark"))
    evaluate("binary", lay.candidates_root, lay.evaluation, Thresholds(min_auc=0.5, max_log_loss=5, max_calibration_error=1))
    register(lay.evaluation, lay.registry_root, spec.registry_name, lay.ds, lay.transform_dir)
    online = latest_features(lay.raw_dir, lay.online_features)
    warm(client(), spec.feature_cache, lay.online_features, version_prefix=lay.ds + "-", progress=lambda _: None,
         connect=connect)
    entities = pd.read_parquet(online["online_features"], columns=["entity_id"]).entity_id.tolist()
    if len(entities) < entities_wanted:
        raise RuntimeError(f"{len(entities):,} entities warmed, the bench wants {entities_wanted:,}")
    return lay.data_root, entities


@contextlib.contextmanager
def running_service(data_root: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """The prediction service (its own process) over ``data_root``: its base URL and process."""
    base, server = start_service(data_root)
    try:
        yield base, server
    finally:
        stop_service(server)


def start_service(data_root: Path, workers: int = 1) -> tuple[str, subprocess.Popen]:
    """``python -m ml_tasks serve`` on a free port with ``workers`` processes; returns once /healthz answers 200."""
    import httpx

    port = free_port()
    env = {**os.environ, "KILN_DATA_ROOT": str(data_root), "KILN_IGNITE_PORT": str(PORT), "KILN_PREDICTION_TTL": "3600"}
    server = subprocess.Popen([sys.executable, "-m", "ml_tasks", "serve", "--port", str(port), "--data-root", str(data_root),
                               "--workers", str(workers)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(base + "/healthz").status_code == 200:
                return base, server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_service(server)
    raise RuntimeError("the prediction service did not become healthy within 60 s")


def stop_service(server: subprocess.Popen) -> None:
    server.terminate()
    server.wait(timeout=20)


def sequential_latency(base: str, entities: list[str]) -> dict[str, list[float]]:
    """Each entity requested twice in turn, one request at a time: first a miss (scored), then a hit (cached)."""
    import httpx

    timings: dict[str, list[float]] = {"miss (first request per entity)": [], "hit (prediction cached)": []}
    with httpx.Client(base_url=base) as http:
        for label in timings:
            for entity in entities:
                start = time.perf_counter()
                resp = http.get(f"/predict/{entity}")
                timings[label].append((time.perf_counter() - start) * 1000)
                assert resp.status_code == 200 and resp.json()["cached"] == label.startswith("hit"), resp.text
    return timings


def warm_in_this_process(source: Path, name: str) -> None:
    """Warm ``source`` into this run's node as the operator does; print the result and this process's peak RSS."""
    result = warm(client(), name, source, options=WarmOptions(retain=1), progress=lambda _: None, connect=connect)
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over exec, so it would report the parent bench's size.
    peak_kb = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                   if line.startswith("VmHWM:"))
    print(json.dumps({**result, "peak_rss_mb": peak_kb / 1024}))


if __name__ == "__main__" and sys.argv[1:2] == ["warm"]:
    warm_in_this_process(Path(sys.argv[2]), sys.argv[3])
