"""Dataset specs: one YAML file per dataset (``datasets/<name>.yaml``) declares where rows come from, the
column roles, the task and the defaults of its run settings. The file name is the dataset's name.

A spec is checked against the ``DatasetSpec`` schema when loaded; an error names the file, the field
and what was expected. ``python -m ml_tasks infer-dataset`` drafts a spec from data.
"""

from __future__ import annotations

import glob
import os
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ml_tasks.core.environment import env_path
from ml_tasks.core.errors import KilnError
from ml_tasks.core.layout import check_ds, check_name
from ml_tasks.core.run_settings import (
    ALERT_DEAD_LETTER_SHARE,
    BINARY,
    SETTINGS,
    Setting,
    applies,
    check_search_space,
)
from ml_tasks.ingestion.schema import DatasetSchema
from ml_tasks.training.candidates import BUILTIN_TASK_IDS, BUILTIN_TRAINERS, TrainerRef, locate

SPEC_SUFFIX = ".yaml"
BUILTIN_DATASET = "transactions"  # the dataset of the kiln_training DAG


class SpecError(KilnError):
    """A dataset spec that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileSource(_Strict):
    """CSV or Parquet: one file, a folder (``ds=YYYY-MM-DD`` sub-folders select a day) or a glob."""

    kind: Literal["file"]
    path: str = Field(description="file, folder or glob; relative paths start at the spec's folder")
    format: Literal["csv", "parquet"] | None = Field(None, description="default: from the file extension")
    date_column: str | None = Field(None, description="rows of the run's day are those whose date is the partition date")


class PostgresSource(_Strict):
    """A PostgreSQL table or query read through an Airflow connection, only the run's day when ``date_column`` is set."""

    kind: Literal["postgres"]
    conn_id: str = "kiln_source"
    table: str | None = Field(None, description="schema.table")
    query: str | None = Field(None, description="a SELECT; used as a sub-query")
    date_column: str | None = None

    @model_validator(mode="after")
    def _table_or_query(self) -> PostgresSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of 'table' or 'query'")
        return self


class SklearnSource(_Strict):
    """A data set shipped inside the scikit-learn wheel (the same rows every day)."""

    kind: Literal["sklearn"]
    dataset: Literal["breast_cancer", "diabetes"]


class SyntheticSource(_Strict):
    """Kiln's deterministic generator of card transactions."""

    kind: Literal["synthetic"]
    generator: Literal["transactions"] = "transactions"


Source = Annotated[FileSource | PostgresSource | SklearnSource | SyntheticSource, Field(discriminator="kind")]
SOURCE_KINDS = ("file", "postgres", "sklearn", "synthetic")


class Features(_Strict):
    numeric: list[str] = []
    categorical: list[str] = []


class Approvers(_Strict):
    """Who may answer a promotion's approval request (anyone else's answer is refused)."""

    users: list[str] = Field([], description="Airflow user ids (the simple auth manager's: user names)")
    roles: list[str] = Field([], description="Airflow roles whose users may answer (the simple auth manager's roles)")

    @model_validator(mode="after")
    def _someone(self) -> Approvers:
        if not self.users and not self.roles:
            raise ValueError("name at least one approver (users or roles)")
        return self


class ApprovalSpec(_Strict):
    """Whether a promotion of this dataset's model waits for a person, and who that may be."""

    required: bool = Field(False, description="every promotion waits for approval; the form cannot turn it off")
    approvers: Approvers | None = Field(None, description="who may answer; default: anyone who may answer in Airflow")


class ParamSpec(_Strict):
    """One hyper-parameter of a trainer: becomes the run setting ``<candidate>_<param>`` (form field, CLI)."""

    type: Literal["integer", "number", "boolean", "string"]
    default: Any
    description: str = ""
    minimum: int | float | None = None
    maximum: int | float | None = None
    enum: list[Any] | None = None

    def schema(self) -> dict[str, Any]:
        bounds = {"minimum": self.minimum, "maximum": self.maximum, "enum": self.enum}
        return {"type": self.type, **{k: v for k, v in bounds.items() if v is not None}}


