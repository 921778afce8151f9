"""The trigger form of a dataset's DAG: Airflow ``Param``s generated from ``ml_tasks.core.run_settings.SETTINGS``
(bounds, descriptions) with the dataset spec's defaults, and the Jinja templates that pass each field to
the stage command lines."""

from __future__ import annotations

from airflow.sdk import Param

from ml_tasks.core.run_settings import SETTINGS, Setting, settings_for
from ml_tasks.core.spec import DatasetSpec


def form_settings(spec: DatasetSpec, names: tuple[str, ...] | None = None, pipeline: str = "training") -> list[Setting]:
    """The settings the form of ``spec``'s ``pipeline`` DAG shows: those of its task and its source and (training)
    its own trainers' hyper-parameters, or only ``names``."""
    own = [s for s in spec.trainer_settings.values() if (names is None and pipeline == "training") or (names and s.name in names)]
    return [*settings_for(spec.task, spec.source.kind, names, pipeline), *own]


# The JSON-schema dialect every field declares: Draft 7, in which each keyword the settings use means what it means in
# the default 2020-12. Airflow validates a value with ``jsonschema.validate``, which first checks the schema itself
# against its dialect's meta-schema, on every call: Draft 7's is one document, 2020-12's a set of vocabularies 3.5x
# slower to walk. Serializing Kiln's 8 DAGs resolves every field of every task several times (the DAG processor
# on each parse, ``dags test`` twice): 1.1 s -> 0.4 s (docs/benchmarks.md; apache/airflow#28059).
FORM_SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"


class FrozenSchema(dict):
    """A field's JSON schema, shared rather than copied: Airflow deep-copies the DAG's params into every task at
    parse time (about half the DAG file's parse time with ~50 fields and ~25 tasks per DAG), and nothing
    mutates a schema. Serialized, it is a plain dict."""

    def __deepcopy__(self, memo: dict) -> FrozenSchema:
        return self


def form_params(spec: DatasetSpec, names: tuple[str, ...] | None = None, pipeline: str = "training") -> dict[str, Param]:
    return {s.name: Param(s.default_for(spec), description=s.description,
                          schema=FrozenSchema({"$schema": FORM_SCHEMA_DIALECT, **s.schema_for(spec)}))
            for s in form_settings(spec, names, pipeline)}


def param_template(name: str, setting: Setting | None = None) -> str:
    """The Jinja expression that renders form field ``name`` (a global setting, or ``setting``) as its command-line value."""
    setting = setting or SETTINGS[name]
    kind = setting.schema["type"]
    if kind == "array":
        return "{{ params." + name + " | join(',') }}"
    if kind == "object":
        return "{{ params." + name + " | tojson }}"
    if isinstance(kind, list) and "null" in kind:
        return "{{ '' if params." + name + " is none else params." + name + " }}"
    return "{{ params." + name + " }}"
