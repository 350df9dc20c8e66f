"""transformers' own testers (ModelTesterMixin, GenerationTesterMixin, PipelineTesterMixin, ProcessorTesterMixin,
ConfigTester), from the source distribution of the installed transformers version, run with no assertion changed
against stock InstructBLIP's classes and against EmoVIT's:

    pytest -m integration tests/test_transformers_conformance.py -s

(`-s` prints the per-file counts of both runs.)

How it runs:
1. `pip download transformers==<installed version> --no-binary :all: --no-deps` fetches the sdist into
   `$EMOVIT_TRANSFORMERS_SDIST_CACHE` (default: `emovit-transformers-sdist` in the temporary folder); a later run finds
   it there and downloads nothing. When pip cannot fetch it (no network, a version the registry does not have), the
   test is skipped with pip's error.
2. The sdist's top-level test modules (`test_modeling_common.py`, `test_pipeline_mixin.py`,
   `test_processing_common.py`, `test_configuration_common.py`, ...) are unpacked, unchanged, into a fresh folder.
   The sdist ships only those: no `tests/models/` (so no InstructBLIP test module), `tests/generation/`,
   `tests/pipelines/`, `tests/exporters/` or `utils/`. What the common modules import from those comes from
   `STAND_INS` below. The InstructBLIP test modules are replaced by `tests/transformers_conformance/`, copied in as
   `tests/emovit_conformance/`: a tiny model tester, and test classes that mix the testers in and set only what names
   the classes under test, their pipeline task and their inputs. No test method is overridden.
3. That folder is run by pytest in two subprocesses side by side (one thread each), with `EMOVIT_CONFORMANCE_SIDE=stock`
   (InstructBLIP's classes) and `=emovit` (EmoVIT's, also entered in transformers' Auto tables where InstructBLIP's
   are, see `tests/transformers_conformance/__init__.py`); each run's per-test outcomes are read from its
   `--junitxml` report.

What the stand-ins leave out, on both sides alike: the sdist has no GenerationTesterMixin, so the model test class
inherits an empty one and no `generate` test runs; ExportTesterMixin is empty too; with no tiny-model summary (and no
pipeline test classes) PipelineTesterMixin skips every pipeline test itself, saying so.

What is checked: EmoVIT fails or skips nothing that passes on stock InstructBLIP, fails nothing outside
`KNOWN_FAILURES`, and passes at least as many tests. Each known failure fails on stock InstructBLIP too, and its entry
says why. `NOT_RUN_ON_EMOVIT` names the tests transformers runs differently by class name, which cannot run on EmoVIT.
"""

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import transformers

from testing_utils import subprocess_env


SUITE = Path(__file__).with_name("transformers_conformance")
SIDES = ("stock", "emovit")
TEST_CLASSES = {"ModelTest": "test_modeling.py", "ProcessorTest": "test_processing.py",
                "ConfigTest": "test_configuration.py"}
FETCH_TIMEOUT_S = 300
# Both runs together take about a minute on two free cores.
RUN_TIMEOUT_S = 480

# What the sdist's common test modules import from files the sdist does not ship, by path in the unpacked folder.
STAND_INS = {
    "tests/__init__.py": "",
    "tests/exporters/__init__.py": "",
    "tests/exporters/test_export.py": (
        '"""Stand-in for a module the sdist lacks: ModelTesterMixin\'s base class, without the export tests."""\n\n\n'
        "class ExportTesterMixin:\n    pass\n"
    ),
    "tests/generation/__init__.py": "",
    "tests/generation/test_utils.py": (
        '"""Stand-in for a module the sdist lacks: the mixin that the test class of a model that can generate '
        'inherits, without the generate tests."""\n\n\n'
        "class GenerationTesterMixin:\n    pass\n"
    ),
    "tests/utils/__init__.py": "",
    # ConfigTester uses these keywords only for configs without sub-configs; InstructBLIP's has three.
    "tests/utils/test_configuration_utils.py": (
        '"""Stand-in for a module the sdist lacks; unused by composite configs."""\n\nconfig_common_kwargs = {}\n'
    ),
    # PipelineTesterMixin looks each model class up here for a tiny checkpoint on the Hub, which could not be
    # downloaded offline anyway; with none listed it skips the test and says so.
    "tests/utils/tiny_model_summary.json": "{}\n",
    "utils/fetch_hub_objects_for_ci.py": (
        '"""Stand-in for a script the sdist lacks: no local copies of Hub files here, so a URL stays a URL."""\n\n\n'
        "def url_to_local_path(url, return_url_if_not_found=True):\n    return url\n"
    ),
}

