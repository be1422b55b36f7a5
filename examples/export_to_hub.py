#!/usr/bin/env python
"""Turn a trained MGCM folder (the `output_dir` of `examples/train.py`) into a Hub-ready folder.

    python examples/export_to_hub.py outputs/mgcm hub/mgcm-twitter2017
    python examples/export_to_hub.py outputs/mgcm hub/mgcm-twitter2017 \
        --card_template hub_configs/mgcm-offline-minilm/README.md --push_to_hub user/mgcm-twitter2017

The exported folder holds the weights (safetensors), `config.json` with an `auto_map` for `AutoConfig`,
`AutoModel` and `AutoModelForTokenClassification`, the processor (tokenizer, `processor_config.json` with an
`auto_map` for `AutoProcessor`, the neighbour table), the model and processor code as flat files with
relative imports, `results.json` and a model card filled from it. It loads with `trust_remote_code=True`
where neither `modeling_mgcm` nor `processing` is installed.
"""

import argparse
import ast
import importlib
import importlib.util
import json
import re
import shutil
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import transformers
from transformers.utils import CONFIG_NAME, PROCESSOR_NAME

from modeling_mgcm import MGCMConfig, MGCMForTokenClassification, MGCMModel
from processing import MGCMProcessor
from processing.training.model_card import render_model_card, results_table

# The packages of this project: exported code must not import them, since a Hub user does not have them.
PROJECT_PACKAGES = ("modeling_mgcm", "processing")
RESULTS_FILE = "results.json"
CARD_FILE = "README.md"
# Weight files that unpickle when loaded; an export ships safetensors only.
PICKLED_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
# Import names whose pip distribution is named differently.
DISTRIBUTION_OF_MODULE = {"PIL": "pillow"}
CARD_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


class ExportError(ValueError):
    """The training folder, the card template or the output folder cannot be exported as asked."""


# ------------------------------------------------------------------------------------------------------
# Flat code: the project's modules rewritten to import each other relatively, in one folder


def _module_file(module_name: str) -> Path:
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise ExportError(f"cannot find the source file of module {module_name!r}")
    return Path(spec.origin)


def _is_project_module(module_name: str) -> bool:
    return module_name.split(".")[0] in PROJECT_PACKAGES


def _is_package(module_name: str) -> bool:
    return _module_file(module_name).name == "__init__.py"


def _defining_module(package: str, name: str, location: str) -> str:
    """The submodule of `package` that defines `name` (imported as `from package import name`)."""
    value = getattr(importlib.import_module(package), name, None)
    defined_in = getattr(value, "__module__", None)
    if not isinstance(defined_in, str) or not defined_in.startswith(package + "."):
        raise ExportError(
            f"{location}: `from {package} import {name}` cannot be made relative, since {name!r} has no "
            f"defining submodule; import it from its submodule (from {package}.<module> import {name})"
        )
    return defined_in


def _import_targets(node: ast.ImportFrom, module_name: str, location: str) -> dict[str, list[ast.alias]]:
    """Project module -> the names `node` imports from it; empty when `node` imports no project module."""
    if node.level:
        package = module_name if _is_package(module_name) else module_name.rpartition(".")[0]
        if node.module is None:
            raise ExportError(f"{location}: `from . import ...` is not supported; import from the module")
        target = importlib.util.resolve_name("." * node.level + node.module, package)
    elif node.module and _is_project_module(node.module):
        target = node.module
    else:
        return {}
    if not _is_package(target):
        return {target: list(node.names)}
    targets: dict[str, list[ast.alias]] = {}
    for alias in node.names:
        if alias.name == "*":
            raise ExportError(f"{location}: `from {target} import *` cannot be made relative")
        targets.setdefault(_defining_module(target, alias.name, location), []).append(alias)
    return targets


def _relative_import_lines(targets: Mapping[str, list[ast.alias]], indent: str) -> str:
    lines = []
    for target, aliases in targets.items():
        names = ", ".join(alias.name + (f" as {alias.asname}" if alias.asname else "") for alias in aliases)
        lines.append(f"{indent}from .{target.rpartition('.')[2]} import {names}\n")
    return "".join(lines)


