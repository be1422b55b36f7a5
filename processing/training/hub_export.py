"""Export a trained MGCM folder (the `output_dir` of `examples/train.py`) as a Hub-ready folder of remote code.

The folder is written by transformers' own saving, nothing rewritten by hand:
- `Pipeline.save_pretrained` of a `MultimodalNERPipeline` names the pipeline in `config.json`
  (`custom_pipelines`: task "multimodal-ner", class `pipeline_mgcm.MultimodalNERPipeline`), copies
  `pipeline_mgcm.py` with the sibling files it imports relatively (`custom_object_save`), and saves the model:
  safetensors weights, `config.json` with the `auto_map` of `AutoConfig` and
  `AutoModelForTokenClassification`, and their code files;
- `custom_object_save` of the base model adds `AutoModel` to that `auto_map`;
- `MGCMProcessor.save_pretrained` writes the tokenizer, the neighbour table and `processor_config.json` with
  its `AutoProcessor` `auto_map`, and copies `processing_mgcm.py` and its siblings (`custom_object_save`, as
  `ProcessorMixin` does).

The code files are `modeling_mgcm/`'s, which import each other only relatively (the folder is built to ship as
it is). So `pipeline(model=folder_or_hub_id, trust_remote_code=True)` tags posts, and the Auto classes load
the model and processor, where `mgcm` is not installed. The folder also holds `results.json` and a model card
(`huggingface_hub.ModelCard`) filled from it, both without any path of the training machine: the corpus is
named by its name, the encoder by its Hub id (`base_model`), local files and folders by their last part.
"""

import copy
import dataclasses
import json
import logging
import re
import shutil
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import transformers
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers.dynamic_module_utils import custom_object_save, get_imports
from transformers.utils import CONFIG_NAME, PROCESSOR_NAME

from modeling_mgcm import MGCMConfig, MGCMForTokenClassification, MGCMProcessor, MultimodalNERPipeline
from modeling_mgcm.atomic_files import write_json_atomically
from modeling_mgcm.onnx_export import (
    MODEL_FILE,
    ONNX_SUBFOLDER,
    QUANTIZED_FILE,
    VISION_FILE,
    folder_fingerprint,
    processor_image_size,
    write_onnx_files,
)
from modeling_mgcm.onnx_model import StaleOnnxError, check_onnx_file
from modeling_mgcm.pipeline_mgcm import TASK_NAME
from processing.training.arguments import PATH_ARGUMENTS
from processing.training.model_card import (
    CARD_FILE,
    RESULTS_FILE,
    base_card_data,
    card_names,
    card_text,
    hub_model_id,
    is_local_path,
    model_card_body,
    results_table,
    set_run_metadata,
)

logger = logging.getLogger(__name__)

# Weight files that unpickle when loaded; an export ships safetensors only.
PICKLED_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
# Import names whose pip distribution is named differently.
DISTRIBUTION_OF_MODULE = {"PIL": "pillow"}
CARD_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


class ExportError(ValueError):
    """The training folder, the card template or the output folder cannot be exported as asked."""


# ------------------------------------------------------------------------------------------------------
# The model card


def remote_code_imports(folder: Path) -> list[str]:
    """The packages the code files of `folder` import, as transformers' `check_imports` reads them before it
    runs remote code (imports inside `try:` are skipped): neither the standard library nor the files themselves."""
    code_files = sorted(Path(folder).glob("*.py"))
    local = {path.stem for path in code_files}
    modules = {module for path in code_files for module in get_imports(path)}
    return sorted(modules - local - set(sys.stdlib_module_names) - {"__future__"})


def example_post(config: MGCMConfig) -> str:
    """A post for the card's pipeline example, with an image and a caption where `config`'s model reads them."""
    post = {"text": "Obama visits Paris"}
    if config.use_image:
        post["image"] = "photo.jpg"
    if "caption" in config.text_sources:
        post["caption"] = "a man waving to a crowd"
    return json.dumps(post)


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


def remote_code_usage(repo_id: str, requirements: str, post: str) -> str:
    """The card's Use section for a folder loaded as remote code; `post` is the pipeline example's input."""
    return f"""## Use

The pipeline, model and processor code ship with the weights: load them with `trust_remote_code=True`, no
`mgcm` install needed. {requirements}

```python
from transformers import pipeline

tagger = pipeline(model="{repo_id}", trust_remote_code=True)  # the "{TASK_NAME}" pipeline
tagger({post})
```

Or the model and processor themselves:

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


def onnx_usage(repo_id: str, onnx_files: Iterable[Path]) -> str:
    """The card's paragraph on the shipped ONNX files."""
    names = [Path(path).name for path in onnx_files]
    listed = ", ".join(f"`{ONNX_SUBFOLDER}/{name}`" for name in names)
    int8 = ' (add `"int8": True` for the int8 file)' if QUANTIZED_FILE in names else ""
    return f"""### ONNX Runtime

This folder also holds the model exported to ONNX ({listed}). With `onnxruntime` installed, the pipeline runs
it without loading the torch weights{int8}:

```python
tagger = pipeline(model="{repo_id}", trust_remote_code=True, model_kwargs={{"runtime": "onnx"}})
```
"""