# Tests that fail on stock InstructBLIP, and on EmoVIT for the same reason, with that reason. Keys are `Class.test`.
KNOWN_FAILURES = {
    "ModelTest.test_attention_outputs": "InstructBLIP's output has no top-level `attentions`; the language model's "
    "are in `language_model_outputs`",
    "ModelTest.test_hidden_states_output": "InstructBLIP's output has no top-level `hidden_states`; the language "
    "model's are in `language_model_outputs`",
    "ModelTest.test_retain_grad_hidden_states_attentions": "InstructBLIP's output has no top-level `hidden_states` "
    "(as in test_hidden_states_output)",
    "ModelTest.test_model_base_model_prefix": "InstructBLIP's `base_model_prefix` ('blip') names no sub-module, so "
    "`base_model` is the model itself",
}

# test_modeling_common.py compares eager with SDPA attention on `outputs.language_model_outputs` only for classes
# whose name contains "blip"; for any other class it reads a top-level `outputs.hidden_states`, which InstructBLIP's
# output, and so EmoVIT's, does not have. Those comparisons cannot run on EmoVIT's classes: a test with this prefix
# that EmoVIT fails with exactly this error counts as not run, and any other failure of it counts as a failure.
NOT_RUN_ON_EMOVIT = ("ModelTest.test_eager_matches_sdpa_inference_", "KeyError: 'hidden_states'")


def fetch_sdist(version: str, cache: Path) -> Path:
    """The sdist of transformers `version` in `cache`, downloaded with pip unless it is already there. Skips the
    calling test with pip's error when it cannot be fetched."""
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / f"transformers-{version}.tar.gz"
    if sdist.is_file():
        return sdist
    with tempfile.TemporaryDirectory(dir=cache) as download:
        command = [sys.executable, "-m", "pip", "download", f"transformers=={version}", "--no-binary", ":all:",
                   "--no-deps", "--disable-pip-version-check", "-d", download]
        result = subprocess.run(command, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S)
        found = sorted(Path(download).glob("transformers-*.tar.gz"))
        if result.returncode != 0 or not found:
            error = " | ".join((result.stderr or result.stdout).strip().splitlines()[-5:])
            pytest.skip(f"could not fetch the transformers {version} source distribution with `pip "
                        f"{' '.join(command[3:])}`: {error}")
        # A rename within one folder: a run that stops half-way never leaves a partial archive under the final name.
        os.replace(found[0], sdist)
    return sdist


def prepare_run_folder(sdist: Path, version: str, root: Path) -> Path:
    """Unpacks the sdist's top-level test modules into `root/tests`, adds the stand-ins and the suite, and links
    `root/src/transformers` to the installed package (test_pipeline_mixin.py imports transformers from there)."""
    prefix = f"transformers-{version}/tests/"
    (root / "tests").mkdir(parents=True)
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            name = member.name[len(prefix):]
            if member.isfile() and member.name.startswith(prefix) and "/" not in name and name.endswith(".py"):
                (root / "tests" / name).write_bytes(archive.extractfile(member).read())
    if not (root / "tests" / "test_modeling_common.py").is_file():
        pytest.fail(f"{sdist} holds no {prefix}test_modeling_common.py; delete the file so that it is fetched again.")
    for relative, text in STAND_INS.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    shutil.copytree(SUITE, root / "tests" / "emovit_conformance", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "src").mkdir()
    (root / "src" / "transformers").symlink_to(Path(transformers.__file__).parent, target_is_directory=True)
    # A config of its own keeps the project's pytest settings (`-m "not integration"`, its markers) out of this run;
    # transformers declares its markers in a conftest.py that the sdist leaves out.
    (root / "pytest.ini").write_text(
        "[pytest]\nfilterwarnings =\n    ignore::DeprecationWarning\n    ignore::pytest.PytestUnknownMarkWarning\n")
    return root


