"""Where each stage reads and writes, and the one place where names that become paths are checked.

Per dataset, the raw partition ``<dataset>/raw/ds=<ds>`` is the shared data product; everything a run
derives from it lives under ``<dataset>/runs/ds=<ds>/run=<run key>``, so two runs of the same day (a
trigger racing a backfill) never read or replace each other's intermediates, while a rerun or retry
of one run finds its own. Models live in ``registry/<model name>``. The file names inside a
candidate, a transform and a registered version are known only to ``CandidateFiles``,
``TransformFiles`` and ``VersionFiles``; those inside a raw partition to ``PartitionFiles``, inside a training
checkpoint to ``CheckpointFiles``, inside a registered model to ``ModelFiles``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from ml_tasks.core.environment import env_path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def default_data_root() -> Path:
    """``KILN_DATA_ROOT`` if set, else ``data/`` in the project (git-ignored)."""
    return env_path("KILN_DATA_ROOT").resolve()


_DS = re.compile(r"\d{4}-\d{2}-\d{2}")
# Model, candidate and cache names become folder and cache names: no separators, dots or case games.
_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
_RUN_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_HASHED_RUN_KEY = re.compile(r"-[0-9a-f]{8}(?:[0-9a-f]{8})?$")  # how run_key ends a hashed key (8: before 16)


def check_ds(ds: str) -> str:
    """Return ``ds`` if it is an ISO date written YYYY-MM-DD (``20260301`` would sort wrongly), else raise."""
    try:
        if not isinstance(ds, str) or not _DS.fullmatch(ds):
            raise ValueError
        date.fromisoformat(ds)
    except ValueError:
        raise ValueError(f"partition date {ds!r} is not an ISO date YYYY-MM-DD") from None
    return ds


def check_name(kind: str, value: str) -> str:
    """Return ``value`` if it is a safe name (lower-case letter, then letters, digits, ``_``), else raise naming ``kind``."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(f"{kind} {value!r} is not a valid name: use a lower-case letter, then lower-case letters, "
                         "digits or '_' (at most 63 characters)")
    return value


_TASK_ID = re.compile(r"[A-Za-z0-9_.-]{1,250}")


def check_task_id(task_id: str) -> str:
    """Return ``task_id`` if it can name a file (Airflow's own task id rule), else raise."""
    if not isinstance(task_id, str) or not _TASK_ID.fullmatch(task_id) or task_id.startswith("."):
        raise ValueError(f"task id {task_id!r} cannot name a result file")
    return task_id


def run_key(run_id: str) -> str:
    """A folder name for an Airflow run id: the id itself when safe, else a readable slug plus its hash.

    One run id, one folder, and never another run's: an id is kept as it is only when it is safe and does not
    end like a hashed key (``-`` and 16 hex digits, or the 8 of keys made before), so no id chosen to equal another
    run's slug-plus-hash is kept verbatim; it is hashed itself. Two hashed keys meet only if SHA-256's first 64 bits do (no one can aim a run
    id at a given one, as 32 bits could be)."""
    if not run_id:
        raise ValueError("run id must not be empty")
    slug = _RUN_UNSAFE.sub("_", run_id).strip("._-")[:80]
    if slug == run_id and not _HASHED_RUN_KEY.search(run_id):
        return slug
    return f"{slug or 'run'}-{hashlib.sha256(run_id.encode()).hexdigest()[:16]}"


def registry_root(data_root: str | Path) -> Path:
    return Path(data_root).resolve() / "registry"


@dataclass(frozen=True)
class CandidateFiles:
    """A trained candidate's folder (also ``model/`` inside a registered version)."""

    dir: Path

    @property
    def info(self) -> Path:
        return self.dir / "candidate.json"

    @property
    def predictions(self) -> Path:
        """Held-out rows scored: key, label, prediction; what evaluation compares across frameworks."""
        return self.dir / "predictions.parquet"

    @property
    def metrics(self) -> Path:
        return self.dir / "metrics.json"

    @property
    def portable_model(self) -> Path:
        return self.dir / "portable_model.json"

    @property
    def spark_model(self) -> Path:
        return self.dir / "spark_model"

    @property
    def mxnet_prefix(self) -> Path:
        """``net.export`` writes ``<prefix>-symbol.json`` and ``<prefix>-0000.params``."""
        return self.dir / "model"

    @property
    def mxnet_symbol(self) -> Path:
        return self.dir / "model-symbol.json"

    @property
    def mxnet_params(self) -> Path:
        return self.dir / "model-0000.params"

    @property
    def mlp_output(self) -> Path:
        """How an exported MLP's raw output becomes a prediction (``ml_tasks.serving.portable.apply_output``)."""
        return self.dir / "mlp_output.json"

    @property
    def singa_states(self) -> Path:
        """Singa's trained weights by layer name (``np.load`` -> ``net.set_states``)."""
        return self.dir / "singa_states.npz"