def fill_card_template(template: str, values: Mapping[str, str], template_name: str) -> str:
    """Replace each `{{ name }}` of `template` with `values[name]`; an unknown name raises, naming its line."""
    # Not ModelCard.from_template: Jinja renders an unknown (misspelt) placeholder as nothing, silently.
    for line_number, line in enumerate(template.splitlines(), start=1):
        for match in CARD_PLACEHOLDER.finditer(line):
            if match.group(1) not in values:
                raise ExportError(
                    f"{template_name}, line {line_number}: unknown placeholder {match.group(0)!r}; "
                    f"known: {', '.join(sorted(values))}"
                )
    return CARD_PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def public_path(value: str, may_be_hub_id: bool = False) -> str:
    """A file or folder by its last part (a Hub id, where `may_be_hub_id`, as it is)."""
    if may_be_hub_id and hub_model_id(value):
        return value
    return Path(value).name or value


def public_results(results: Mapping, dataset_name: str) -> dict:
    """A copy of `results` that names no path of the training machine: the corpus by `dataset_name`, the
    backbones by their Hub id or folder name, the text-source files and the path flags of `run.args`
    (`PATH_ARGUMENTS`) by their last part."""
    public = copy.deepcopy(dict(results))
    run = public["run"]
    run["dataset"] = dataset_name
    for key in ("text_model", "vision_model"):
        if is_local_path(run.get(key)):
            run[key] = public_path(run[key])
    for source in run.get("text_sources") or []:
        if source.get("file"):
            source["file"] = public_path(source["file"])
    arguments = run.get("args") or {}
    for name in PATH_ARGUMENTS:
        value, models = arguments.get(name), name in ("text_model", "vision_model")
        if isinstance(value, str):
            arguments[name] = public_path(value, models)
        elif isinstance(value, list):  # --text_source NAME=FILE ...
            pairs = (item.partition("=") for item in value)
            arguments[name] = [f"{key}{equals}{public_path(path)}" for key, equals, path in pairs]
    return public


def template_card(template: Path, values: Mapping[str, str], requirements: str) -> ModelCard:
    """The card template `template` filled with `values`, the requirements line appended."""
    text = fill_card_template(template.read_text(encoding="utf-8"), values, str(template))
    try:
        return ModelCard(text.rstrip("\n") + f"\n\n{requirements}\n")
    except (ValueError, yaml.YAMLError) as error:
        raise ExportError(f"{template}: its YAML metadata block does not parse: {error}") from error


def model_card(
    results: Mapping,
    repo_id: str | None,
    requirements: str,
    post: str,
    template: Path | None = None,
    base_model: list[str] | None = None,
    dataset_name: str | None = None,
) -> str:
    """The exported card of the training folder's `results`, naming no path of the training machine.

    Its metadata holds the run's scores, the dataset (`dataset_name`, default: the corpus folder's name) and
    the models it derives from: `base_model`, else the template's, else the run's encoder and vision backbone
    where they are Hub ids (a local encoder folder is left out, with a warning). Its body is `template` filled
    from `results`, or the training card's body with a remote-code Use section whose pipeline example tags
    `post`; `repo_id` is the repository the usage examples load.
    """
    names = card_names(results, dataset_name, base_model, repo_id.split("/")[-1] if repo_id else None)
    public = public_results(results, names.dataset_name)
    repo_id = repo_id or "path/to/this/folder"
    if template is not None:
        values = {
            "results_table": results_table(public),
            "training_summary": training_summary(public),
            "repo_id": repo_id,
        }
        card = template_card(template, values, requirements)
        data, body = card.data, card.text
        if not data.to_dict():
            data = base_card_data()
        template_base_model = data.get("base_model")
        if base_model is None and template_base_model:
            models = [template_base_model] if isinstance(template_base_model, str) else template_base_model
            names = dataclasses.replace(names, base_model=tuple(models))
    else:
        data = base_card_data()
        # The training card's Use section imports this project's packages; the export needs none of them.
        head, _, _ = model_card_body(public, names).partition("\n## Use\n")
        body = head.rstrip("\n") + "\n\n" + remote_code_usage(repo_id, requirements, post)
    encoder = results["run"].get("text_model")
    if not names.base_model and is_local_path(encoder):
        logger.warning(
            "the card names no base_model: the text encoder was the local folder %s, which is no Hub id; "
            "give --base_model with the Hub id of the model it holds",
            encoder,
        )
    return card_text(set_run_metadata(data, results, names), body)


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


