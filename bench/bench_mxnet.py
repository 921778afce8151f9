"""MLP training throughput: MXNet in one process vs kvstore dist_sync with 1 and 2 workers, and the
same MLP on Apache Singa in one process; same data, same settings, one run.

Prints samples/s (for dist: summed over workers), the ratio to MXNet's single process measured in this
same run, the time from process launch to the first trained batch (start-up cost: interpreter,
framework import, and for dist the scheduler/server handshake), and the held-out AUC.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_features  # noqa: E402
from ml_tasks.core.layout import Layout  # noqa: E402
from ml_tasks.training.mxnet_cluster import run_cluster  # noqa: E402


def worker_cmd(layout: Layout, candidate: str, epochs: int, result: Path, kvstore: str | None) -> list[str]:
    """``train-mxnet`` on ``kvstore``, or ``train-singa`` when ``kvstore`` is None."""
    stage = ["train-mxnet", "--kvstore", kvstore] if kvstore else ["train-singa"]
    return [sys.executable, "-m", "ml_tasks", *stage, "--data-root", str(layout.data_root), "--ds", layout.ds,
            "--candidate", candidate, "--mlp-epochs", str(epochs), "--mlp-batch-size", "256", "--result-file", str(result)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    layout = Layout(Path(tempfile.mkdtemp(prefix="kiln-bench-mx-")), "transactions", "2026-01-01")
    write_features(layout, args.rows)
    results = {}

    result = layout.run_dir / "single.json"
    launched = time.time()
    subprocess.run(worker_cmd(layout, "single", args.epochs, result, "local"), check=True, capture_output=True)
    out = json.loads(result.read_text())
    results["single process"] = (out["samples_per_s"], out["first_batch_unix"] - launched, out["test_auc"])

    for workers in (1, 2):
        result = layout.run_dir / f"dist{workers}.json"
        launched = time.time()
        run_cluster(worker_cmd(layout, f"dist{workers}", args.epochs, result, "dist_sync"), 1, workers, log=lambda _: None)
        out = json.loads(result.read_text())  # rank 0's; every worker trains an equal shard at the same pace
        results[f"dist_sync, {workers} worker{'s' if workers > 1 else ''}"] = (
            out["samples_per_s"] * workers, out["first_batch_unix"] - launched, out["test_auc"])

    result = layout.run_dir / "singa.json"
    launched = time.time()
    subprocess.run(worker_cmd(layout, "singa", args.epochs, result, None), check=True, capture_output=True)
    out = json.loads(result.read_text())
    results["Singa, single process"] = (out["samples_per_s"], out["first_batch_unix"] - launched, out["test_auc"])

    base = results["single process"][0]
    print(f"\nMLP, {args.rows} rows x {args.epochs} epochs, batch 256 per worker, 1 server (machine: 2 cores)")
    print(f"{'configuration':<24}{'samples/s':>12}{'vs single':>11}{'first batch after':>19}{'AUC':>8}")
    for name, (rate, first, auc) in results.items():
        print(f"{name:<24}{rate:>12,.0f}{rate / base:>10.2f}x{first:>17.2f} s{auc:>8.4f}")


if __name__ == "__main__":
    main()