def start_run(root: Path, side: str, report: Path, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "pytest", "tests/emovit_conformance", "-q", "-p", "no:cacheprovider",
               "-o", "timeout=300", f"--junitxml={report}"]
    # One thread each: the two sides run side by side on CI's two cores.
    env = subprocess_env(EMOVIT_CONFORMANCE_SIDE=side, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                         OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with open(log, "w") as out:
        return subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)


def read_outcomes(report: Path) -> dict[str, tuple[str, str]]:
    """`{"Class.test": (outcome, message)}` from a junit report; outcome is passed, failed or skipped (an error in
    setup or teardown counts as failed)."""
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        key = f"{case.get('classname', '').rsplit('.', 1)[-1]}.{case.get('name')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = "failed", child.get("message", "")
                break
            if child.tag == "skipped":
                outcome, message = "skipped", child.get("message", "")
        outcomes[key] = (outcome, message)
    return outcomes


def mark_not_run(emovit: dict) -> dict:
    """EmoVIT's outcomes, with the failures that NOT_RUN_ON_EMOVIT describes turned into the outcome "not run"."""
    prefix, error = NOT_RUN_ON_EMOVIT
    return {key: ("not run", message) if key.startswith(prefix) and outcome == "failed" and message == error
            else (outcome, message) for key, (outcome, message) in emovit.items()}


def count(outcomes: dict, prefix: str = "") -> dict[str, int]:
    totals = {"passed": 0, "failed": 0, "skipped": 0, "not run": 0}
    for key, (outcome, _) in outcomes.items():
        if key.startswith(prefix):
            totals[outcome] += 1
    return totals


def compare(stock: dict, emovit: dict) -> list[str]:
    """What EmoVIT does worse than stock InstructBLIP: one line per problem, none when it does as well. `stock` is as
    `read_outcomes` gives it, `emovit` also passed through `mark_not_run`."""
    problems = []
    for key, (outcome, _) in sorted(stock.items()):
        theirs, message = emovit.get(key, ("missing", ""))
        if outcome == "passed" and theirs not in ("passed", "not run"):
            problems.append(f"{key}: passes on stock InstructBLIP, {theirs} on EmoVIT: {message[:300]}")
    for key, (outcome, message) in sorted(emovit.items()):
        ours = stock.get(key, ("missing",))[0]
        if outcome != "failed" or ours == "passed":  # a test stock passes is reported above
            continue
        if key not in KNOWN_FAILURES:
            problems.append(f"{key}: fails on EmoVIT and is not in KNOWN_FAILURES (if it fails on stock InstructBLIP "
                            f"for the same reason, add it there with that reason): {message[:300]}")
        elif ours != "failed":
            problems.append(f"{key}: in KNOWN_FAILURES, but {ours} on stock InstructBLIP")
    comparable = {key: value for key, value in stock.items() if emovit.get(key, ("",))[0] != "not run"}
    passed, passed_stock = count(emovit)["passed"], count(comparable)["passed"]
    if passed < passed_stock:
        problems.append(f"EmoVIT passes {passed} tests, stock InstructBLIP {passed_stock}")
    return problems


