"""spark-submit entry point: runs a ``ml_tasks`` stage inside the submitted Spark application.

It lives outside the package because spark-submit puts a script's own folder first on sys.path,
which would make ``ml_tasks``' modules importable under bare names.
"""

import sys

from ml_tasks.__main__ import main

sys.exit(main())
