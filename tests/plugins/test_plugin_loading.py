"""Airflow loading the plugins folder, as the scheduler, API server, DAG processor and task runner do."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import PROJECT_ROOT

PROBE = """
import json, sys
from airflow import plugins_manager
plugins_manager.ensure_plugins_loaded()
import mxnet, kubernetes
folder = sys.argv[1]
print(json.dumps({
    "plugins": [info["name"] for info in plugins_manager.get_plugin_info()],
    "mxnet": mxnet.__file__, "kubernetes": kubernetes.__file__,
    "loose": sorted(name for name, module in list(sys.modules.items())
                    if (getattr(module, "__file__", None) or "").startswith(folder) and name.split(".")[0] != "kiln"),
}))
"""


def test_loading_the_plugins_registers_kiln_and_shadows_no_library():
    """Airflow imports every .py file under the plugins folder by its bare name unless ``.airflowignore`` leaves it
    out: kiln/operators/mxnet.py became ``mxnet`` and kiln/hooks/kubernetes.py ``kubernetes`` in the process."""
    folder = PROJECT_ROOT / "plugins"
    out = subprocess.run([sys.executable, "-c", PROBE, str(folder)], capture_output=True, text=True, check=True,
                         env={**os.environ, "AIRFLOW__CORE__PLUGINS_FOLDER": str(folder)})
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "kiln" in loaded["plugins"]
    assert "site-packages" in loaded["mxnet"] and "site-packages" in loaded["kubernetes"], loaded
    assert loaded["loose"] == ["kiln_plugin"]  # the kiln package's modules only under their package names