PART_FILE = "part-00000.parquet"  # the one data file Kiln writes into a Parquet folder of its own


@dataclass(frozen=True)
class PartitionFiles:
    """A raw partition (``raw/ds=<ds>``, and a run's ``input`` snapshot of it). Names starting with ``_`` keep
    Arrow and Spark from reading them as data."""

    dir: Path

    @property
    def data(self) -> Path:
        return self.dir / PART_FILE

    @property
    def schema(self) -> Path:
        """The contract the data was written under (``DatasetSchema``)."""
        return self.dir / "_schema.json"

    @property
    def request(self) -> Path:
        """What the partition was ingested from: the same request again keeps it as it is."""
        return self.dir / "_ingest.json"

    @property
    def rejected(self) -> Path:
        """Rows that break the spec's limits, with the reason (not part of the data)."""
        return self.dir / "_rejected.parquet"


@dataclass(frozen=True)
class FeatureFiles:
    """Preprocessed features: ``train`` and ``test`` Parquet folders (entity_id, label, features)."""

    dir: Path

    @property
    def train(self) -> Path:
        return self.dir / "train"

    @property
    def test(self) -> Path:
        return self.dir / "test"

    @property
    def source(self) -> Path:
        """A search split's record of the training rows it was cut from (and how many rows each side has)."""
        return self.dir / "source.json"


@dataclass(frozen=True)
class EpochFiles:
    """One rank's checkpoint of one epoch; ``done`` is written last, after the framework's own files."""

    dir: Path

    @property
    def done(self) -> Path:
        return self.dir / "done.json"

    @property
    def mxnet_params(self) -> Path:
        return self.dir / "model.params"

    @property
    def mxnet_trainer_states(self) -> Path:
        return self.dir / "trainer.states"

    @property
    def singa_states(self) -> Path:
        return self.dir / "states.npz"


@dataclass(frozen=True)
class CheckpointFiles:
    """A candidate's training checkpoints: per-epoch, per-rank weights, each rank's training curve, and a
    distributed run's role pids and each worker's final digest."""

    dir: Path

    def epoch(self, epoch: int, rank: int) -> EpochFiles:
        return EpochFiles(self.dir / f"epoch-{epoch:04d}" / f"rank-{rank}")

    def epochs(self) -> dict[int, Path]:
        """Every epoch folder there is, by epoch number."""
        return {int(p.name.removeprefix("epoch-")): p for p in self.dir.glob("epoch-[0-9]*")}

    def history(self, rank: int) -> Path:
        return self.dir / f"history-rank-{rank}.json"

    @property
    def pids(self) -> Path:
        """The roles of a distributed run, recorded so a retry can stop what a killed try left running."""
        return self.dir / "pids.json"

    def final_rank(self, rank: int) -> Path:
        """A worker's parameters' digest at the end: every worker of a ``dist_sync`` run must agree."""
        return self.dir / f"final-rank-{rank}.json"


@dataclass(frozen=True)
class TransformFiles:
    """The fitted feature transform: Spark's pipeline and its portable numpy export."""

    dir: Path

    @property
    def portable(self) -> Path:
        return self.dir / "portable_transform.json"

    @property
    def spark_pipeline(self) -> Path:
        return self.dir / "spark_pipeline"


@dataclass(frozen=True)
class VersionFiles:
    """One registration of a model version: written once, never changed."""

    dir: Path

    @property
    def model(self) -> CandidateFiles:
        return CandidateFiles(self.dir / "model")

    @property
    def transform(self) -> TransformFiles:
        return TransformFiles(self.dir / "transform")

    @property
    def online_features(self) -> Path:
        return self.dir / "online_features.parquet"

    @property
    def metrics(self) -> Path:
        return self.dir / "metrics.json"

    @property
    def lineage(self) -> Path:
        return self.dir / "lineage.json"


