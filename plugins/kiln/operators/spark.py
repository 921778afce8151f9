"""``KilnSparkStageOperator``: a Spark stage over Spark Connect or through spark-submit, chosen by its connection.

The ``spark_default`` connection decides at run time, so the DAG file never changes:

- a Spark Connect connection (``sc://host:15002``, type ``spark_connect``): the stage runs like every other
  Kiln stage (a subprocess, or a pod in Kubernetes mode) as a thin Connect client of that long-running
  server, with ``SPARK_REMOTE`` set from the provider's ``SparkConnectHook``; no JVM starts for the task;
- any other Spark connection (``spark://master:7077``, ``local[*]``, ``yarn``, ``k8s://``): the provider's
  ``SparkSubmitHook`` submits ``scripts/spark_stage.py`` as its own application, as before.

Either way the stage writes its result manifest, which becomes the task's XCom.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kiln.operators.stage import KilnStageOperator

SPARK_APP = str(Path(__file__).resolve().parents[3] / "scripts" / "spark_stage.py")
CONNECT_TYPES = ("spark_connect", "sc")  # the provider's type; what Airflow makes of an sc:// URI


class KilnSparkStageOperator(KilnStageOperator):
    """Run a Spark ``ml_tasks`` stage on the Spark that ``conn_id`` names.

    :param conn_id: a Spark Connect or a Spark (submit) connection.
    :param application_name: the application's name under spark-submit.
    :param submit_conf: ``--conf`` settings under spark-submit (a Connect server has its own).
    """

    ui_color = "#e76f51"

    def __init__(self, *, conn_id: str = "spark_default", application_name: str, submit_conf: dict[str, str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.application_name = application_name
        self.submit_conf = dict(submit_conf or {})
        self._remote: str | None = None
        self._submit_hook: Any = None

    def execute(self, context: Any) -> dict[str, Any]:
        if self.attach_to_connect():
            from ml_tasks.core.spark_session import connect_server

            self.log.info("Spark Connect: the stage attaches to %s (connection %s)", connect_server(self._remote), self.conn_id)
            return super().execute(context)
        return self._submit()

    def attach_to_connect(self) -> bool:
        """Whether ``conn_id`` is a Spark Connect server; if so the stage's environment names it (``SPARK_REMOTE``)."""
        from airflow.sdk import BaseHook

        if BaseHook.get_connection(self.conn_id).conn_type not in CONNECT_TYPES:
            self._remote = None
            return False
        from airflow.providers.apache.spark.hooks.spark_connect import SparkConnectHook

        self._remote = SparkConnectHook(self.conn_id).get_connection_url()
        return True

    def stage_env(self) -> dict[str, str]:
        return {"SPARK_REMOTE": self._remote} if self._remote else {}

    def _submit(self) -> dict[str, Any]:
        from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

        Path(self.result_path).unlink(missing_ok=True)  # never return a previous try's manifest
        self._submit_hook = SparkSubmitHook(
            conf=self.submit_conf, conn_id=self.conn_id, name=self.application_name,
            application_args=[self.stage, *self.stage_arguments])
        self._submit_hook.submit(SPARK_APP)
        return self._result()

    def on_kill(self) -> None:
        if self._submit_hook is not None:
            self._submit_hook.on_kill()
        super().on_kill()


class KilnTrialOperator(KilnSparkStageOperator):
    """One trial of a hyper-parameter search, mapped over the planned trials of every searched candidate: a Spark
    candidate's trial runs as a Spark stage, any other as a plain stage, in the pod image its candidate needs.

    :param spark_candidates: the candidates whose trials are Spark stages.
    :param candidate_images: a candidate's pod image in Kubernetes mode, where it is not Kiln's.
    """

    def __init__(self, *, spark_candidates: Sequence[str] = (), candidate_images: Mapping[str, str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spark_candidates = list(spark_candidates)
        self.candidate_images = dict(candidate_images or {})

    def execute(self, context: Any) -> dict[str, Any]:
        arguments = list(map(str, self.arguments))
        candidate = arguments[arguments.index("--candidate") + 1]
        if candidate in self.spark_candidates:
            return super().execute(context)
        self.image = self.candidate_images.get(candidate, self.image)
        return KilnStageOperator.execute(self, context)
