"""Hyper-parameter search: trials planned up front, run as Airflow mapped tasks, the best trial's settings train
the candidate.

A search never looks at the held-out test rows: trials fit 80% of the training rows and are scored on the other
20% (split by a stable hash of the entity id), on the task's primary metric, by the same trainer contract the
candidate itself trains through.

Random search, not TPE: the trials of a candidate are planned before any of them runs, so they can fan out in
parallel. TPE learns from finished trials, so in parallel its choices would depend on which trial happened to finish
first, and "same seed, same result" would not hold. Here trial ``i`` draws its settings from a generator seeded by
(seed, candidate, i) alone: the same seed, data and space give the same trials and the same winner, and raising the
trial count keeps the earlier trials (a rerun skips those already recorded). With a handful of trials over one to
three settings, random search is as good as anything (Bergstra and Bengio, JMLR 2012).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from ml_tasks.core.atomic import atomic_dir, read_json, write_json
from ml_tasks.core.errors import KilnError
from ml_tasks.core.layout import PART_FILE, FeatureFiles, Layout
from ml_tasks.core.run_settings import Setting, searchable, spec_settings
from ml_tasks.core.spec import DatasetSpec
from ml_tasks.training.mlp import data_fingerprint

log = logging.getLogger(__name__)
VALIDATION_SHARE = 0.2


def tuned_settings(spec: DatasetSpec, candidate: str, space: Mapping[str, Any]) -> list[str]:
    """The settings of ``candidate`` the space samples (never its seed)."""
    return [name for name in spec.trainer_refs[candidate].params if name in space]


def sample(space: Mapping[str, list[float]], settings: Mapping[str, Setting], names: list[str], seed: int,
           candidate: str, trial: int) -> dict[str, Any]:
    """Trial ``trial``'s values of ``names``: uniform in [low, high], log-uniform where high/low >= 100, integers
    for integer settings. Depends on nothing but the arguments."""
    rng = np.random.default_rng([seed, zlib.crc32(candidate.encode()), trial])
    values: dict[str, Any] = {}
    for name in sorted(names):
        low, high = space[name]
        if settings[name].schema["type"] == "integer":
            values[name] = int(rng.integers(math.ceil(low), math.floor(high) + 1))
        elif low > 0 and high / low >= 100:
            values[name] = float(f"{math.exp(rng.uniform(math.log(low), math.log(high))):.4g}")
        else:
            values[name] = float(f"{rng.uniform(low, high):.4g}")
    return values


def validation_split(features: FeatureFiles, split: FeatureFiles) -> str:
    """Write (once per version of the training rows) the trials' fit and validation rows; returns its fingerprint."""
    import pandas as pd
    import pyarrow.parquet as pq

    source = data_fingerprint(features.train)  # names and sizes: a new preprocessing writes new names
    marker = split.source
    if marker.exists() and read_json(marker).get("train") == source:
        return source
    table = pq.read_table(features.train)
    ids = table.column("entity_id").to_pandas().astype(str).to_numpy(dtype=object)
    validation = (pd.util.hash_array(ids) % 1000) < int(VALIDATION_SHARE * 1000)
    if validation.all() or not validation.any():
        raise KilnError(f"{table.num_rows} training rows are too few to hold out a validation share for a search")
    with atomic_dir(split.dir) as tmp:
        out = FeatureFiles(tmp)
        out.train.mkdir(parents=True)
        out.test.mkdir(parents=True)
        pq.write_table(table.filter(~validation), out.train / PART_FILE)
        pq.write_table(table.filter(validation), out.test / PART_FILE)
        write_json(out.source, {"train": source, "fit_rows": int((~validation).sum()),
                                         "validation_rows": int(validation.sum())})
    return source