def _flatten_module(module_name: str) -> tuple[str, list[str]]:
    """The source of `module_name` with its project imports made flat-relative, and the modules it imports."""
    path = _module_file(module_name)
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines(keepends=True)
    replacements = []
    imported: list[str] = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        location = f"{path}, line {getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            project = [alias.name for alias in node.names if _is_project_module(alias.name)]
            if project:
                raise ExportError(
                    f"{location}: `import {project[0]}` cannot be shipped as remote code; use "
                    f"`from {project[0]} import <name>`"
                )
        elif isinstance(node, ast.ImportFrom):
            targets = _import_targets(node, module_name, location)
            if not targets:
                continue
            imported.extend(targets)
            sibling = node.level == 1 and "." not in node.module
            if sibling and list(targets) == [f"{module_name.rpartition('.')[0]}.{node.module}"]:
                continue  # already `from .<sibling> import ...`, which stays valid in a flat folder
            first_line = lines[node.lineno - 1]
            indent = first_line[: node.col_offset]
            if indent.strip():
                raise ExportError(
                    f"{location}: an import sharing its line with other code cannot be rewritten"
                )
            replacements.append((node.lineno, node.end_lineno, _relative_import_lines(targets, indent)))
    for start, end, text in sorted(replacements, reverse=True):
        lines[start - 1 : end] = [text]
    return "".join(lines), imported


def flat_module_sources(entry_modules: Iterable[str]) -> dict[str, str]:
    """Flat file name -> rewritten source of `entry_modules` and every project module they import.

    Each module becomes `<last name>.py`; imports of project modules become `from .<last name> import ...`
    (an import from a package is resolved to the submodule that defines the name), which is what the
    transformers remote-code loader follows. Raises `ExportError` on imports it cannot rewrite and on two
    modules that would share a file name.
    """
    sources: dict[str, str] = {}
    origin_of_file: dict[str, str] = {}
    pending = list(entry_modules)
    while pending:
        module_name = pending.pop()
        file_name = module_name.rpartition(".")[2] + ".py"
        if file_name in origin_of_file:
            if origin_of_file[file_name] != module_name:
                raise ExportError(
                    f"modules {origin_of_file[file_name]} and {module_name} would both be exported as {file_name}"
                )
            continue
        origin_of_file[file_name] = module_name
        sources[file_name], imported = _flatten_module(module_name)
        pending.extend(imported)
    return dict(sorted(sources.items()))


def third_party_modules(sources: Mapping[str, str]) -> list[str]:
    """Top-level modules the flat files import that are neither the standard library nor the files themselves."""
    local = {file_name.removesuffix(".py") for file_name in sources}
    modules = set()
    for source in sources.values():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return sorted(modules - local - set(sys.stdlib_module_names) - {"__future__"})


def class_reference(cls: type) -> str:
    """`<flat module>.<class>`, the form `auto_map` uses for a class shipped as a flat file."""
    return f"{cls.__module__.rpartition('.')[2]}.{cls.__name__}"


MODEL_AUTO_MAP = {
    "AutoConfig": class_reference(MGCMConfig),
    "AutoModel": class_reference(MGCMModel),
    "AutoModelForTokenClassification": class_reference(MGCMForTokenClassification),
}
PROCESSOR_AUTO_MAP = {"AutoProcessor": class_reference(MGCMProcessor)}
CODE_ENTRY_MODULES = tuple(
    dict.fromkeys(
        cls.__module__ for cls in (MGCMConfig, MGCMModel, MGCMForTokenClassification, MGCMProcessor)
    )
)


# ------------------------------------------------------------------------------------------------------
# The model card


def training_summary(results: Mapping) -> str:
    """One paragraph on the data, backbones and selection of a run, from its `results.json`."""
    run, training = results["run"], results["training"]
    return (
        f"Trained on `{run['dataset']}` for {training['epochs_run']} epoch(s) ({training['optimizer_steps']} "
        f"optimizer steps on {training['num_processes']} process(es)), text encoder `{run['text_model']}`, "
        f"vision backbone `{run.get('vision_model') or 'none'}`, granularities "
        f"{', '.join(run['granularities']) or 'none (text only)'}. The checkpoint kept is epoch "
        f"{training['best_epoch']}, the best on the valid split."
    )


def requirements_line(modules: Iterable[str]) -> str:
    packages = sorted(DISTRIBUTION_OF_MODULE.get(module, module) for module in modules)
    return (
        f"Requirements: {', '.join(f'`{package}`' for package in packages)} "
        f"(exported with transformers {transformers.__version__})."
    )