class TrainerSpec(_Strict):
    """A candidate of the dataset's own: a trainer function and a scorer by import path (``ml_tasks.trainer``)."""

    entry: str = Field(description="module:function that trains, e.g. my_models.wide:train")
    scorer: str | None = Field(None, description="module:function that loads the model for serving; default: load in the entry's module")
    description: str = ""
    params: dict[str, ParamSpec] = {}
    seed: int = Field(7, ge=0, le=2**31 - 1, description="default of the run setting <candidate>_seed")
    resources: Literal["small", "medium", "large", "gpu"] = "medium"

    @property
    def scorer_path(self) -> str:
        return self.scorer or f"{self.entry.partition(':')[0]}:load"


class StreamSpec(_Strict):
    """Events of this dataset arrive through Kafka too: the streaming DAG keeps its online features fresh."""

    topic: str | None = Field(None, description="the events' topic; default kiln.<dataset>.events")
    dead_letter_topic: str | None = Field(None, description="malformed events with the reason; default kiln.<dataset>.dead-letters")
    alerts_topic: str | None = Field(None, description="the stream's alerts (e.g. a dead-letter spike); default kiln.<dataset>.alerts")
    schedule: str | None = Field("*/5 * * * *", description="when the available_now runs of the streaming DAG start")
    alert_dead_letter_share: float = Field(ALERT_DEAD_LETTER_SHARE, ge=0, le=1, description="a batch with more malformed events than this share raises an alert")


class EventLimits(_Strict):
    """What one event may carry, whether it comes as a Kafka message or as a row of the day's source: the stream
    dead-letters what breaks a limit and ingest sets it aside, each with the reason (docs/streaming.md)."""

    max_future_seconds: int = Field(300, ge=0, le=7 * 86_400, description=(
        "an event time more than this after the event was received (a message: the broker's timestamp; a source "
        "row: the end of its day) is refused"))
    max_key_length: int = Field(256, ge=1, le=65_536, description="characters of the entity id")
    max_text_length: int = Field(1_024, ge=1, le=1_048_576, description="characters of a categorical value")
    max_message_bytes: int = Field(65_536, ge=1_024, le=8_388_608, description="bytes of one Kafka message")


