"""examples/emovit_quickstart.ipynb: stored without outputs, and run top to bottom in a kernel on the tiny model, with
every tagged cell's output checked against what the model gives in-process."""

import ast
import importlib.util
import json
import re
import sys
from pathlib import Path

import nbformat
import pytest

from modeling_emovit import EmoVitProcessor
from modeling_emovit.image_utils import open_image
from modeling_emovit.modeling_emovit import agreement_of

from testing_utils import REPO_ROOT, subprocess_env


NOTEBOOK = REPO_ROOT / "examples" / "emovit_quickstart.ipynb"
EXAMPLE_IMAGES = sorted(path.name for path in (REPO_ROOT / "examples" / "images").iterdir())
AGREEMENTS = {"agrees", "names_other", "names_none", "no_label"}
HAS_BITSANDBYTES = importlib.util.find_spec("bitsandbytes") is not None


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells
    dirty = [cell.id for cell in code_cells if cell.outputs or cell.execution_count is not None]
    assert not dirty, f"cells {dirty} are stored with outputs; clear them (Kernel > Restart & Clear Output) and save"
    # Front ends add per-cell and per-notebook state (Colab's cell ids, widget state, execution timing) that only
    # makes diffs noisy.
    extra_cell_metadata = {cell.id: sorted(set(cell.metadata) - {"tags"}) for cell in notebook.cells
                           if set(cell.metadata) - {"tags"}}
    assert not extra_cell_metadata
    assert set(notebook.metadata) <= {"kernelspec", "language_info"}


@pytest.fixture(scope="module")
def executed(tiny_dir, tmp_path_factory):
    """The notebook run on the tiny model from examples/ (as Jupyter opens it), its outputs keyed by cell tag, and
    the folder it wrote its predictions to. With bitsandbytes installed the 4-bit cell runs on the CPU."""
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient

    # A kernel spec of this interpreter, so the kernel is the test's Python whatever kernels the user has installed.
    kernels = tmp_path_factory.mktemp("kernels")
    (kernels / "emovit-test").mkdir()
    (kernels / "emovit-test" / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "EmoVIT test", "language": "python"}))
    kernel_manager = KernelManager(kernel_name="emovit-test",
                                   kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))

    output_dir = tmp_path_factory.mktemp("notebook-output")
    env = subprocess_env(EMOVIT_MODEL=str(tiny_dir), EMOVIT_OUTPUT_DIR=str(output_dir), HF_HUB_OFFLINE="1",
                         TOKENIZERS_PARALLELISM="false")
    env.pop("EMOVIT_DTYPE", None)
    if HAS_BITSANDBYTES:
        env["EMOVIT_4BIT_ON_CPU"] = "1"
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, km=kernel_manager, timeout=300,
                            resources={"metadata": {"path": str(REPO_ROOT / "examples")}})
    client.execute(env=env)
    cells = {cell.metadata["tags"][0]: cell for cell in notebook.cells if cell.metadata.get("tags")}
    return cells, output_dir


def stdout(cell) -> str:
    return "".join(output.text for output in cell.outputs if output.output_type == "stream" and output.name == "stdout")


def result(cell):
    """The value of the cell's last expression (a literal: lists, dicts, strings, numbers)."""
    (value,) = [output.data["text/plain"] for output in cell.outputs if output.output_type == "execute_result"]
    return ast.literal_eval(value)


@pytest.fixture(scope="module")
def labels(tiny_dir):
    return list(EmoVitProcessor.from_pretrained(tiny_dir).emotion_labels)


@pytest.mark.integration
def test_setup_moves_to_the_repository_root_and_installs_nothing(executed):
    cells, _ = executed
    assert stdout(cells["setup"]).strip() == f"working in {REPO_ROOT}"
    assert "device cpu" in stdout(cells["model"])


@pytest.mark.integration
def test_pipeline_cell_gives_the_models_top_three(executed, tiny_model, tiny_processor, labels):
    cells, _ = executed
    assert stdout(cells["pipeline"]).strip() == f"the model's labels: {', '.join(labels)}"
    top3 = result(cells["pipeline"])
    scores = tiny_model.classify([open_image(str(REPO_ROOT / "examples/images/sadness.png"))], tiny_processor).scores[0]
    expected = sorted(zip(labels, scores.tolist()), key=lambda pair: -pair[1])[:3]
    assert [entry["label"] for entry in top3] == [label for label, _ in expected]
    assert [entry["score"] for entry in top3] == pytest.approx([score for _, score in expected], abs=1e-5)


@pytest.mark.integration
def test_explain_cells_report_label_explanation_and_agreement(executed, labels):
    cells, _ = executed
    first, second = stdout(cells["explain-pipeline"]).splitlines()[:2]
    assert re.match(r"(\w+) \((0|1)\.\d\d\): ", first).group(1) in labels
    assert second.split(": ")[-1] in AGREEMENTS

    rows = result(cells["explain"])
    assert [row["image"] for row in rows] == EXAMPLE_IMAGES
    for row in rows:
        assert row["label"] in labels
        assert set(row["mentioned"]) <= set(labels)
        assert row["agreement"] == agreement_of(row["label"], row["mentioned"])
    printed = stdout(cells["explain"])
    names_other = [row["image"] for row in rows if row["agreement"] == "names_other"]
    assert f"explanations naming another emotion: {names_other}" in printed


@pytest.mark.integration
def test_folder_cell_predicts_every_example_image(executed, labels):
    cells, output_dir = executed
    predicted = result(cells["folder"])
    assert sorted(predicted) == EXAMPLE_IMAGES
    assert set(predicted.values()) <= set(labels)
    lines = [json.loads(line) for line in (output_dir / "predictions.jsonl").read_text().splitlines()]
    assert {Path(line["path"]).name: line["label"] for line in lines} == predicted
    assert all(len(line["scores"]) == 3 for line in lines)


@pytest.mark.integration
@pytest.mark.skipif(not HAS_BITSANDBYTES, reason="bitsandbytes is not installed; the 4-bit cell needs it")
def test_4bit_cell_loads_a_smaller_model_that_still_predicts(executed, labels):
    cells, _ = executed
    printed = stdout(cells["quantized"])
    footprint = re.search(r"memory footprint: ([\d.]+) MiB in float32, ([\d.]+) MiB in 4 bits", printed)
    assert footprint, printed
    assert float(footprint.group(2)) < float(footprint.group(1))
    unchanged = re.search(r"(\d+) of (\d+) labels unchanged in 4 bits", printed)
    assert int(unchanged.group(2)) == len(EXAMPLE_IMAGES)
    top3 = ast.literal_eval(printed.strip().splitlines()[-1])
    assert len(top3) == 3 and {entry["label"] for entry in top3} <= set(labels)
