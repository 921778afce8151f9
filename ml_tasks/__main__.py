"""The stage CLI: ``python -m ml_tasks STAGE [--dataset NAME] --ds YYYY-MM-DD [options]``.

Airflow runs these commands as local subprocesses or Kubernetes pods; people run them by hand. The
stages and their options are defined once in ``ml_tasks.core.stages`` (settings in ``ml_tasks.core.run_settings``).
An option left out takes the dataset spec's default, else the global one. Each stage prints its result
as JSON on the last line and, with ``--result-file``, writes it there (the small manifest Airflow turns
into XCom). Exit codes: 0 done, 2 bad input (message on stderr), 99 skipped in this environment.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ml_tasks.core.atomic import write_json
from ml_tasks.core.cli_types import DATASET, DS
from ml_tasks.core.errors import BAD_INPUT_EXIT_CODE, SKIP_EXIT_CODE, KilnError, StageSkipped
from ml_tasks.core.layout import Layout, default_data_root
from ml_tasks.core.run_settings import SETTINGS, resolve, spec_settings
from ml_tasks.core.spec import BUILTIN_DATASET, DatasetSpec, load_named
from ml_tasks.core.stages import STAGES, Run, Stage


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ml_tasks", description=__doc__.split("\n")[0])
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="stage", required=True)
    for stage in STAGES.values():
        p = sub.add_parser(stage.name, help=stage.help, description=stage.help)
        p.set_defaults(stage_def=stage)
        p.add_argument("--data-root", default=str(default_data_root()), help="root of the datasets' data and registry/")
        if stage.dataset:
            p.add_argument("--dataset", default=BUILTIN_DATASET, type=DATASET, help="dataset spec name (datasets/<name>.yaml)")
        if stage.partition:
            p.add_argument("--ds", required=True, type=DS, help="partition date YYYY-MM-DD")
            p.add_argument("--run-id", default="manual", help="the run whose intermediates these are (Airflow's run_id)")
        for name in stage.settings:
            setting = SETTINGS[name]
            p.add_argument(setting.flag, dest=f"setting_{name}", metavar=name.upper(),
                           help=f"{setting.description} (default: the spec's, else {setting.default!r})")
        for flags, kwargs in stage.options:
            p.add_argument(*flags, **kwargs)
        p.add_argument("--result-file", help="also write the JSON result here (atomically)")
    return parser


def stage_run(args: argparse.Namespace) -> Run:
    """The spec (the run's snapshot once ingest wrote it), the settings and the layout a stage works with."""
    stage: Stage = args.stage_def
    if not stage.dataset:
        return Run(args, None, {}, None)
    lay = Layout.at(args.data_root, args.dataset, args.ds, args.run_id) if stage.partition else None
    if lay is not None and stage.name != "ingest" and lay.spec_snapshot.exists():
        spec = DatasetSpec.model_validate_json(lay.spec_snapshot.read_text())
        if spec.name != args.dataset or spec.registry_name != load_named(args.dataset).registry_name:
            # the run folder is writable by the run's own (trainer) code: its snapshot may not name another model
            raise KilnError(f"{lay.spec_snapshot} is the spec of dataset {spec.name!r} (model {spec.registry_name!r}), "
                            f"not of this run's dataset {args.dataset!r}; rerun the run from ingest")
    else:
        spec = load_named(args.dataset)
    if lay is not None:
        spec.check_partition(lay.ds)  # whoever chose the date: a partition the spec allows
    given = {name: SETTINGS[name].from_cli(getattr(args, f"setting_{name}")) for name in stage.settings
             if getattr(args, f"setting_{name}") is not None}
    given.update(candidate_params(spec, args))
    settings = resolve(spec, given, where="option")
    if lay is not None and stage.name == "ingest":
        write_json(lay.spec_snapshot, json.loads(spec.model_dump_json()))
    return Run(args, spec, settings, lay)


def candidate_params(spec: DatasetSpec, args: argparse.Namespace) -> dict[str, Any]:
    """``train``'s ``--param SETTING=VALUE`` options: only the settings the chosen candidate takes."""
    if not getattr(args, "param", None):
        return {}
    ref = spec.trainer_refs.get(args.candidate)
    takes = ref.settings if ref else ()
    known = spec_settings(spec)
    given = {}
    for item in args.param:
        name, sep, text = item.partition("=")
        if not sep or name not in takes:
            raise KilnError(f"option --param {item!r}: candidate {args.candidate!r} takes "
                            f"{', '.join(f'{t}=VALUE' for t in takes) or 'no settings'}")
        given[name] = known[name].from_cli(text)
    return given


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        result = args.stage_def.run(stage_run(args))
    except StageSkipped as exc:
        print(f"SKIPPED: {exc}", file=sys.stderr)
        return SKIP_EXIT_CODE
    except (KilnError, ValueError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return BAD_INPUT_EXIT_CODE
    if result is None:  # the stage printed its own output (a spec, a server's log)
        return 0
    if getattr(args, "result_file", None):
        write_json(Path(args.result_file), result)
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
