"""A public path user code, specs and registered versions name: the Spark MLlib trainers and ``export_model``, a fitted model's portable export.

The code lives in ``ml_tasks.training.train_spark``; this path stays so that what was written against it keeps working.
"""

from ml_tasks.training.train_spark import export_model, train_gbt, train_lr  # noqa: F401