class DatasetSpec(_Strict):
    name: str
    description: str = ""
    task: Literal["binary", "regression"]
    source: Source
    key: str = Field(description="the entity id: split, online features and predictions are per key")
    label: str
    timestamp: str | None = Field(None, description="event time; the online features keep each key's latest row")
    features: Features
    ignore: list[str] = Field([], description="columns of the source that are not used")
    schedule: str | None = "@daily"
    model_name: str | None = Field(None, description="registry name; default: the dataset's name (no other spec's)")
    floors: dict[str, float] = Field({}, description="the least strict value a run may give a blessing threshold or "
                                     "promote_margin: a minimum for min_* and promote_margin, a maximum for max_*")
    input_roots: list[str] | None = Field(None, description="folders a run's input_path may read from (relative: the "
                                          "spec's folder); default: a file source's own folder, none for PostgreSQL")
    start_date: date | None = Field(None, description="the earliest partition a run may build")
    approval: ApprovalSpec = Field(ApprovalSpec(), description="whether promotions wait for a person, and who")
    settings: dict[str, Any] = Field({}, description="defaults of the run settings (ml_tasks/core/run_settings.py)")
    trainers: dict[str, TrainerSpec] = Field({}, description="candidates of this dataset's own, beside the built-in ones")
    stream: StreamSpec | None = Field(None, description="events through Kafka keep the online features fresh (needs timestamp)")
    limits: EventLimits = Field(EventLimits(), description="what one event or source row may carry")
    python_path: list[str] = Field(["."], description="folders the trainers' modules are imported from (relative: the spec's folder)")
    folder: Path = Field(Path("."), exclude=True, description="the spec file's folder (relative paths start there)")

    @field_validator("name", "model_name")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        return value if value is None else check_name("name", value)

    @model_validator(mode="before")
    @classmethod
    def _absolute_python_path(cls, raw: Any) -> Any:
        """Relative folders start at the spec's folder; a run's snapshot keeps them absolute."""
        if isinstance(raw, dict) and "folder" in raw:
            folder = Path(raw["folder"])
            raw = {**raw, "python_path": [str((folder / os.path.expanduser(p)).resolve())
                                          for p in raw.get("python_path", ["."])]}
        return raw

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        self._check_trainers()
        self._check_trust()
        roles = self.columns + tuple(self.ignore)
        repeated = sorted({c for c in roles if roles.count(c) > 1})
        if repeated:
            raise ValueError(f"columns with more than one role: {', '.join(repeated)}")
        if not self.features.numeric and not self.features.categorical:
            raise ValueError("declare at least one feature (features.numeric or features.categorical)")
        if self.stream is not None and self.timestamp is None:
            raise ValueError("stream: needs 'timestamp' (the event time decides which event is an entity's newest)")
        for name, value in self.settings.items():
            if name not in SETTINGS:
                raise ValueError(f"settings.{name}: not a Kiln setting (see ml_tasks/core/run_settings.py)")
            if not applies(name, self.task, self.source.kind):
                raise ValueError(f"settings.{name}: does not apply to a {self.task} task with a {self.source.kind} source")
            try:
                SETTINGS[name].check(value, self, where="settings")
                if name == "search_space":
                    check_search_space(value, {**SETTINGS, **self.trainer_settings}, self, where="settings")
            except KilnError as exc:
                raise ValueError(str(exc)) from None  # pydantic reports ValueErrors with the file
        return self

    def _check_trust(self) -> None:
        """Floors are blessing thresholds' bounds within the thresholds' own; input roots need an input_path."""
        for name, value in self.floors.items():
            if name not in SETTINGS or SETTINGS[name].floor is None:
                raise ValueError(f"floors.{name}: not a threshold a floor can bound (those are: "
                                 f"{', '.join(n for n, s in SETTINGS.items() if s.floor)})")
            if not applies(name, self.task):
                raise ValueError(f"floors.{name}: does not apply to a {self.task} task")
            try:
                SETTINGS[name].check(value, where="floors")
            except KilnError as exc:
                raise ValueError(str(exc)) from None
        if self.input_roots is not None and not applies("input_path", self.task, self.source.kind):
            raise ValueError(f"input_roots: a {self.source.kind} source takes no input_path")

    def allowed_input_roots(self) -> list[Path]:
        """The folders (symbolic links resolved) a run's ``input_path`` may read from."""
        if self.input_roots is not None:
            return [(self.folder / os.path.expanduser(r)).resolve() for r in self.input_roots]
        if not isinstance(self.source, FileSource):
            return []
        parts = Path(self.source_path()).parts
        fixed = Path(*parts[:next((i for i, p in enumerate(parts) if any(c in p for c in "*?[")), len(parts))])
        return [(fixed if fixed.is_dir() or fixed != Path(*parts) else fixed.parent).resolve()]

    def check_input_path(self, path: str) -> None:
        """Refuse a run's ``input_path`` unless it and every file under it lie in one of ``allowed_input_roots``,
        with ``~``, ``..`` and symbolic links resolved: a link planted under a root must not lead out."""
        roots = self.allowed_input_roots()

        def inside(name: str) -> bool:
            real = Path(os.path.realpath(os.path.expanduser(name)))
            return any(real.is_relative_to(root) for root in roots)

        if not roots:
            raise KilnError(f"input_path {path!r} refused: the dataset's spec allows no input_path (declare input_roots)")
        allowed = ", ".join(str(r) for r in roots)
        if not inside(path):
            raise KilnError(f"input_path {path!r} refused: not under the spec's input_roots ({allowed})")
        expanded = os.path.expanduser(path)
        if any(ch in expanded for ch in "*?["):
            files = glob.glob(expanded, recursive=True)
        elif os.path.isdir(expanded):
            files = [str(f) for f in Path(expanded).rglob("*")]  # every day's files, a superset of what ingest reads
        else:
            files = [expanded]
        outside = [f for f in files if not inside(f)]
        if outside:
            raise KilnError(f"input_path {path!r} refused: {outside[0]} leads out of the spec's input_roots ({allowed})")

    def check_partition(self, ds: str, today: date | None = None) -> str:
        """``ds`` if a run may build it: a real date, not before ``start_date``, at most tomorrow (UTC: a day's run
        may start before that day began somewhere); else raise naming the bound."""
        day = date.fromisoformat(check_ds(ds))
        latest = (today or datetime.now(UTC).date()) + timedelta(days=1)
        if day > latest:
            raise KilnError(f"partition date {ds} is in the future (the latest a run may build is {latest})")
        if self.start_date is not None and day < self.start_date:
            raise KilnError(f"partition date {ds} is before dataset {self.name!r}'s start_date {self.start_date}")
        return ds

    def _check_trainers(self) -> None:
        for name, trainer in self.trainers.items():
            where = f"trainers.{name}"
            try:
                check_name("candidate", name)
            except ValueError as exc:
                raise ValueError(f"field '{where}': {exc}") from None
            if name in BUILTIN_TRAINERS or f"train_{name}" in BUILTIN_TASK_IDS:
                raise ValueError(f"field '{where}': {name!r} is taken by a built-in candidate; give yours another name")
            for param, declared in trainer.params.items():
                setting = f"{name}_{param}"
                if not param.isidentifier() or param != param.lower() or setting in SETTINGS:
                    raise ValueError(f"field '{where}.params.{param}': use a lower-case identifier whose setting "
                                     f"{setting!r} is not a Kiln setting")
                try:
                    Setting(setting, declared.schema(), declared.default, "").check(declared.default, where="default")
                except KilnError as exc:
                    raise ValueError(f"field '{where}.params.{param}': {exc}") from None
            for field_name, path in (("entry", trainer.entry), ("scorer", trainer.scorer_path)):
                try:
                    locate(path, self.python_path)
                except KilnError as exc:
                    raise ValueError(f"field '{where}.{field_name}': {exc}") from None

    @cached_property
    def trainer_settings(self) -> dict[str, Setting]:
        """The run settings of this spec's trainers: ``<candidate>_<param>`` and ``<candidate>_seed``."""
        out: dict[str, Setting] = {}
        for name, trainer in self.trainers.items():
            for param, declared in trainer.params.items():
                out[f"{name}_{param}"] = Setting(f"{name}_{param}", declared.schema(), declared.default,
                                                 f"{name}: {declared.description or param}", tasks=(self.task,))
            out[f"{name}_seed"] = Setting(f"{name}_seed", {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
                                          trainer.seed, f"{name}: random seed of the trainer", tasks=(self.task,))
        return out

    @cached_property
    def trainer_refs(self) -> dict[str, TrainerRef]:
        """Every candidate this dataset can train: the built-in ones and its own, the same way."""
        own = {name: TrainerRef(name, t.entry, t.scorer_path, params={f"{name}_{p}": p for p in t.params},
                                seed=f"{name}_seed", default_seed=t.seed, python_path=tuple(self.python_path),
                                resources=t.resources, stage_options=("--candidate", name))
               for name, t in self.trainers.items()}
        return {**BUILTIN_TRAINERS, **own}

    @property
    def columns(self) -> tuple[str, ...]:
        return self.schema.columns

    @cached_property
    def schema(self) -> DatasetSchema:
        return DatasetSchema(name=self.name, task=self.task, key=self.key, label=self.label,
                             numeric=tuple(self.features.numeric), categorical=tuple(self.features.categorical),
                             timestamp=self.timestamp)

    @property
    def registry_name(self) -> str:
        return self.model_name or self.name

    @property
    def feature_cache(self) -> str:
        """The Ignite alias serving reads this dataset's online features through."""
        return f"kiln_features_{self.name}"

    def topic(self, kind: Literal["events", "dead-letters", "alerts"]) -> str:
        """A Kafka topic of this dataset's stream: the spec's name for it, else ``kiln.<dataset>.<kind>``."""
        stream = self.stream or StreamSpec()
        given = {"events": stream.topic, "dead-letters": stream.dead_letter_topic, "alerts": stream.alerts_topic}[kind]
        return given or f"kiln.{self.name}.{kind}"

    @property
    def is_binary(self) -> bool:
        return self.task == BINARY

    def default(self, setting: str) -> Any:
        """The run setting's default for this dataset: the spec's, else one that follows from it, else the global one."""
        return SETTINGS[setting].default_for(self)

    def source_path(self) -> str:
        """A file source's path made absolute (relative paths start at the spec's folder)."""
        assert isinstance(self.source, FileSource)
        return str(self.folder / os.path.expanduser(self.source.path))


def specs_dir() -> Path:
    """``KILN_DATASETS_DIR`` if set, else the project's ``datasets/``."""
    return env_path("KILN_DATASETS_DIR").resolve()


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for i, p in enumerate(loc) if not (i == 1 and loc[0] == "source" and p in SOURCE_KINDS)]
    return ".".join(parts)


