"""The script evaluate.py and the `evaluate` library share a name: wherever the checkout's root comes first on
sys.path, `import evaluate` must still give the library, and the script must still run."""

import json
import subprocess
import sys

import pytest

from testing_utils import REPO_ROOT, subprocess_env


PROBE = """
import json, sys
import evaluate
import emovit.evaluation.run as run
print(json.dumps({"file": evaluate.__file__, "has_load": hasattr(evaluate, "load"),
                  "run_sees": run.evaluate.__file__, "script_in_modules": any(
                      getattr(m, "__file__", None) == sys.argv[1] for m in list(sys.modules.values()))}))
"""


@pytest.mark.integration
@pytest.mark.parametrize("how", ["cwd", "PYTHONPATH"])
def test_import_evaluate_gives_the_library_where_the_checkout_comes_first(how, tmp_path):
    script = str(REPO_ROOT / "evaluate.py")
    cwd = REPO_ROOT if how == "cwd" else tmp_path
    done = subprocess.run([sys.executable, "-c", PROBE, script], cwd=cwd, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["has_load"] and found["file"] != script and found["file"].endswith("__init__.py")
    assert found["run_sees"] == found["file"]


def test_the_script_hands_the_name_over_when_imported_as_evaluate(monkeypatch):
    """In this process: loading evaluate.py under the name `evaluate` leaves the library in sys.modules."""
    import importlib.util

    monkeypatch.delitem(sys.modules, "evaluate", raising=False)
    spec = importlib.util.spec_from_file_location("evaluate", REPO_ROOT / "evaluate.py")
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "evaluate", script)
    spec.loader.exec_module(script)
    library = sys.modules["evaluate"]
    assert library is not script and hasattr(library, "load") and not hasattr(library, "main")
    assert hasattr(script, "main")  # the script's own body still ran: nothing imported at its top but the standard library


def test_import_evaluate_in_tests_is_the_library():
    import evaluate

    assert hasattr(evaluate, "load") and "site-packages" in evaluate.__file__