def save_remote_code_folder(
    model: MGCMForTokenClassification, processor: MGCMProcessor, output_dir: Path
) -> None:
    """Save `model`, `processor` and the "multimodal-ner" pipeline over them into `output_dir` with their code.

    transformers copies each registered class's file and the sibling files it imports relatively: the model
    classes and the processor are marked for `auto_map` in `modeling_mgcm/__init__.py`, the pipeline is the
    task registered at the end of `pipeline_mgcm.py`. The pipeline's save also writes the tokenizer and the
    image processor alone (`preprocessor_config.json`), as any transformers pipeline folder holds them.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    # The head's save names AutoConfig and AutoModelForTokenClassification; the base model is an Auto class too.
    custom_object_save(model.base_model, output_dir, config=model.config)
    tagger = MultimodalNERPipeline(model=model, processor=processor, task=TASK_NAME, device="cpu")
    tagger.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)  # with its code and AutoProcessor entry


def carry_onnx_files(
    model: MGCMForTokenClassification, model_dir: Path, output_dir: Path, export: bool, int8: bool
) -> list[Path]:
    """The ONNX files of the Hub folder: exported from `model` (with `export` or `int8`), else the training
    folder's own copied when they are fresh for its weights, and so for the export's (the same tensors saved
    again, byte for byte, checked). Stale or unreadable ones are left out with a warning. Returns the files."""
    target = output_dir / ONNX_SUBFOLDER
    if export or int8:
        weights, config_digest = folder_fingerprint(output_dir)
        image_size = processor_image_size(output_dir / PROCESSOR_NAME)
        return write_onnx_files(model, target, weights, config_digest, int8=int8, image_size=image_size)
    source = model_dir / ONNX_SUBFOLDER
    names = [name for name in (MODEL_FILE, QUANTIZED_FILE, VISION_FILE) if (source / name).is_file()]
    if not names:
        return []
    try:
        for name in names:
            check_onnx_file(source / name, model_dir)
            check_onnx_file(source / name, output_dir)
    except (StaleOnnxError, ImportError) as error:
        logger.warning("the ONNX files of %s are left out of the export: %s", model_dir, error)
        return []
    target.mkdir()
    for name in names:
        shutil.copy2(source / name, target / name)
    return [target / name for name in names]


def export_to_hub(
    model_dir: str | Path,
    output_dir: str | Path,
    card_template: str | Path | None = None,
    repo_id: str | None = None,
    base_model: list[str] | None = None,
    dataset_name: str | None = None,
    export_onnx: bool = False,
    int8: bool = False,
) -> Path:
    """Write the Hub-ready folder `output_dir` from the training folder `model_dir`; returns `output_dir`.

    Args:
        model_dir: a folder written by `examples/train.py` (model, processor, results.json).
        output_dir: a new (or empty) folder.
        card_template: a model-card template with `{{ results_table }}`, `{{ training_summary }}` and
            `{{ repo_id }}` (see `hub_configs/`); by default the training card with a remote-code Use section.
        repo_id: the Hub repository named in the card's usage example (default: a local path placeholder).
        base_model: the Hub ids of the models the run started from (default: the template's, else the run's
            encoder and vision backbone where they are Hub ids; a local encoder folder is not named).
        dataset_name: the dataset the card names (default: Twitter-2015/2017 from the corpus folder's name,
            else that name).
        export_onnx: export the ONNX files (`onnx/model.onnx`, the vision backbone) into the folder; without it
            the training folder's fresh ONNX files are copied (`carry_onnx_files`).
        int8: also the int8 file `onnx/model_quantized.onnx` (implies `export_onnx`).

    The card and `results.json` name no path of the training machine (see `public_results`).
    """
    model_dir, output_dir = Path(model_dir), Path(output_dir)
    for model in base_model or []:
        try:
            validate_repo_id(model)
        except HFValidationError as error:
            raise ExportError(f"--base_model {model!r} is not a Hub model id ({error})") from error
    check_model_dir(model_dir)
    check_output_dir(model_dir, output_dir)
    results = read_results(model_dir)
    template = None if card_template is None else Path(card_template)
    if template is not None and not template.is_file():
        raise ExportError(f"card template {template} does not exist")

    model, loading_info = MGCMForTokenClassification.from_pretrained(
        model_dir, use_safetensors=True, output_loading_info=True
    )
    mismatched = {key: value for key, value in loading_info.items() if value}
    if mismatched:
        raise ExportError(f"the weights in {model_dir} do not match its config.json: {mismatched}")
    processor = MGCMProcessor.from_pretrained(model_dir)

    save_remote_code_folder(model, processor, output_dir)
    onnx_files = carry_onnx_files(model, model_dir, output_dir, export_onnx, int8)
    requirements = requirements_line(remote_code_imports(output_dir))
    post = example_post(model.config)
    card = model_card(results, repo_id, requirements, post, template, base_model, dataset_name)
    if onnx_files:
        card = card.rstrip("\n") + "\n\n" + onnx_usage(repo_id or "path/to/this/folder", onnx_files)
    (output_dir / CARD_FILE).write_text(card, encoding="utf-8")
    dataset = card_names(results, dataset_name).dataset_name
    write_json_atomically(output_dir / RESULTS_FILE, public_results(results, dataset))
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


__all__ = [
    "ExportError",
    "PICKLED_WEIGHT_SUFFIXES",
    "carry_onnx_files",
    "check_model_dir",
    "example_post",
    "export_to_hub",
    "fill_card_template",
    "model_card",
    "onnx_usage",
    "public_results",
    "push_folder_to_hub",
    "remote_code_imports",
    "save_remote_code_folder",
    "training_summary",
]