def parse_spec(text: str, name: str, origin: str, folder: Path) -> DatasetSpec:
    """Check ``text`` (YAML) as the spec of dataset ``name``; errors name ``origin`` and the field."""
    try:
        check_name("dataset name", name)
    except ValueError as exc:
        raise SpecError(f"{origin}: the file name gives the dataset's name: {exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{origin}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{origin}: expected a mapping of fields (task, source, key, label, features, ...)")
    if "name" in raw or "folder" in raw:
        raise SpecError(f"{origin}: field '{'name' if 'name' in raw else 'folder'}': not allowed (the file name is the dataset's name)")
    try:
        return DatasetSpec.model_validate({**raw, "name": name, "folder": folder})
    except ValidationError as exc:
        lines = [(f"field '{_field(e['loc'])}': " if e["loc"] else "") + e["msg"].removeprefix("Value error, ")
                 + (f" (got {e['input']!r})" if e["type"] not in ("missing", "value_error") and not isinstance(e.get("input"), dict) else "")
                 for e in exc.errors()]
        raise SpecError(f"{origin}: " + "; ".join(lines)) from None


def load_spec(path: Path) -> DatasetSpec:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"dataset spec {path} does not exist")
    return parse_spec(path.read_text(), path.name.removesuffix(SPEC_SUFFIX), str(path), path.resolve().parent)


