"""One way to get a SparkSession: under spark-submit it joins the submitted app, alone it runs local[*]."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def get_spark(app_name: str) -> SparkSession:
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        # Not launched by spark-submit (tests, the CLI by hand): choose the master here. Under
        # spark-submit the submitted --master stands and must not be overridden.
        builder = builder.master(os.environ.get("KILN_SPARK_MASTER", "local[*]"))
    return (
        builder.config("spark.sql.shuffle.partitions", os.environ.get("KILN_SHUFFLE_PARTITIONS", "8"))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
