"""Every run setting, once: its JSON-schema type and bounds, default, description and the tasks it applies to.

The stage CLI's options, the DAGs' trigger forms and the command lines the operators run are all
generated from ``SETTINGS`` (see ``ml_tasks.core.stages``); a dataset spec may change a default within the
bounds, never the bounds themselves (except where a bound follows from the data, e.g. ``pca_k``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import jsonschema

from ml_tasks.core.errors import KilnError
from ml_tasks.training.candidates import BUILTIN_CANDIDATES, SEARCHABLE

if TYPE_CHECKING:
    from ml_tasks.core.spec import DatasetSpec

# Airflow's execution_timeout for every task: the backstop behind the form's stage_timeout_minutes.
TASK_TIMEOUT = timedelta(hours=24)
BINARY, REGRESSION = "binary", "regression"
TASKS = (BINARY, REGRESSION)
CANDIDATES = {BINARY: BUILTIN_CANDIDATES, REGRESSION: BUILTIN_CANDIDATES}
# Candidates a search may tune: all but the distributed MXNet run (a cluster per trial; tune mxnet_mlp, the same net).
# Where a search samples each setting it tunes, [low, high]: a dataset spec may narrow or widen these within the
# setting's own bounds (settings.search_space), and add its own trainers' numeric parameters.
DEFAULT_SEARCH_SPACE = {"lr_reg": [0.0001, 1.0], "gbt_max_iter": [5, 60], "gbt_max_depth": [2, 7],
                        "mlp_learning_rate": [0.001, 0.05], "mlp_hidden": [16, 128], "mlp_dropout": [0.0, 0.4]}
# A streaming micro-batch with more malformed events than this share raises an alert: the default of a spec's
# stream.alert_dead_letter_share (not a run setting: the spec's stream section sets it).
ALERT_DEAD_LETTER_SHARE = 0.2


@dataclass(frozen=True)
class Setting:
    """One run setting. ``schema`` is JSON Schema (what Airflow's ``Param`` and the CLI both check)."""

    name: str
    schema: dict[str, Any]
    default: Any
    description: str
    tasks: tuple[str, ...] = TASKS
    sources: tuple[str, ...] | None = None  # the source kinds it applies to (None: all)
    # Bounds that follow from the dataset (e.g. at most as many PCA components as numeric features).
    spec_schema: Callable[[DatasetSpec], dict[str, Any]] | None = field(default=None, repr=False)
    # A default that follows from the dataset, when its spec does not set one.
    spec_default: Callable[[DatasetSpec], Any] | None = field(default=None, repr=False)
    pipeline: str = "training"  # whose form shows it: the training DAG's or the streaming DAG's
    # A blessing threshold a spec may bound (its ``floors``): the JSON-schema keyword the spec's floor becomes, "minimum"
    # for a threshold whose lower values bless more (min_auc, promote_margin), "maximum" for a max_* one.
    floor: str | None = None

    def default_for(self, spec: DatasetSpec) -> Any:
        if self.name in spec.settings:
            return spec.settings[self.name]
        default = self.spec_default(spec) if self.spec_default is not None else self.default
        if self.floor and self.name in spec.floors and not _within(default, self.floor, spec.floors[self.name]):
            return spec.floors[self.name]  # a floor stricter than Kiln's default is the dataset's default
        return default

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def schema_for(self, spec: DatasetSpec | None) -> dict[str, Any]:
        schema = dict(self.schema)
        if spec is not None and self.spec_schema is not None:
            schema.update(self.spec_schema(spec))
        if spec is not None and self.floor and self.name in spec.floors:
            # The spec's floor replaces the setting's own bound on that side: the form and every stage refuse a value
            # past it; a nullable max_* threshold (empty: no bound) must then be a number.
            schema[self.floor] = spec.floors[self.name]
            schema.pop("exclusiveMinimum" if self.floor == "minimum" else "exclusiveMaximum", None)
            if isinstance(schema["type"], list):
                schema["type"] = next(t for t in schema["type"] if t != "null")
        return schema

    def check(self, value: Any, spec: DatasetSpec | None = None, where: str = "setting") -> Any:
        try:
            jsonschema.validate(value, self.schema_for(spec))
        except jsonschema.ValidationError as exc:
            raise KilnError(f"{where} {self.name!r}: {exc.message}") from None
        return value

    def to_cli(self, value: Any) -> str:
        if isinstance(value, dict):
            return json.dumps(value, sort_keys=True)
        return ",".join(value) if isinstance(value, list) else str(value)

    def from_cli(self, text: str) -> Any:
        """Parse a command-line value to the setting's JSON type (bounds are checked separately)."""
        kind = self.schema["type"]
        kind = next(k for k in kind if k != "null") if isinstance(kind, list) else kind
        if text == "" and "null" in (self.schema["type"] if isinstance(self.schema["type"], list) else []):
            return None
        try:
            if kind == "integer":
                return int(text)
            if kind == "number":
                return float(text)
            if kind == "boolean":
                return {"true": True, "false": False}[text.lower()]
            if kind == "array":
                return [v for v in text.split(",") if v]
            if kind == "object":
                return json.loads(text)
        except (ValueError, KeyError):
            raise KilnError(f"option {self.flag}: {text!r} is not a valid {kind}") from None
        return text


def _s(name: str, schema: dict[str, Any], default: Any, description: str, **kw: Any) -> Setting:
    return Setting(name, schema, default, description, **kw)


def _within(value: Any, floor: str, bound: float) -> bool:
    """Whether ``value`` is at least as strict as ``bound`` (a spec's floor; ``floor`` says which side)."""
    if value is None:  # a max_* threshold left empty: no bound at all
        return False
    return value >= bound if floor == "minimum" else value <= bound


_SETTINGS = [
    # ingest
    _s("rows", {"type": "integer", "minimum": 1000, "maximum": 10_000_000}, 20_000,
       "Rows the synthetic generator writes for the partition.", sources=("synthetic",)),
    _s("input_path", {"type": ["null", "string"]}, None,
       "Read this CSV/Parquet file, folder or glob instead of the dataset's own source (same columns). Empty: the spec's source.",
       sources=("file", "postgres")),
    # validate
    _s("min_rows", {"type": "integer", "minimum": 1, "maximum": 1_000_000_000}, 100,
       "Validation: fewest rows a partition may have."),
    _s("max_null_ratio", {"type": "number", "minimum": 0, "maximum": 1}, 0.2,
       "Validation: largest share of missing values allowed in any feature column."),
    _s("max_psi", {"type": "number", "minimum": 0, "maximum": 10}, 0.25,
       "Validation: largest population-stability index of a feature against the previous day's partition."),
    _s("min_positive_rate", {"type": "number", "minimum": 0, "maximum": 1}, 0.01,
       "Validation: smallest share of positive labels.", tasks=(BINARY,)),
    _s("max_positive_rate", {"type": "number", "minimum": 0, "maximum": 1}, 0.99,
       "Validation: largest share of positive labels.", tasks=(BINARY,)),
    # preprocess
    _s("pca_k", {"type": "integer", "minimum": 0, "maximum": 64}, 3,
       "Principal components (Spark's RowMatrix) appended to the features; 0 turns PCA off.",
       spec_schema=lambda spec: {"maximum": min(64, len(spec.features.numeric))},
       spec_default=lambda spec: min(3, len(spec.features.numeric))),
    _s("test_fraction", {"type": "number", "minimum": 0.05, "maximum": 0.5}, 0.2,
       "Share of entities held out for evaluation (split by a stable hash of the key column)."),
    # Spark MLlib
    _s("lr_reg", {"type": "number", "minimum": 0, "maximum": 10}, 0.01,
       "L2 regularisation of the Spark linear model (logistic regression, or linear regression)."),
    _s("gbt_max_iter", {"type": "integer", "minimum": 1, "maximum": 200}, 20,
       "Boosting rounds of the Spark gradient-boosted trees."),
    _s("gbt_max_depth", {"type": "integer", "minimum": 1, "maximum": 10}, 4,
       "Depth of each boosted tree."),
    # the MLP (MXNet, single process and dist_sync; Singa)
    _s("mlp_epochs", {"type": "integer", "minimum": 1, "maximum": 500}, 4,
       "Epochs of the MLP (MXNet single-process and distributed, Singa)."),
    _s("mlp_hidden", {"type": "integer", "minimum": 4, "maximum": 1024}, 64, "Width of each hidden layer of the MLP."),
    _s("mlp_layers", {"type": "integer", "minimum": 1, "maximum": 6}, 2, "Hidden layers of the MLP."),
    _s("mlp_learning_rate", {"type": "number", "exclusiveMinimum": 0, "maximum": 1}, 0.01, "Adam learning rate of the MLP."),
    _s("mlp_batch_size", {"type": "integer", "minimum": 8, "maximum": 65536}, 256, "Mini-batch size of the MLP."),
    _s("mlp_dropout", {"type": "number", "minimum": 0, "maximum": 0.9}, 0.1, "Dropout after each hidden layer of the MLP."),
    _s("mlp_seed", {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}, 7, "Random seed of the MLP (initialisation, shuffling, dropout)."),
    _s("mxnet_workers", {"type": "integer", "minimum": 1, "maximum": 8}, 2, "Workers of the distributed MXNet run (kvstore dist_sync)."),
    _s("mxnet_servers", {"type": "integer", "minimum": 1, "maximum": 4}, 1, "Parameter servers of the distributed MXNet run."),
    # evaluate: which candidates, and the blessing thresholds of each task
    _s("candidates", {"type": "array", "items": {"type": "string", "enum": list(CANDIDATES[BINARY])}, "minItems": 1,
                      "uniqueItems": True}, list(CANDIDATES[BINARY]),
       "Models to train and compare: Spark MLlib linear model and gradient-boosted trees, the MXNet MLP in one process and "
       "on a dist_sync cluster, the Apache Singa MLP, and the dataset spec's own trainers.",
       spec_schema=lambda spec: {"items": {"type": "string", "enum": [*CANDIDATES[spec.task], *spec.trainers]}},
       spec_default=lambda spec: [*CANDIDATES[spec.task], *spec.trainers]),
    _s("min_auc", {"type": "number", "minimum": 0.5, "maximum": 1}, 0.65,
       "Blessing: smallest held-out ROC AUC.", tasks=(BINARY,), floor="minimum"),
    _s("max_log_loss", {"type": "number", "exclusiveMinimum": 0, "maximum": 10}, 0.69,
       "Blessing: largest held-out log loss.", tasks=(BINARY,), floor="maximum"),
    _s("max_calibration_error", {"type": "number", "minimum": 0, "maximum": 1}, 0.1,
       "Blessing: largest expected calibration error (10 bins).", tasks=(BINARY,), floor="maximum"),
    _s("min_r2", {"type": "number", "minimum": -1000, "maximum": 1}, 0.0,
       "Blessing: smallest held-out R2 (0: no better than predicting the mean).", tasks=(REGRESSION,), floor="minimum"),
    _s("max_rmse", {"type": ["null", "number"], "exclusiveMinimum": 0}, None,
       "Blessing: largest held-out RMSE, in the label's unit. Empty: no bound.", tasks=(REGRESSION,), floor="maximum"),
    _s("max_mae", {"type": ["null", "number"], "exclusiveMinimum": 0}, None,
       "Blessing: largest held-out mean absolute error, in the label's unit. Empty: no bound.", tasks=(REGRESSION,),
       floor="maximum"),
    # register (into the spec's model_name alone: a run never names the model it registers into)
    _s("promote_margin", {"type": "number", "minimum": 0, "maximum": 1_000_000}, 0.0,
       "Registry: how much the blessed model must improve the primary metric over the champion to replace it "
       "(in the metric's unit).", floor="minimum"),
    # hyper-parameter search (mapped trials) and human approval
    _s("search_candidates", {"type": "array", "items": {"type": "string", "enum": list(SEARCHABLE)}, "uniqueItems": True},
       [], "Search: candidates whose hyper-parameters are tuned before they train (empty: none). Each trial trains on "
           "80% of the training rows and is scored on the other 20% (never the held-out test rows); the best trial's "
           "settings train the candidate.",
       spec_schema=lambda spec: {"items": {"type": "string", "enum": searchable(spec)}}),
    _s("search_trials", {"type": "integer", "minimum": 1, "maximum": 64}, 6,
       "Search: trials per searched candidate (random search: trial i's settings depend only on the seed and i)."),
    _s("search_seed", {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}, 0,
       "Search: seed of the sampled settings; the same seed, data and space give the same trials and winner."),
    _s("search_space", {"type": "object", "additionalProperties": {
        "type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}}, DEFAULT_SEARCH_SPACE,
       "Search: [low, high] per setting a trial samples (a candidate tunes the ones it takes; log-uniform where "
       "high/low >= 100). Default: the dataset spec's, else Kiln's."),
    _s("require_approval", {"type": "boolean"}, False,
       "Promotion waits for a person to approve it (Airflow's required actions), shown the metrics against the "
       "champion; reject or timeout keeps the version registered but not promoted. Always on when the dataset's "
       "spec requires approval.",
       spec_schema=lambda spec: {"enum": [True]} if spec.approval.required else {},
       spec_default=lambda spec: spec.approval.required),
    _s("approval_timeout_minutes", {"type": "integer", "minimum": 1, "maximum": 10080}, 1440,
       "Minutes an approval may wait before it counts as a rejection."),
    # the run itself
    _s("partition_date", {"type": ["null", "string"], "format": "date"}, None,
       "Partition (YYYY-MM-DD) to build, from the spec's start_date (if any) to tomorrow. Empty: the run's logical "
       "date, or today for a manual run without one."),
    _s("stage_timeout_minutes", {"type": "integer", "minimum": 1, "maximum": 1440}, 180,
       "Minutes each stage may run before it is killed with its whole process group and fails."),
    _s("warm_cache", {"type": "boolean"}, True,
       "When the champion changes, load its latest features per entity into Ignite for online predictions."),
    # streaming (the kiln_streaming DAG, `python -m ml_tasks stream`)
    _s("stream_mode", {"type": "string", "enum": ["available_now", "continuous"]}, "available_now",
       "Streaming: available_now processes the events waiting in Kafka and stops (the schedule's runs); continuous "
       "keeps the query running, restarted by its supervisor when the driver dies.", pipeline="streaming"),
    _s("stream_trigger_seconds", {"type": "number", "minimum": 0.1, "maximum": 600}, 1.0,
       "Streaming: seconds between micro-batches in continuous mode (the freshness floor).", pipeline="streaming"),
    _s("stream_max_events_per_batch", {"type": "integer", "minimum": 100, "maximum": 100_000_000}, 500_000,
       "Streaming: most events one micro-batch reads (Kafka maxOffsetsPerTrigger), so a backlog is drained in "
       "bounded steps.", pipeline="streaming"),
    _s("stream_max_restarts", {"type": "integer", "minimum": 0, "maximum": 100}, 3,
       "Streaming, continuous mode: how often the supervisor restarts a driver that died (within 10 minutes) "
       "before the task fails.", pipeline="streaming"),
    _s("stream_run_minutes", {"type": "integer", "minimum": 0, "maximum": 10080}, 0,
       "Streaming, continuous mode: stop cleanly after this many minutes (0: run until the task is stopped).",
       pipeline="streaming"),
]
SETTINGS: dict[str, Setting] = {s.name: s for s in _SETTINGS}


def searchable(spec: DatasetSpec) -> list[str]:
    """The candidates of ``spec`` a search may tune (as each declares: every one but mxnet_dist)."""
    return [name for name, ref in spec.trainer_refs.items() if ref.searchable]


def spec_settings(spec: DatasetSpec) -> dict[str, Setting]:
    """Every setting a dataset can have: the global ones and those its spec's trainers declare."""
    return {**SETTINGS, **spec.trainer_settings}


def applies(name: str, task: str, source: str | None = None) -> bool:
    """Whether setting ``name`` means anything for a dataset of ``task`` read from a ``source`` kind."""
    setting = SETTINGS[name]
    return task in setting.tasks and (source is None or setting.sources is None or source in setting.sources)


def settings_for(task: str, source: str | None = None, names: list[str] | tuple[str, ...] | None = None,
                 pipeline: str | None = "training") -> list[Setting]:
    """The settings of a task and source: ``names``, else those of ``pipeline``'s form (None: every pipeline's)."""
    return [s for s in SETTINGS.values() if applies(s.name, task, source)
            and (s.name in names if names is not None else pipeline is None or s.pipeline == pipeline)]


def resolve(spec: DatasetSpec, given: Mapping[str, Any], where: str = "param") -> dict[str, Any]:
    """The run's settings: ``given`` over the spec's defaults over the global defaults, each checked, and
    the cross-field rules the per-field schema cannot express. Errors name the setting."""
    known = spec_settings(spec)
    values = {s.name: s.default_for(spec) for s in settings_for(spec.task, spec.source.kind, pipeline=None)}
    values.update({name: s.default for name, s in spec.trainer_settings.items()})
    for name, value in given.items():
        if name not in known:
            raise KilnError(f"{where} {name!r} is not a Kiln setting" + (
                f" nor a parameter of dataset {spec.name!r}'s trainers ({', '.join(spec.trainer_settings)})"
                if spec.trainer_settings else ""))
        if name in SETTINGS and not applies(name, spec.task, spec.source.kind):
            raise KilnError(f"{where} {name!r} does not apply to {spec.task} dataset {spec.name!r} "
                            f"(a {spec.source.kind} source)")
        values[name] = value
    for name, value in values.items():
        known[name].check(value, spec, where)
    if spec.task == BINARY and values["min_positive_rate"] > values["max_positive_rate"]:
        raise KilnError(f"{where} 'min_positive_rate' must not exceed 'max_positive_rate'")
    check_search_space(values["search_space"], known, spec, where)
    return values


def check_search_space(space: Mapping[str, list[float]], known: Mapping[str, Setting], spec: DatasetSpec | None,
                       where: str = "param") -> None:
    """Each searched setting is a numeric setting, and its [low, high] lies within the setting's own bounds."""
    for name, (low, high) in space.items():
        setting = known.get(name)
        kind = setting.schema.get("type") if setting else None
        if kind not in ("integer", "number"):
            raise KilnError(f"{where} 'search_space': {name!r} is not a numeric setting"
                            + ("" if setting else " of this dataset"))
        schema = setting.schema_for(spec)
        if not low <= high:
            raise KilnError(f"{where} 'search_space': {name} low {low} is above high {high}")
        for bound in (low, high):
            try:
                setting.check(int(bound) if kind == "integer" else bound, spec, where=f"{where} 'search_space' bound of")
            except KilnError as exc:
                raise KilnError(f"{exc} (the setting's bounds: {schema.get('minimum', schema.get('exclusiveMinimum'))}"
                                f"..{schema.get('maximum')})") from None