def spec_path(name: str) -> Path:
    return specs_dir() / f"{name}{SPEC_SUFFIX}"


def load_named(name: str) -> DatasetSpec:
    path = spec_path(name)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in specs_dir().glob(f"*{SPEC_SUFFIX}"))) or "none"
        raise SpecError(f"no dataset {name!r}: {path} does not exist (datasets in {specs_dir()}: {known})")
    return load_spec(path)


def discover() -> list[tuple[Path, DatasetSpec | SpecError]]:
    """Every spec file in ``specs_dir()`` with its spec, or the error that makes it unusable (two specs of one model
    are both unusable: neither may register into the other's)."""
    found: list[tuple[Path, DatasetSpec | SpecError]] = []
    for path in sorted(specs_dir().glob(f"*{SPEC_SUFFIX}")):
        try:
            found.append((path, load_spec(path)))
        except SpecError as exc:
            found.append((path, exc))
    owners = model_owners()
    return [(path, _shared_model_error(path, spec.registry_name, owners) or spec)
            if isinstance(spec, DatasetSpec) else (path, spec) for path, spec in found]


def model_owners() -> dict[str, list[Path]]:
    """Each registry model name with the spec files that name it (read from the YAML alone: cheap, and what a
    broken spec claims counts too)."""
    owners: dict[str, list[Path]] = {}
    for path in sorted(specs_dir().glob(f"*{SPEC_SUFFIX}")):
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        model = raw.get("model_name") if isinstance(raw, dict) else None
        owners.setdefault(model if isinstance(model, str) and model else path.name.removesuffix(SPEC_SUFFIX), []).append(path)
    return owners


def _shared_model_error(path: Path, model: str, owners: dict[str, list[Path]]) -> SpecError | None:
    others = [str(p) for p in owners.get(model, []) if p.resolve() != path.resolve()]
    if not others:
        return None
    return SpecError(f"{path}: field 'model_name': model {model!r} is also the model of {', '.join(others)}; "
                     "each dataset registers into a model of its own")


def check_model_owner(spec: DatasetSpec) -> None:
    """Refuse to register ``spec``'s runs when another spec in ``specs_dir()`` names the same model."""
    error = _shared_model_error(spec_path(spec.name), spec.registry_name, model_owners())
    if error is not None:
        raise error


__all__ = ["BUILTIN_DATASET", "DatasetSpec", "SpecError", "discover", "load_named", "load_spec", "specs_dir"]
