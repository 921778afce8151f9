"""The streaming figures of `make bench`: freshness (event produced -> servable from Ignite) at a sustained rate,
the highest sustained rate vs the batch warm path over the same events, and the driver's memory over a long run.

Real parts only: a Kafka broker (scripts/kafka.sh, its own port), the bench's Ignite node, the stream stage in
continuous mode (its supervisor and Spark driver as subprocesses, as Airflow or a container runs them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import bench_ignite  # noqa: E402
from bench.results import Results  # noqa: E402
from ml_tasks.features.streaming import LATENCY_BUCKET_MS, batch_figures, quantile  # noqa: E402
from tests.kafka_broker import KafkaBroker  # noqa: E402

KAFKA_PORT = 9392
DATASET = "bench_stream"
ENTITIES = 100_000


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def spec(work: Path, dataset: str = DATASET):
    """The transactions spec under the bench's own name: its topics, alias and checkpoint are the bench's."""
    from ml_tasks.core.spec import load_spec

    folder = work / "specs"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "datasets" / "transactions.yaml", folder / f"{dataset}.yaml")
    return load_spec(folder / f"{dataset}.yaml")


def env(work: Path) -> dict[str, str]:
    return {**os.environ, "KILN_DATASETS_DIR": str(work / "specs"), "KILN_KAFKA_BOOTSTRAP": f"127.0.0.1:{KAFKA_PORT}",
            "KILN_IGNITE_HOST": f"127.0.0.1:{bench_ignite.PORT}", "KILN_DATA_ROOT": str(work / "data")}


@contextlib.contextmanager
def continuous_stream(work: Path, max_events: int, trigger: float = 0.1, dataset: str = DATASET) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen([sys.executable, "-m", "ml_tasks", "stream", "--dataset", dataset, "--stream-mode", "continuous",
                             "--stream-trigger-seconds", str(trigger), "--stream-max-events-per-batch", str(max_events)],
                            env=env(work), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=(work / "stream.log").open("a"),
                            start_new_session=True)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def driver_processes(supervisor: subprocess.Popen) -> list[psutil.Process]:
    """The Spark driver: its Python process and the JVM under it. Taken once, so a short-lived child the JVM forks
    (Hadoop's shell calls; a forked child shows its parent's pages as its own RSS until it execs) is not counted."""
    return [p for p in psutil.Process(supervisor.pid).children(recursive=True)
            if p.name().startswith(("python", "java")) and time.time() - p.create_time() > 5]


def driver_rss_mb(processes: list[psutil.Process]) -> float:
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += process.memory_info().rss
    return total / 2**20


def applied(client, count: int, timeout: float, work: Path, dataset: str = DATASET) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        figures = batch_figures(client, f"kiln_features_{dataset}")
        if sum(f["events"] for f in figures) >= count:
            return figures
        time.sleep(2)  # reading every batch's figures costs the driver's machine CPU too
    raise RuntimeError(f"the stream did not apply {count} events in {timeout:.0f}s; see {work / 'stream.log'}")


def produce(work: Path, rate: float, seconds: float, start: int, dataset: str = DATASET) -> dict:
    from ml_tasks.features.events import produce_events

    s = spec(work, dataset)
    return produce_events(s, f"127.0.0.1:{KAFKA_PORT}", s.topic("events"), rate=rate, seconds=seconds, entities=ENTITIES,
                          late_share=0.05, malformed_share=0.01, start=start)


def streaming(results: Results, quick: bool, work: Path) -> None:
    section = "streaming"
    broker = KafkaBroker(work / "kafka", port=KAFKA_PORT)
    broker.start()
    bench_ignite.node("up", work / "node")
    try:
        client = bench_ignite.client()
        warm_live_version(work, client)
        with continuous_stream(work, max_events=200_000) as stream:
            # Warm-up, not measured: the driver's first batches compile their code paths (the first takes ~10 s, the
            # next ones several times their steady duration for a minute).
            sent = produce(work, 2_000, 30 if quick else 90, 0)["produced"]
            applied(client, sent, 300, work)
            for rate, seconds in ((2_000, 15 if quick else 60), (10_000, 15 if quick else 60)):
                log(f"streaming: {rate:,} events/s for {seconds} s")
                before = len(batch_figures(client, f"kiln_features_{DATASET}"))
                out = produce(work, rate, seconds, sent)
                produced_until = time.time()
                sent += out["produced"]
                figures = applied(client, sent, 300, work)[before:]
                lag = figures[-1]["applied_ms"] / 1000 - produced_until
                hist: dict[str, int] = {}
                for f in figures:
                    for bucket, n in f["latency_ms"].items():
                        hist[bucket] = hist.get(bucket, 0) + n
                p50, p99 = quantile(hist, 0.5), quantile(hist, 0.99)
                results.add(section, f"freshness at {rate:,} events/s: p99", p99 / 1000, "s",
                            baseline=f"p50 {p50 / 1000:.2f} s; produced {out['events_per_s']:,}/s for {out['seconds']:.0f} s "
                                     f"in {len(figures)} batches; last batch {lag:+.1f} s after the producer stopped",
                            goal=("<=", 2.0) if rate == 2_000 else None)
                results.plot(f"freshness_{rate}", kind="hist", title=f"Produced -> servable at {rate:,} events/s (ms)",
                             xlabel="ms", ylabel="events",
                             values={"events": [int(b) + LATENCY_BUCKET_MS / 2 for b, n in hist.items() for _ in range(min(n, 50_000))]})
            if not quick:  # a leak shows over minutes, not in the quick run's budget (5 minutes for every section)
                memory(results, work, client, stream, sent, minutes=10)
        throughput(results, work, client, backlog=30_000 if quick else 300_000)
    finally:
        bench_ignite.node("down", work / "node")
        broker.stop()


def warm_live_version(work: Path, client) -> None:
    """A warmed live version of every entity, as the daily batch leaves it: the stream then writes what serving reads
    (the stream table and the live version), as in production."""
    from datetime import date, timedelta

    from ml_tasks.features.feature_cache import warm
    from ml_tasks.features.online_features import latest_features
    from ml_tasks.ingestion.synthetic import generate_chunk
    from tests.ml_tasks.test_streaming import raw_partition

    s = spec(work)
    yesterday = (date.today() - timedelta(days=1)).isoformat()  # older than every event: each one is written
    rows = generate_chunk(yesterday, 0, ENTITIES, ENTITIES, 7).to_pylist()
    latest_features(raw_partition(s, rows, work / "warm" / "raw"), work / "warm" / "online.parquet")
    out = warm(client, f"kiln_features_{DATASET}", work / "warm" / "online.parquet", key=s.key, version_prefix="0-")
    log(f"streaming: warmed {out['entries']:,} entities into {out['version']}")


def memory(results: Results, work: Path, client, stream: subprocess.Popen, sent: int, minutes: int) -> None:
    """The warm driver's RSS (Python + JVM), sampled every 10 s over ``minutes`` at 2,000 events/s."""
    import threading

    log(f"streaming: driver memory over {minutes} min at 2,000 events/s")
    samples: list[tuple[float, float]] = []
    began = time.monotonic()
    stop = threading.Event()
    driver = driver_processes(stream)

    def sample() -> None:
        while not stop.wait(10):
            samples.append(((time.monotonic() - began) / 60, driver_rss_mb(driver)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = produce(work, 2_000, minutes * 60, sent)
    applied(client, sent + out["produced"], 300, work)
    stop.set()
    sampler.join()
    first, peak = samples[0][1], max(mb for _, mb in samples)
    results.add("streaming", f"driver RSS growth, {minutes} min at 2,000 events/s", (peak - first) / first * 100, "%",
                baseline=f"{first:.0f} MB at the start -> peak {peak:.0f} MB ({len(samples)} samples, a warmed driver)",
                goal=("<=", 10))
    results.plot("stream_driver_rss", kind="lines", title="Streaming driver RSS (Python + JVM)", xlabel="minutes",
                 ylabel="MB", lines={"driver": ([t for t, _ in samples], [mb for _, mb in samples])})


def throughput(results: Results, work: Path, client, backlog: int) -> None:
    """A backlog drained by the stream vs the same events through the batch path (online-features + warm)."""
    from ml_tasks.features.feature_cache import warm
    from ml_tasks.features.online_features import latest_features

    log(f"streaming: throughput, a backlog of {backlog:,} events: stream vs batch warm")
    dataset = f"{DATASET}_backlog"  # its own topic, alias and checkpoint: only this backlog
    s = spec(work, dataset)
    out = produce(work, rate=backlog / 5, seconds=5, start=0, dataset=dataset)  # exactly ``backlog`` events
    with continuous_stream(work, max_events=100_000, dataset=dataset):
        began = time.monotonic()
        figures = applied(client, backlog, 900, work, dataset)
        first = min(f["applied_ms"] - f["seconds"] * 1000 for f in figures) / 1000
        stream_s = max(f["applied_ms"] for f in figures) / 1000 - first
        startup_s = time.monotonic() - began - stream_s
    rate = backlog / stream_s
    # The batch path over the same events: read them back, a raw partition, newest per entity, warm.
    from tests.ml_tasks.test_streaming import raw_partition, read_topic, valid_events

    rows = valid_events(s, [v for _, v in read_topic(f"127.0.0.1:{KAFKA_PORT}", s.topic("events"))])
    began = time.monotonic()
    latest_features(raw_partition(s, rows, work / "batch" / "raw"), work / "batch" / "online.parquet")
    warm(client, "bench_stream_batch", work / "batch" / "online.parquet", key=s.key, connect=bench_ignite.connect)
    batch_s = time.monotonic() - began
    results.add("streaming", f"sustained stream rate draining {backlog:,} events", rate, "events/s",
                baseline=f"batch path (parquet, newest per entity, warm) over the same events {backlog / batch_s:,.0f} events/s "
                         f"= {rate / (backlog / batch_s):.2f}x; the stream's start-up {startup_s:.0f} s not counted; "
                         f"producer {out['events_per_s']:,}/s")

