"""The layout's promises: imports run one way, the shipped folder is self-contained, `import processing` is free."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import processing

REPO = Path(__file__).resolve().parents[1]
# modeling_mgcm/ files by layer, lowest first: each may import only its own layer and those below it.
MODEL_LAYER = {
    "atomic_files",
    "configuration_mgcm",
    "modeling_mgcm",
    "semantic_augmentation",
    "cross_modal_attention",
    "crf",
    "vision_features",
    "host_reads",
    "weight_files",
    "onnx_export",
    "onnx_model",
}
PROCESSOR_LAYER = {
    "processing_mgcm",
    "tweet_tokenizer",
    "tweet_normalise",
    "word_shape",
    "neighbour_table",
    "windows",
    "window_padding",
}
INFERENCE_LAYER = {
    "pipeline_mgcm",
    "pipeline_batching",
    "pipeline_outputs",
    "pipeline_posts",
    "image_loading",
    "image_sources",
    "knowledge_writer",
}
LAYERS = [MODEL_LAYER, PROCESSOR_LAYER, INFERENCE_LAYER]


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, relative imports resolved against its package."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module
            modules.add(module)
            modules.update(f"{module}.{alias.name}" for alias in node.names)
    return modules


def project_files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (REPO / folder).rglob("*.py"))


def test_the_shipped_folder_imports_nothing_else_of_the_project_and_only_relatively():
    for path in project_files("modeling_mgcm"):
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module]
            else:
                continue
            # Hub remote code follows only same-folder relative imports.
            project = [
                name for name in names if name.split(".")[0] in ("modeling_mgcm", "processing", "examples")
            ]
            assert not project, f"{path.name}:{node.lineno} imports {project}: use a relative import"


def test_model_files_do_not_import_the_processor_and_the_processor_not_the_pipeline():
    for rank, layer in enumerate(LAYERS):
        above = set().union(*LAYERS[rank + 1 :])
        for name in layer:
            imports = imported_modules(REPO / "modeling_mgcm" / f"{name}.py")
            wrong = sorted(module for module in imports if module.removeprefix("modeling_mgcm.") in above)
            assert not wrong, f"modeling_mgcm/{name}.py imports {wrong} from a layer above its own"


def test_every_shipped_file_has_a_layer():
    files = {path.stem for path in (REPO / "modeling_mgcm").glob("*.py")} - {"__init__"}
    assert files == set().union(*LAYERS)


def test_only_training_code_imports_the_training_support():
    users = [
        path
        for path in project_files("modeling_mgcm", "processing")
        if "processing/training/" not in path.as_posix()
        and any(module.startswith("processing.training") for module in imported_modules(path))
    ]
    assert not users, (
        f"imports processing.training outside training: {[str(p.relative_to(REPO)) for p in users]}"
    )


def test_no_module_imports_an_example_script():
    for path in project_files("modeling_mgcm", "processing", "benchmarks", "tests", "examples"):
        text = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "spec_from_file_location":
                call = ast.get_source_segment(text, node)
                assert "examples" not in call, f"{path.name}:{node.lineno} loads an example script: {call}"
        assert not any(module.startswith("examples") for module in imported_modules(path)), path


def test_importing_processing_loads_no_library():
    code = (
        "import sys, processing; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'datasets', 'numpy'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("name", processing.__all__)
def test_every_public_name_of_processing_resolves(name):
    value = getattr(processing, name)
    assert value is not None and name in dir(processing)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'load_tweet_corpora'"):
        processing.load_tweet_corpora  # noqa: B018