def remote_code_usage(repo_id: str, requirements: str) -> str:
    """The card's Use section for a folder loaded as remote code."""
    return f"""## Use

The model and processor code ship with the weights: load them with `trust_remote_code=True`, no `mgcm`
install needed. {requirements}

```python
import torch
from transformers import AutoModelForTokenClassification, AutoProcessor

model = AutoModelForTokenClassification.from_pretrained("{repo_id}", trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)
inputs = processor(words=[["Obama", "visits", "Paris"]], captions=["a man waving to a crowd"])
tweet_of_window = inputs.pop("overflow_to_sample_mapping")
first_word_of_window = inputs.pop("window_word_offset")
with torch.no_grad():
    predictions = model(**inputs).predictions  # (windows, words), -100 at padding
tags = processor.merge_windows(predictions, tweet_of_window, first_word_of_window, inputs["word_mask"].sum(1))
print([[model.config.id2label[tag] for tag in tweet] for tweet in tags])
```
"""


def fill_card_template(template: str, values: Mapping[str, str], template_name: str) -> str:
    """Replace each `{{ name }}` of `template` with `values[name]`; an unknown name raises, naming its line."""
    for line_number, line in enumerate(template.splitlines(), start=1):
        for match in CARD_PLACEHOLDER.finditer(line):
            if match.group(1) not in values:
                raise ExportError(
                    f"{template_name}, line {line_number}: unknown placeholder {match.group(0)!r}; "
                    f"known: {', '.join(sorted(values))}"
                )
    return CARD_PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def model_card(results: Mapping, repo_id: str, requirements: str, template: Path | None = None) -> str:
    """The exported card: the template filled from `results`, or the training card with a remote-code Use."""
    if template is not None:
        values = {
            "results_table": results_table(results),
            "training_summary": training_summary(results),
            "repo_id": repo_id,
        }
        card = fill_card_template(template.read_text(encoding="utf-8"), values, str(template))
        return card.rstrip("\n") + f"\n\n{requirements}\n"
    # The training card's Use section imports this project's packages; the export needs none of them.
    card = render_model_card(results)
    head, found, _ = card.partition("\n## Use\n")
    return (head if found else card).rstrip("\n") + "\n\n" + remote_code_usage(repo_id, requirements)


# ------------------------------------------------------------------------------------------------------
# The export


def read_results(model_dir: Path) -> dict:
    path = model_dir / RESULTS_FILE
    if not path.is_file():
        raise ExportError(
            f"{path} does not exist: the model card is filled from the results.json that examples/train.py writes"
        )
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ExportError(f"{path}, line {error.lineno}: not valid JSON ({error.msg})") from error
    missing = [key for key in ("metrics", "run", "training") if key not in results]
    if missing:
        raise ExportError(f"{path}: missing {missing}; expected the results.json of examples/train.py")
    return results


def check_model_dir(model_dir: Path) -> None:
    """Raise `ExportError` unless `model_dir` holds an MGCM config, safetensors weights and a processor."""
    if not model_dir.is_dir():
        raise ExportError(f"{model_dir} is not a folder: pass the output_dir of examples/train.py")
    for file_name in (CONFIG_NAME, PROCESSOR_NAME):
        if not (model_dir / file_name).is_file():
            raise ExportError(
                f"{model_dir / file_name} does not exist: pass the output_dir of examples/train.py"
            )
    model_type = json.loads((model_dir / CONFIG_NAME).read_text(encoding="utf-8")).get("model_type")
    if model_type != MGCMConfig.model_type:
        raise ExportError(
            f"{model_dir / CONFIG_NAME}: model_type is {model_type!r}, not {MGCMConfig.model_type!r}"
        )
    if not any(model_dir.glob("model*.safetensors")):
        pickled = sorted(p.name for p in model_dir.iterdir() if p.suffix in PICKLED_WEIGHT_SUFFIXES)
        raise ExportError(
            f"{model_dir} has no model*.safetensors weights"
            + (f" (only pickled files {pickled}, which are never loaded)" if pickled else "")
        )


def check_output_dir(model_dir: Path, output_dir: Path) -> None:
    if output_dir.resolve() == model_dir.resolve():
        raise ExportError(f"the output folder {output_dir} is the training folder: choose another")
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise ExportError(f"{output_dir} exists and is not an empty folder: choose a new one")


