"""The stage CLI: ``python -m ml_tasks STAGE --data-root DIR --ds YYYY-MM-DD [options]``.

Airflow runs these commands as local subprocesses or Kubernetes pods; people run them by hand. Each
stage prints its result as JSON on the last line and, with ``--result-file``, writes it there (the
small manifest Airflow turns into XCom). Exit codes: 0 done, 2 bad input (message on stderr),
99 skipped in this environment (reason on stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ml_tasks.atomic import write_json
from ml_tasks.cli_types import DS, MODEL_NAME, layout
from ml_tasks.errors import SKIP_EXIT_CODE, KilnError, StageSkipped
from ml_tasks.layout import Layout, default_data_root, registry_root


def run_ingest(a: argparse.Namespace) -> dict[str, Any]:
    from ml_tasks.ingest import ingest

    lay = layout(a)
    return ingest(a.ds, lay.raw_dir, source=a.source, rows=a.rows, input_path=a.input_path or None,
                  snapshot_dir=lay.input_dir)


def run_input(lay: Layout) -> Path:
    """The run's snapshot of its raw partition; a clear error when this run never ingested."""
    if not lay.input_dir.exists():
        raise KilnError(f"run {lay.run_id!r} of {lay.ds} has no ingested input at {lay.input_dir}; "
                        "run the ingest stage with the same --run-id first")
    return lay.input_dir


def run_validate(a: argparse.Namespace) -> dict[str, Any]:
    from ml_tasks.validate import Thresholds, validate

    lay = layout(a)
    thresholds = Thresholds(min_rows=a.min_rows, max_null_ratio=a.max_null_ratio, max_psi=a.max_psi)
    return validate(run_input(lay), lay.validation_report, thresholds, lay.previous_raw_dir(), partition=f"ds={lay.ds}")


def run_preprocess(a: argparse.Namespace) -> dict[str, Any]:
    from ml_tasks.preprocess import preprocess

    lay = layout(a)
    return preprocess(run_input(lay), lay.features_dir, lay.transform_dir, pca_k=a.pca_k, test_fraction=a.test_fraction)


def run_train_spark(a: argparse.Namespace) -> dict[str, Any]:
    from ml_tasks.train_spark import train_spark

    lay = layout(a)
    params = {"lr_reg": a.lr_reg, "gbt_max_iter": a.gbt_max_iter, "gbt_max_depth": a.gbt_max_depth}
    return train_spark(a.model, lay.features_dir, lay.candidate_dir(f"spark_{a.model}"), params)


def run_evaluate(a: argparse.Namespace) -> dict[str, Any]:
    from ml_tasks.evaluate import Thresholds, evaluate

    lay = layout(a)
    thresholds = Thresholds(min_auc=a.min_auc, max_log_loss=a.max_log_loss, max_calibration_error=a.max_calibration_error)
    only = [c for c in a.candidates.split(",") if c] if a.candidates else None
    return evaluate(lay.candidates_root, lay.evaluation, thresholds, only)


def run_register(a: argparse.Namespace) -> dict[str, Any]:
    from ml_tasks.registry import register

    lay = layout(a)
    lineage = {"data_partition": str(lay.raw_dir), "dag_run_id": a.run_id, "params": json.loads(a.params_json)}
    online = lay.online_features if lay.online_features.exists() else None
    return register(lay.evaluation, lay.registry_root, a.model_name, a.ds, lay.transform_dir, a.margin, lineage,
                    online_features=online, test_features_dir=lay.features_dir / "test")


def run_rollback(a: argparse.Namespace) -> dict[str, Any]:
    from ml_tasks.registry import rollback

    return rollback(registry_root(a.data_root), a.model_name)


def run_report(a: argparse.Namespace) -> dict[str, Any]:
    from ml_tasks.report import report

    return report(layout(a), a.model_name)


def run_online_features(a: argparse.Namespace) -> dict[str, Any]:
    from ml_tasks.online_features import latest_features

    lay = layout(a)
    return latest_features(run_input(lay), lay.online_features)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ml_tasks", description=__doc__.split("\n")[0])
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="stage", required=True)

    def stage(name: str, func, help_: str, partition: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.set_defaults(func=func)
        p.add_argument("--data-root", default=str(default_data_root()), help="root of raw/, runs/, registry/")
        if partition:
            p.add_argument("--ds", required=True, type=DS, help="partition date YYYY-MM-DD")
            p.add_argument("--run-id", default="manual", help="the run whose intermediates these are (Airflow's run_id)")
        p.add_argument("--result-file", help="also write the JSON result here (atomically)")
        return p

    p = stage("ingest", run_ingest, "write the raw partition")
    p.add_argument("--source", default="synthetic")
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--input-path", help="CSV/Parquet file for source 'file' (empty: none)")
    p = stage("validate", run_validate, "check schema, counts, nulls, label, drift")
    p.add_argument("--min-rows", type=int, default=100)
    p.add_argument("--max-null-ratio", type=float, default=0.2)
    p.add_argument("--max-psi", type=float, default=0.25)
    p = stage("preprocess", run_preprocess, "Spark: impute, encode, scale, PCA, split")
    p.add_argument("--pca-k", type=int, default=3)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p = stage("train-spark", run_train_spark, "Spark MLlib candidate")
    p.add_argument("--model", choices=["lr", "gbt"], required=True)
    p.add_argument("--lr-reg", type=float, default=0.01)
    p.add_argument("--gbt-max-iter", type=int, default=20)
    p.add_argument("--gbt-max-depth", type=int, default=4)
    p = stage("evaluate", run_evaluate, "compare candidates, bless the best")
    p.add_argument("--min-auc", type=float, default=0.65)
    p.add_argument("--max-log-loss", type=float, default=0.69)
    p.add_argument("--max-calibration-error", type=float, default=0.1)
    p.add_argument("--candidates", default="", help="comma-separated candidate names to compare (default: all found)")
    p = stage("register", run_register, "version the best candidate, decide promotion")
    p.add_argument("--model-name", default="transactions", type=MODEL_NAME)
    p.add_argument("--margin", type=float, default=0.0)
    p.add_argument("--params-json", default="{}")
    p = stage("rollback", run_rollback, "retire the champion; the registry re-decides without it", partition=False)
    p.add_argument("--model-name", default="transactions", type=MODEL_NAME)
    stage("online-features", run_online_features, "latest row per entity, the table the Ignite cache serves")
    p = stage("report", run_report, "print a partition's evaluation and the registry state")
    p.add_argument("--model-name", default="transactions", type=MODEL_NAME)

    from ml_tasks import cli_extra

    cli_extra.add_stages(stage)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        result = args.func(args)
    except StageSkipped as exc:
        print(f"SKIPPED: {exc}", file=sys.stderr)
        return SKIP_EXIT_CODE
    except (KilnError, ValueError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "result_file", None):
        write_json(Path(args.result_file), result)
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