def summarise(outcomes: dict, seconds: float) -> str:
    lines = [f"transformers' testers on stock InstructBLIP and on EmoVIT, side by side, in {seconds:.0f} s:"]
    for side in SIDES:
        for test_class, name in TEST_CLASSES.items():
            totals = count(outcomes[side], test_class + ".")
            lines.append(f"  {side:6} {name:22} " + ", ".join(f"{n} {outcome}" for outcome, n in totals.items() if n))
    return "\n".join(lines)


def test_compare_accepts_known_failures_and_reports_the_rest():
    known = next(iter(KNOWN_FAILURES))
    sdpa = NOT_RUN_ON_EMOVIT[0] + "09_fp32_pad_left"
    stock = {"ModelTest.test_a": ("passed", ""), known: ("failed", "E"), sdpa: ("passed", ""),
             "ModelTest.test_b": ("skipped", "needs a GPU")}
    emovit = mark_not_run({**stock, sdpa: ("failed", NOT_RUN_ON_EMOVIT[1])})
    assert emovit[sdpa][0] == "not run"
    assert compare(stock, emovit) == []

    skipped = compare(stock, {**emovit, "ModelTest.test_a": ("skipped", "needs X")})
    assert [line.split(":")[0] for line in skipped] == ["ModelTest.test_a",
                                                       "EmoVIT passes 0 tests, stock InstructBLIP 1"]
    # Failing the class-name comparison for any other reason is a failure like any other.
    other_error = mark_not_run({**emovit, sdpa: ("failed", "AssertionError: Tensor-likes are not close!")})
    assert compare(stock, other_error)[0].startswith(f"{sdpa}: passes on stock InstructBLIP, failed on EmoVIT")
    assert "not in KNOWN_FAILURES" in compare(stock, {**emovit, "ModelTest.test_b": ("failed", "boom")})[0]
    assert compare({**stock, known: ("skipped", "")}, emovit) == [f"{known}: in KNOWN_FAILURES, but skipped on stock "
                                                                  "InstructBLIP"]


@pytest.mark.integration
@pytest.mark.timeout(FETCH_TIMEOUT_S + RUN_TIMEOUT_S + 120)
def test_emovit_does_as_well_as_instructblip_under_transformers_own_testers(tmp_path):
    if importlib.util.find_spec("parameterized") is None:
        pytest.skip("transformers' testers import `parameterized`; install the test extra: pip install -e '.[test]'")
    version = importlib.metadata.version("transformers")
    cache = Path(os.environ.get("EMOVIT_TRANSFORMERS_SDIST_CACHE")
                 or Path(tempfile.gettempdir(), "emovit-transformers-sdist"))
    root = prepare_run_folder(fetch_sdist(version, cache), version, tmp_path / "transformers")

    started = time.monotonic()
    runs = {side: start_run(root, side, tmp_path / f"{side}.xml", tmp_path / f"{side}.log") for side in SIDES}
    outcomes = {}
    for side, process in runs.items():
        try:
            code = process.wait(timeout=max(1.0, RUN_TIMEOUT_S - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            for run in runs.values():
                run.kill()
            pytest.fail(f"the {side} run took over {RUN_TIMEOUT_S} s; its log is {tmp_path / f'{side}.log'}")
        # 0: all passed, 1: some failed; anything else (2 for a collection error) means the counts mean nothing.
        log = (tmp_path / f"{side}.log").read_text()
        assert code in (0, 1), f"the {side} run stopped with exit code {code}:\n{log[-4000:]}"
        outcomes[side] = read_outcomes(tmp_path / f"{side}.xml")
    outcomes["emovit"] = mark_not_run(outcomes["emovit"])
    print(summarise(outcomes, time.monotonic() - started))

    problems = compare(outcomes["stock"], outcomes["emovit"])
    assert not problems, "EmoVIT does worse than stock InstructBLIP under transformers' testers:\n" + "\n".join(
        problems)
    stale = sorted(key for key in KNOWN_FAILURES if outcomes["emovit"].get(key, ("",))[0] != "failed")
    if stale:
        warnings.warn(f"known failures that EmoVIT no longer fails; remove them from KNOWN_FAILURES: {stale}")