@dataclass(frozen=True)
class ModelFiles:
    """A registered model: its state (versions, champion, history) and every registration's folder."""

    dir: Path

    @property
    def state(self) -> Path:
        return self.dir / "registry.json"

    def version(self, ds: str, registration: str) -> VersionFiles:
        return VersionFiles(self.dir / "versions" / ds / registration)

    def registrations(self) -> list[Path]:
        """Every registration folder there is, whether or not the state names it."""
        return sorted(self.dir.glob("versions/*/r*"))

    def recorded(self, path: str) -> Path:
        """A registration folder as the state records it: relative to this model's folder, so the registry reads
        the same wherever its volume is mounted (serving's /data, a worker's data root). Older states hold the
        absolute path where their writer had the volume: their ``versions/<ds>/<registration>`` tail is taken
        under this model's folder, so they too read wherever it is mounted now."""
        recorded = Path(path)
        if recorded.is_absolute() and "versions" in recorded.parts:
            tail = recorded.parts[len(recorded.parts) - 1 - recorded.parts[::-1].index("versions"):]
            return self.dir.joinpath(*tail)
        return self.dir / recorded

    def record(self, version: VersionFiles) -> str:
        """What the state records of a registration folder of this model (see ``recorded``)."""
        return str(version.dir.relative_to(self.dir))


def model_files(registry: str | Path, model_name: str) -> ModelFiles:
    return ModelFiles(Path(registry) / check_name("model name", model_name))


def dataset_root(data_root: str | Path, dataset: str) -> Path:
    return Path(data_root).resolve() / check_name("dataset name", dataset)


@dataclass(frozen=True)
class StreamFiles:
    """A dataset's streaming query state: one per dataset (not per run), as the query is one long-lived thing."""

    dir: Path

    @classmethod
    def of(cls, data_root: str | Path, dataset: str) -> StreamFiles:
        return cls(dataset_root(data_root, dataset) / "stream")

    @property
    def checkpoint(self) -> Path:
        """Spark's offsets and commits: a restart resumes after the last committed batch."""
        return self.dir / "checkpoint"

    @property
    def driver_log(self) -> Path:
        """The supervised driver's output (continuous mode), kept across restarts."""
        return self.dir / "driver.log"

    def result(self, run_id: str) -> Path:
        """A streaming DAG run's result manifest (its XCom)."""
        return self.dir / "runs" / f"{run_key(run_id)}.json"


