"""A public path user code, specs and registered versions name: the portable (numpy) scorer: specs name ``ml_tasks.portable:load``, and so do the versions registered with it.

The code lives in ``ml_tasks.serving.portable``; this path stays so that what was written against it keeps working.
"""

from ml_tasks.serving.portable import apply_output, load, predict_score, transform_matrix  # noqa: F401
