"""A public path user code, specs and registered versions name: the MXNet trainer and scorer (``ml_tasks.train_mxnet:load`` in versions registered with it) and ``import_mxnet``.

The code lives in ``ml_tasks.training.train_mxnet``; this path stays so that what was written against it keeps working.
"""

from ml_tasks.training.train_mxnet import import_mxnet, load, train  # noqa: F401