def plan_search(spec: DatasetSpec, lay: Layout, settings: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Plan every searched candidate's trials (its ``plan.json``) and return each trial as (candidate, trial key),
    candidate by candidate (empty: no search; the mapped task then has nothing to run)."""
    from ml_tasks.evaluation.evaluate import PRIMARY_METRIC

    chosen = [c for c in settings["search_candidates"] if c in settings["candidates"]]
    known = spec_settings(spec)
    space = settings["search_space"]
    out: list[tuple[str, str]] = []
    source = validation_split(lay.features, lay.search_split) if chosen else None
    for candidate in searchable(spec):
        if candidate not in chosen:
            lay.search_plan(candidate).unlink(missing_ok=True)  # this run's candidate trains on the form's settings
            continue
        ref = spec.trainer_refs[candidate]
        names = tuned_settings(spec, candidate, space)
        if not names:
            raise KilnError(f"search of {candidate}: search_space has none of its settings "
                            f"({', '.join(ref.params)}); add one or leave {candidate} out of search_candidates")
        trials = []
        for i in range(settings["search_trials"]):
            values = {name: settings[name] for name in ref.settings} | sample(space, known, names, settings["search_seed"],
                                                                               candidate, i)
            digest = hashlib.sha256(json.dumps([candidate, values, source], sort_keys=True).encode()).hexdigest()[:10]
            trials.append({"trial": i, "key": f"trial-{i:03d}-{digest}", "settings": values,
                           "tuned": {n: values[n] for n in names}})
        write_json(lay.search_plan(candidate), {
            "candidate": candidate, "metric": PRIMARY_METRIC[spec.task], "tuned": names,
            "space": {n: space[n] for n in names}, "seed": settings["search_seed"], "split": source, "trials": trials})
        out += [(candidate, t["key"]) for t in trials]
        log.info("search of %s: %d trials over %s", candidate, len(trials), ", ".join(names))
    return out


def run_trial(spec: DatasetSpec, lay: Layout, candidate: str, key: str) -> dict[str, Any]:
    """Train one planned trial and record its validation score; a trial recorded already is not trained again.
    A trial whose trainer fails is recorded as failed with the reason: the search and the run go on without it."""
    from ml_tasks.evaluation.evaluate import PRIMARY_METRIC
    from ml_tasks.trainer import TrainerFailed, train_candidate

    plan_file = lay.search_plan(candidate)
    if not plan_file.exists():
        raise KilnError(f"no search planned for {candidate} in run {lay.run_id!r} ({plan_file}); run search-plan first")
    trial = next((t for t in read_json(plan_file)["trials"] if t["key"] == key), None)
    if trial is None:
        raise KilnError(f"trial {key!r} is not in {plan_file}")
    record_file = lay.trial_record(candidate, key)
    if record_file.exists():
        log.info("trial %s of %s already recorded; not trained again", key, candidate)
        return {**read_json(record_file), "reused": True}
    ref = spec.trainer_refs[candidate]
    metric = PRIMARY_METRIC[spec.task]
    log.info("trial %s of %s: %s", key, candidate, trial["tuned"])
    started = time.perf_counter()
    record: dict[str, Any] = {"candidate": candidate, "trial": trial["trial"], "key": key, "tuned": trial["tuned"],
                              "metric": metric}
    try:
        info = train_candidate(ref, trial["settings"], task=spec.task, features=lay.search_split,
                               candidate=lay.trial_model(candidate, key),
                               checkpoint_dir=lay.trial_checkpoint_dir(candidate, key))
        record.update(status="ok", value=info[f"test_{metric}"], history=info.get("history"))
    except TrainerFailed as exc:
        log.warning("trial %s of %s failed: %s", key, candidate, exc)
        record.update(status="failed", value=None, reason=str(exc))
    record["seconds"] = round(time.perf_counter() - started, 2)
    write_json(record_file, record)
    return record


def search_results(lay: Layout, candidate: str) -> dict[str, Any] | None:
    """The candidate's search in this run (None: not searched): its trials as recorded, and the best one."""
    from ml_tasks.evaluation.evaluate import HIGHER_IS_BETTER

    plan_file = lay.search_plan(candidate)
    if not plan_file.exists():
        return None
    plan = read_json(plan_file)
    records = [read_json(lay.trial_record(candidate, t["key"])) for t in plan["trials"]
               if lay.trial_record(candidate, t["key"]).exists()]
    finished = [r for r in records if r["status"] == "ok" and r["value"] is not None and math.isfinite(r["value"])]
    sign = -1.0 if HIGHER_IS_BETTER[plan["metric"]] else 1.0
    best = min(finished, key=lambda r: (sign * r["value"], r["trial"])) if finished else None
    return {**plan, "records": records, "best": best,
            "best_settings": next(t["settings"] for t in plan["trials"] if t["key"] == best["key"]) if best else None}


def best_settings(lay: Layout, candidate: str, settings: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``settings`` with the best trial's values when the candidate was searched, and a summary of the search."""
    found = search_results(lay, candidate)
    if found is None:
        return dict(settings), None
    summary = {"trials": len(found["trials"]), "recorded": len(found["records"]),
               "failed": sum(r["status"] == "failed" for r in found["records"]), "metric": found["metric"]}
    if found["best"] is None:
        log.warning("search of %s: no trial finished; training on the run's own settings", candidate)
        return dict(settings), {**summary, "best": None}
    best = found["best"]
    log.info("search of %s: best trial %s (validation %s %.4f): %s", candidate, best["key"], found["metric"],
             best["value"], best["tuned"])
    return {**settings, **found["best_settings"]}, {**summary, "best": best["key"], "value": best["value"],
                                                    "tuned": best["tuned"]}
