"""One way to get a SparkSession: under spark-submit it joins the submitted app, alone it runs local[*]."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def get_spark(app_name: str) -> SparkSession:
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        # Not launched by spark-submit (tests, the CLI by hand): choose name, master and tuning here. Under
        # spark-submit what was submitted (--name, --master, --conf) stands and must not be overridden.
        builder = (builder.appName(app_name).master(os.environ.get("KILN_SPARK_MASTER", "local[*]"))
                   .config("spark.sql.shuffle.partitions", os.environ.get("KILN_SHUFFLE_PARTITIONS", "8"))
                   .config("spark.ui.enabled", "false"))
    return (
        builder.config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