def export_to_hub(
    model_dir: str | Path,
    output_dir: str | Path,
    card_template: str | Path | None = None,
    repo_id: str | None = None,
) -> Path:
    """Write the Hub-ready folder `output_dir` from the training folder `model_dir`; returns `output_dir`.

    Args:
        model_dir: a folder written by `examples/train.py` (model, processor, results.json).
        output_dir: a new (or empty) folder.
        card_template: a model-card template with `{{ results_table }}`, `{{ training_summary }}` and
            `{{ repo_id }}` (see `hub_configs/`); by default the training card with a remote-code Use section.
        repo_id: the Hub repository named in the card's usage example (default: a local path placeholder).
    """
    model_dir, output_dir = Path(model_dir), Path(output_dir)
    check_model_dir(model_dir)
    check_output_dir(model_dir, output_dir)
    results = read_results(model_dir)
    template = None if card_template is None else Path(card_template)
    if template is not None and not template.is_file():
        raise ExportError(f"card template {template} does not exist")
    sources = flat_module_sources(CODE_ENTRY_MODULES)

    model, loading_info = MGCMForTokenClassification.from_pretrained(
        model_dir, use_safetensors=True, output_loading_info=True
    )
    mismatched = {key: value for key, value in loading_info.items() if value}
    if mismatched:
        raise ExportError(f"the weights in {model_dir} do not match its config.json: {mismatched}")
    processor = MGCMProcessor.from_pretrained(model_dir)
    # `MGCMProcessor.to_dict` writes this into processor_config.json, where AutoProcessor looks first.
    processor.auto_map = dict(PROCESSOR_AUTO_MAP)

    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    config_path = output_dir / CONFIG_NAME
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["auto_map"] = dict(MODEL_AUTO_MAP)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    # save_pretrained copied the model's modules as they are; the flat sources replace them.
    for stale in output_dir.glob("*.py"):
        stale.unlink()
    for file_name, source in sources.items():
        (output_dir / file_name).write_text(source, encoding="utf-8")

    shutil.copyfile(model_dir / RESULTS_FILE, output_dir / RESULTS_FILE)
    requirements = requirements_line(third_party_modules(sources))
    card = model_card(results, repo_id or "path/to/this/folder", requirements, template)
    (output_dir / CARD_FILE).write_text(card, encoding="utf-8")
    return output_dir


def push_folder_to_hub(folder: Path, repo_id: str, private: bool) -> str:
    """Upload `folder` to the model repository `repo_id` (created if needed); returns the commit URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import LocalTokenNotFoundError

    api = HfApi()
    try:
        api.whoami()
    except LocalTokenNotFoundError as error:
        raise ExportError("--push_to_hub needs a Hub login: run `hf auth login` or set HF_TOKEN") from error
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(
        folder_path=folder, repo_id=repo_id, repo_type="model", commit_message="Upload MGCM model"
    )
    return commit.commit_url


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dir", type=Path, help="output_dir of examples/train.py")
    parser.add_argument("output_dir", type=Path, help="the Hub-ready folder to write (new or empty)")
    parser.add_argument(
        "--card_template", type=Path, help="model-card template, e.g. hub_configs/<name>/README.md"
    )
    parser.add_argument(
        "--push_to_hub", metavar="REPO_ID", help="upload the folder to this Hub model repository"
    )
    parser.add_argument(
        "--private", action="store_true", help="with --push_to_hub: create a private repository"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    try:
        folder = export_to_hub(args.model_dir, args.output_dir, args.card_template, args.push_to_hub)
        print(f"exported {args.model_dir} to {folder}")
        if args.push_to_hub:
            print(f"uploaded: {push_folder_to_hub(folder, args.push_to_hub, args.private)}")
    except ExportError as error:
        sys.exit(f"export_to_hub: {error}")
    return folder


__all__ = [
    "CODE_ENTRY_MODULES",
    "ExportError",
    "MODEL_AUTO_MAP",
    "PROCESSOR_AUTO_MAP",
    "check_model_dir",
    "class_reference",
    "export_to_hub",
    "fill_card_template",
    "flat_module_sources",
    "main",
    "model_card",
    "push_folder_to_hub",
    "third_party_modules",
    "training_summary",
]


if __name__ == "__main__":
    main()
