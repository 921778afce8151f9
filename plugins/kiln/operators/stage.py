"""``KilnStageOperator``: run one ``python -m ml_tasks STAGE ...`` as a local subprocess or a Kubernetes pod.

The operator only stores arguments; execution is a few lines. Locally it streams the stage's output
into the task log and kills the whole process group on timeout or ``on_kill``; in Kubernetes mode it
builds a ``KilnPodOperator`` (imported lazily: the provider costs ~1.5 s at DAG parse) with the same
command. Either way the stage writes a small result manifest to the artifact location, and that
manifest (not the pod's XCom sidecar) becomes the task's XCom. An exit code means the same in both
(``kiln.execution.stage_exit``).

Not the standard provider's ``SubprocessHook``: it keeps only the last output line (a failed validation's reason
spans several), has no timeout of its own and stops the group with SIGTERM alone; a stage here must die with its
task process (``PR_SET_PDEATHSIG``) and be SIGKILLed when it ignores SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from ml_tasks.core.errors import failure_reason
from ml_tasks.core.processes import connection_variable, die_with_parent


class KilnStageOperator(BaseOperator):
    """Run an ``ml_tasks`` stage.

    :param stage: the CLI stage, e.g. ``ingest``.
    :param arguments: the stage's arguments (templated; may hold XComArgs).
    :param result_path: where the stage writes its JSON result (templated); returned as XCom.
    :param pod_resources: pod resource preset in Kubernetes mode (small, medium, large, gpu).
    :param image: the pod's image in Kubernetes mode (default: the Kiln image).
    :param execution: ``local`` or ``kubernetes``; ``None`` resolves it at run time.
    :param timeout_minutes: kill the stage's whole process group after this long (templated; a form field).
    :param connections: Airflow connections the stage reads (e.g. a PostgreSQL source): resolved here (which
        registers their secrets with the masker) and handed to the local subprocess as ``AIRFLOW_CONN_<ID>``
        environment variables (never argv); a pod gets those keys, and only those, of the ``kiln-connections``
        Secret. Nothing else of the worker's environment reaches the stage (``ml_tasks.core.processes.stage_environment``).
    """

    template_fields: Sequence[str] = ("arguments", "result_path", "timeout_minutes")
    ui_color = "#f4a261"

    def __init__(
        self,
        *,
        stage: str,
        arguments: list[Any],
        result_path: str,
        pod_resources: str = "small",
        image: str | None = None,
        execution: str | None = None,
        timeout_minutes: float | str | None = None,
        connections: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.connections = list(connections)
        self.timeout_minutes = timeout_minutes
        self.stage = stage
        self.arguments = arguments
        self.result_path = result_path
        self.pod_resources = pod_resources
        self.image = image
        self.execution = execution
        self._proc: subprocess.Popen[str] | None = None

    @property
    def stage_arguments(self) -> list[str]:
        """The rendered arguments, then where the stage writes its result: what follows ``python -m ml_tasks <stage>``
        here and in a pod alike."""
        return [*map(str, self.arguments), "--result-file", self.result_path]

    def execute(self, context: Any) -> dict[str, Any]:
        from kiln.execution import resolve_execution
        from kiln.settings import mask_kiln_connections

        mask_kiln_connections()  # before the stage can print anything
        connections = self._connections()  # and the stage's own, whose output (a pod's log too) is logged
        Path(self.result_path).unlink(missing_ok=True)  # never return a previous try's manifest
        if resolve_execution(self.execution) == "kubernetes":
            # KPO's execute, minus Airflow's warning about an operator run inside another one
            pod = self._pod_operator(context)
            if pod.deferrable:
                pod.execute_async(context)  # raises TaskDeferred: trigger_reentry below takes over
            else:
                pod.execute_sync(context)
        else:
            self._run_local(connections)
        return self._result()

    def trigger_reentry(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """Deferrable pods: the triggerer saw the pod finish; exit codes map as in ``execute``."""
        self._pod_operator(context).trigger_reentry(context, event)
        return self._result()

    def _pod_operator(self, context: Any) -> Any:
        from kiln.operators.pod import KilnPodOperator
        from kiln.settings import data_root

        return KilnPodOperator.for_stage(self, context, data_root())

    def _result(self) -> dict[str, Any]:
        from kiln.execution import read_result

        return read_result(self.stage, self.result_path)

    def stage_env(self) -> dict[str, str]:
        """Variables the stage needs wherever it runs (subprocess or pod); none by default."""
        return {}

    def _connections(self) -> dict[str, str]:
        """The stage's connections as ``AIRFLOW_CONN_<ID>`` values; fetching registers their secrets with the masker.
        One that is not defined is left out: the stage names what it lacks (or, as Ignite's, has a local default)."""
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        found = {}
        for conn_id in self.connections:
            try:
                found[connection_variable(conn_id)] = BaseHook.get_connection(conn_id).get_uri()
            except AirflowNotFoundException:
                self.log.info("connection %s is not defined; the stage runs without it", conn_id)
        return found

    def _run_local(self, connections: dict[str, str]) -> None:
        from ml_tasks.core.processes import stage_environment
        from ml_tasks.core.stages import stage_command

        cmd = stage_command(self.stage, self.stage_arguments, python=sys.executable)
        # the stage's whole environment: never the worker's (Airflow's JWT secret, metadata DB URL, other connections)
        env = stage_environment(os.environ, {**self.stage_env(), **connections})
        self.log.info("running %s", " ".join(cmd))
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            env=env, preexec_fn=die_with_parent,
        )
        timeout = float(self.timeout_minutes) * 60 if self.timeout_minutes else None
        timed_out = threading.Event()

        def on_timeout() -> None:
            timed_out.set()
            self._kill_group()

        watchdog = threading.Timer(timeout, on_timeout) if timeout else None
        if watchdog:
            watchdog.start()
        last_lines: list[str] = []
        assert self._proc.stdout is not None
        try:
            for line in self._proc.stdout:
                self.log.info("[%s] %s", self.stage, line.rstrip())
                last_lines = [*last_lines[-19:], line.rstrip()]
            code = self._proc.wait()
        except BaseException:  # Airflow's execution_timeout, a signal: the stage must not run on without us
            self._kill_group()
            raise
        finally:
            if watchdog:
                watchdog.cancel()
        if timed_out.is_set():
            raise AirflowException(f"stage {self.stage} ran longer than its timeout of {self.timeout_minutes} min; "
                                   f"its process group {self._proc.pid} was killed")
        if code != 0:
            from kiln.execution import stage_exit

            raise stage_exit(self.stage, code, failure_reason("\n".join(last_lines)), f"process {self._proc.pid}")

    def _kill_group(self, grace: float = 10.0) -> None:
        """SIGTERM the stage's process group, SIGKILL it after ``grace`` seconds (the stage runs in its own session)."""
        if self._proc is None or self._proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            self._proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()

    def on_kill(self) -> None:
        self._kill_group()