@dataclass(frozen=True)
class Layout:
    """Paths for one run of one partition of one dataset under a data root."""

    data_root: Path
    dataset: str
    ds: str
    run_id: str = "manual"

    def __post_init__(self) -> None:
        check_name("dataset name", self.dataset)
        check_ds(self.ds)
        run_key(self.run_id)

    @classmethod
    def at(cls, data_root: str | Path, dataset: str, ds: str, run_id: str = "manual") -> Layout:
        """The layout of ``dataset``'s partition ``ds`` (run ``run_id``) under ``data_root`` (made absolute)."""
        return cls(Path(data_root).resolve(), dataset, ds, run_id)

    @property
    def dataset_root(self) -> Path:
        return self.data_root / self.dataset

    @property
    def raw_dir(self) -> Path:
        return self.dataset_root / "raw" / f"ds={self.ds}"

    @property
    def raw(self) -> PartitionFiles:
        return PartitionFiles(self.raw_dir)

    @property
    def run_dir(self) -> Path:
        return self.dataset_root / "runs" / f"ds={self.ds}" / f"run={run_key(self.run_id)}"

    @property
    def spec_snapshot(self) -> Path:
        """The dataset spec as this run first read it: later stages use it, whatever edits happen meanwhile."""
        return self.run_dir / "dataset.json"

    @property
    def input_dir(self) -> Path:
        """This run's snapshot of the raw partition (hard links): what its stages read, whatever
        another run of the same day publishes meanwhile."""
        return self.run_dir / "input"

    @property
    def input(self) -> PartitionFiles:
        return PartitionFiles(self.input_dir)

    @property
    def results_dir(self) -> Path:
        """The stages' JSON result manifests (what Airflow turns into XCom)."""
        return self.run_dir / "_results"

    def result_file(self, task_id: str, map_index: int = -1) -> Path:
        """One Airflow task's result manifest (a mapped task's: one per map index)."""
        name = task_id if map_index < 0 else f"{task_id}_{map_index}"
        return self.results_dir / f"{check_task_id(name)}.json"

    @property
    def online_features(self) -> Path:
        return self.run_dir / "online_features.parquet"

    @property
    def checkpoints_root(self) -> Path:
        return self.run_dir / "checkpoints"

    def checkpoint_dir(self, candidate: str) -> Path:
        return self.checkpoints_root / check_name("candidate", candidate)

    def checkpoint(self, candidate: str) -> CheckpointFiles:
        return CheckpointFiles(self.checkpoint_dir(candidate))

    @property
    def validation_report(self) -> Path:
        return self.run_dir / "validation.json"

    @property
    def features_dir(self) -> Path:
        return self.run_dir / "features"

    @property
    def features(self) -> FeatureFiles:
        return FeatureFiles(self.features_dir)

    @property
    def transform_dir(self) -> Path:
        return self.run_dir / "transform"

    @property
    def transform(self) -> TransformFiles:
        return TransformFiles(self.transform_dir)

    def candidate_dir(self, name: str) -> Path:
        return self.run_dir / "candidates" / check_name("candidate", name)

    def candidate(self, name: str) -> CandidateFiles:
        return CandidateFiles(self.candidate_dir(name))

    @property
    def candidates_root(self) -> Path:
        return self.run_dir / "candidates"

    @property
    def candidate_failures_dir(self) -> Path:
        """Why a candidate's trainer failed its contract (one JSON per candidate), for evaluation's table."""
        return self.run_dir / "candidate_failures"

    def candidate_failure(self, name: str) -> Path:
        return self.candidate_failures_dir / f"{check_name('candidate', name)}.json"

    @property
    def evaluation(self) -> Path:
        return self.run_dir / "evaluation.json"

    @property
    def search_split(self) -> FeatureFiles:
        """What a search's trials fit (``train``: 80% of the training rows) and score (``test``: the other 20%)."""
        return FeatureFiles(self.run_dir / "search" / "split")

    def search_dir(self, candidate: str) -> Path:
        """One candidate's search: its plan and every trial's record and model."""
        return self.run_dir / "search" / check_name("candidate", candidate)

    def search_plan(self, candidate: str) -> Path:
        return self.search_dir(candidate) / "plan.json"

    def trial_record(self, candidate: str, trial_key: str) -> Path:
        return self.search_dir(candidate) / f"{trial_key}.json"

    def trial_model(self, candidate: str, trial_key: str) -> CandidateFiles:
        return CandidateFiles(self.search_dir(candidate) / trial_key)

    def trial_checkpoint_dir(self, candidate: str, trial_key: str) -> Path:
        return self.search_dir(candidate) / "checkpoints" / trial_key

    @property
    def report_dir(self) -> Path:
        """The run's HTML report (``index.html``, self-contained: plots are inline SVG)."""
        return self.run_dir / "report"

    @property
    def report(self) -> Path:
        return self.report_dir / "index.html"

    @classmethod
    def reports_of(cls, data_root: str | Path, dataset: str, run_id: str | None = None) -> list[Path]:
        """Where ``report`` is for each run of ``dataset`` that wrote one (``run_id``'s only, when given), by
        partition: the one file of a run that the Airflow UI serves."""
        run = f"run={run_key(run_id)}" if run_id else "run=*"  # run keys hold no glob characters
        return sorted(dataset_root(data_root, dataset).glob(f"runs/ds=*/{run}/report/index.html"))

    @property
    def registry_root(self) -> Path:
        return registry_root(self.data_root)

    def result_files_of_partition(self, task_id: str) -> list[Path]:
        """``task_id``'s result manifest in every run of this partition that wrote one."""
        return sorted(self.run_dir.parent.glob(f"run=*/{self.results_dir.name}/{check_task_id(task_id)}.json"))

    def evaluations_of_partition(self) -> list[Path]:
        """The evaluation of every run of this partition that reached one (this run's too)."""
        return sorted(self.run_dir.parent.glob("run=*/evaluation.json"))

    def previous_raw_dir(self) -> Path:
        """The previous calendar day's raw partition (drift baseline), whether or not it exists."""
        prev = date.fromordinal(date.fromisoformat(self.ds).toordinal() - 1).isoformat()
        return self.dataset_root / "raw" / f"ds={prev}"

    def as_dict(self) -> dict[str, str]:
        return {
            "dataset": self.dataset,
            "ds": self.ds,
            "run_id": self.run_id,
            "data_root": str(self.data_root),
            "raw_dir": str(self.raw_dir),
            "input_dir": str(self.input_dir),
            "run_dir": str(self.run_dir),
            "results_dir": str(self.results_dir),
            "online_features": str(self.online_features),
            "checkpoints_root": str(self.checkpoints_root),
            "features_dir": str(self.features_dir),
            "transform_dir": str(self.transform_dir),
            "registry_root": str(self.registry_root),
        }
