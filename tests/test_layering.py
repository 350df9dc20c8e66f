"""The import graph: packages import only the layers below them, never in a circle, and the files a saved model
carries import nothing of the project."""

import ast
from pathlib import Path

import pytest

from testing_utils import REPO_ROOT


# From the bottom up. A module may import its own package and the packages listed before it.
LAYERS = ["emovit_utils", "modeling_emovit", "dataset_builder", "emovit", "scripts"]
SCRIPTS = ["train.py", "evaluate.py", "predict.py", "app.py", "ablation.py"]
# What `save_pretrained` copies into a model folder (the classes' files and their relative imports): loaded from the
# Hub with `trust_remote_code`, they can import only each other.
SHIPPED = ["configuration_emovit", "modeling_emovit", "processing_emovit", "pipeline_emovit", "image_utils"]


def _python_files():
    for layer in LAYERS[:-1]:
        yield from sorted((REPO_ROOT / layer).rglob("*.py"))
    yield from (REPO_ROOT / name for name in SCRIPTS)


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The project modules `path` imports, at any depth of the file (imports inside functions count too)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.add(target)
            # `from package import module` imports a module too
            found.update(f"{target}.{alias.name}" for alias in node.names)
    top = set(LAYERS[:-1])
    return {name for name in found if name.split(".")[0] in top}


def _layer(module: str) -> int:
    top = module.split(".")[0]
    return LAYERS.index(top) if top in LAYERS else LAYERS.index("scripts")


GRAPH = {_module_name(path): _imports(path) for path in _python_files()}


def test_no_module_imports_a_layer_above_its_own():
    upward = [f"{module} -> {target}" for module, targets in GRAPH.items() for target in targets
              if _layer(target) > _layer(module)]
    assert upward == []


def test_no_library_module_imports_a_script():
    assert [m for m, targets in GRAPH.items() if any(t.split(".")[0] in {s[:-3] for s in SCRIPTS} for t in targets)] \
        == []


def test_the_import_graph_has_no_circle():
    modules = {m for m in GRAPH}
    edges = {m: {t for t in GRAPH[m] if t in modules and t != m} for m in modules}
    state, circles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(modules):
        if node not in state:
            visit(node, [node])
    # a package's __init__ importing its own modules is how packages export; it is not a circle between jobs
    circles = [c for c in circles if not any(m == c[0].rpartition(".")[0] or c[0] == m.rpartition(".")[0]
                                             for m in c[1:])]
    assert circles == []


@pytest.mark.parametrize("name", SHIPPED)
def test_what_a_saved_model_carries_imports_only_its_siblings(name):
    targets = GRAPH[f"modeling_emovit.{name}"]
    assert {t for t in targets if not t.startswith("modeling_emovit.")} == set()
    # and never the pipeline, which the model offers without importing it
    if name != "pipeline_emovit":
        assert "modeling_emovit.pipeline_emovit" not in targets


def test_the_model_package_holds_no_project_utility():
    """Writing files, caches, commands and Hub uploads live in emovit_utils; the model package keeps the model's
    own files, its conversion and its tiny preset."""
    files = {p.stem for p in (REPO_ROOT / "modeling_emovit").glob("*.py")}
    assert files == {"__init__", "configuration_emovit", "modeling_emovit", "processing_emovit", "pipeline_emovit",
                     "image_utils", "convert_original_checkpoint", "tiny"}


def test_the_llm_package_stands_alone_and_is_used_through_its_exports():
    """The LLM client imports only itself and the helpers; everything else imports `dataset_builder.llm`, never one
    of its modules."""
    inside = {m: targets for m, targets in GRAPH.items() if m.startswith("dataset_builder.llm")}
    assert inside and {t for targets in inside.values() for t in targets
                       if not t.startswith(("dataset_builder.llm", "emovit_utils"))} == set()
    # `from dataset_builder.llm import ChatClient` lists dataset_builder.llm.ChatClient too: only modules count.
    reaching_in = [f"{m} -> {t}" for m, targets in GRAPH.items() if m not in inside for t in targets
                   if t in inside and t != "dataset_builder.llm"]
    assert reaching_in == []
