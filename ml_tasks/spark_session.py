"""A public path user code, specs and registered versions name: Kiln's Spark session, for a trainer's own Spark ML pipeline (``get_spark``).

The code lives in ``ml_tasks.core.spark_session``; this path stays so that what was written against it keeps working.
"""

from ml_tasks.core.spark_session import connect_server, get_spark, streaming_session  # noqa: F401
