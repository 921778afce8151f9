"""The ways to get a SparkSession: ``get_spark`` for the batch stages (a Spark Connect session when ``SPARK_REMOTE``
names a server, the submitted application under spark-submit, else local[*] in this process), and
``streaming_session`` for the streaming job (a classic driver of its own with Spark's Kafka connector)."""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING

from ml_tasks.core.environment import env_given, env_path, env_str

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

KAFKA_PACKAGE = "org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0"  # the pinned pyspark's Scala and version


def connect_server(url: str | None = None) -> str | None:
    """The Spark Connect server a URL (default ``SPARK_REMOTE``) names, as ``sc://host:port``: without its
    parameters (a token may be one) and the trailing slash the provider's URLs carry."""
    url = os.environ.get("SPARK_REMOTE", "") if url is None else url
    return url.split(";")[0].rstrip("/") or None


def get_spark(app_name: str) -> SparkSession:
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    if os.environ.get("SPARK_REMOTE"):
        # A long-running Spark Connect server: the session is ours, the server's static settings stand.
        session = (builder.remote(os.environ["SPARK_REMOTE"]).appName(app_name)
                   .config("spark.sql.shuffle.partitions", env_str("KILN_SHUFFLE_PARTITIONS"))
                   .config("spark.sql.session.timeZone", "UTC").getOrCreate())
        # Release the session (its cached frames and fitted models on the server) before the interpreter tears
        # down: pyspark 4.2's model finalizers otherwise send a delete RPC at shutdown that can block for good
        # (SPARK-57655). After stop() the finalizers see no active session and do nothing.
        atexit.register(session.stop)
        if threading.current_thread() is threading.main_thread():
            # A timeout or on_kill SIGTERMs the stage: exit through atexit, so the released session takes its
            # running jobs on the server with it instead of leaving them to run for a client that is gone.
            signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
        return session
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        # Not launched by spark-submit (tests, the CLI by hand): choose name, master and tuning here. Under
        # spark-submit what was submitted (--name, --master, --conf) stands and must not be overridden.
        builder = (builder.appName(app_name).master(env_str("KILN_SPARK_MASTER"))
                   .config("spark.sql.shuffle.partitions", env_str("KILN_SHUFFLE_PARTITIONS"))
                   .config("spark.ui.enabled", "false"))
    return (
        builder.config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )


def streaming_session(app_name: str) -> SparkSession:
    """A Spark driver of its own (never a Connect server: the Kafka connector and foreachBatch run here)."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Inherited from a parent that used Spark Connect (pyspark sets SPARK_CONNECT_MODE_ENABLED for its children):
    # this driver is classic Spark, whatever its parent was.
    for name in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED"):
        os.environ.pop(name, None)
    logging.getLogger("py4j").setLevel(logging.WARNING)  # foreachBatch's callback server logs every call at INFO
    from pyspark.sql import SparkSession

    from ml_tasks.core.layout import PROJECT_ROOT

    ivy = env_path("KILN_IVY_DIR")
    return (SparkSession.builder.appName(app_name).master(env_str("KILN_STREAM_MASTER"))
            .config("spark.jars.packages", KAFKA_PACKAGE).config("spark.jars.ivy", str(ivy))
            .config("spark.jars.ivySettings", str(PROJECT_ROOT / "spark" / "ivysettings.xml"))
            # KILN_SHUFFLE_PARTITIONS set the stream's too before it had its own: a setting made then still holds
            .config("spark.sql.shuffle.partitions", env_given("KILN_STREAM_SHUFFLE_PARTITIONS")
                    or env_given("KILN_SHUFFLE_PARTITIONS") or env_str("KILN_STREAM_SHUFFLE_PARTITIONS"))
            # A bounded heap: a JVM left to its default (a quarter of the machine) grows for hours before it collects.
            .config("spark.driver.memory", env_str("KILN_STREAM_DRIVER_MEMORY"))
            .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.session.timeZone", "UTC").config("spark.log.level", "WARN")
            .getOrCreate())
