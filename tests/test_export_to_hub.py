"""Hub packaging: the ready-made configurations of `hub_configs/` and the export
(`processing.training.hub_export`, command line `examples/export_to_hub.py`), whose folder must load as remote
code, as Auto classes and as a pipeline, in a process that cannot import this project, and predict exactly as
the original."""

import importlib.util
import json
import logging
import math
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from clean_process import LOAD_EXPORTED_MODEL, run_clean_script
from huggingface_hub import EvalResult, ModelCard
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from training_runs import fake_results
from transformers import AutoConfig, AutoModelForTokenClassification, AutoProcessor, pipeline
from transformers.dynamic_module_utils import get_relative_imports

import modeling_mgcm  # noqa: F401  (registers the Auto classes and the pipeline task)
import processing
from modeling_mgcm import (
    MGCMConfig,
    MGCMForTokenClassification,
    MGCMProcessor,
    MultimodalNERPipeline,
    extract_image_features,
)
from modeling_mgcm.pipeline_mgcm import TASK_NAME
from processing.text.neighbour_search import neighbour_table_from_embeddings
from processing.training import hub_export
from processing.training.model_card import hub_model_id

REPO = Path(__file__).resolve().parents[1]
MODELING_DIR = Path(modeling_mgcm.__file__).parent
OFFLINE_MINILM = Path("/root/.cache/mgcm-offline-models/all-MiniLM-L6-v2")
WINDOW_KEYS = ("overflow_to_sample_mapping", "window_word_offset")


def load_script(path: Path, name: str):
    """Import a script of hub_configs/ (not a package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_hub_configs = load_script(REPO / "hub_configs" / "make_hub_configs.py", "make_hub_configs")
HUB_CONFIG_NAMES = [configuration.name for configuration in make_hub_configs.hub_configurations()]


@pytest.fixture(scope="module")
def training_dir(tiny_mgcm_dir, tmp_path_factory) -> Path:
    """A copy of the tiny MGCM folder with the results.json of a training run."""
    folder = tmp_path_factory.mktemp("train-output") / "run"
    shutil.copytree(tiny_mgcm_dir, folder)
    (folder / "results.json").write_text(json.dumps(fake_results()), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def exported_dir(training_dir, tmp_path_factory) -> Path:
    """The Hub folder exported from `training_dir` by the command line, `examples/export_to_hub.py`."""
    output = tmp_path_factory.mktemp("export") / "mgcm-hub"
    completed = subprocess.run(
        [sys.executable, str(REPO / "examples" / "export_to_hub.py"), str(training_dir), str(output)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert f"exported {training_dir} to {output}" in completed.stdout
    return output


# ------------------------------------------------------------------------------------------------------
# The test that matters: remote code in a clean process


def fixed_batch(folder: Path) -> dict:
    """Three tweets with images (one absent), objects, captions (one empty); the long one spans two windows."""
    rng = np.random.default_rng(5)
    image_paths = []
    for index, size in enumerate([(48, 40), (64, 64)]):
        path = folder / f"image_{index}.png"
        Image.fromarray(rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)).save(path)
        image_paths.append(str(path))
    long_tweet = ("Jordan visits Phoenix with Obama in Paris at the photo " * 4).split()
    return {
        "words": [["Obama", "visits", "Paris"], long_tweet, ["photo", "of", "Jordan", "#Phoenix", "@obama"]],
        "images": [image_paths[0], None, image_paths[1]],
        "objects": [
            [{"label": "person", "score": 0.9}, {"label": "car", "score": 0.8}],
            [],
            [
                {"label": "dog", "score": 0.7},
                {"label": "person", "score": 0.95},
                {"label": "cup", "score": 0.5},
            ],
        ],
        "captions": ["a man waving to a crowd", "", "a dog in front of a logo"],
    }


# Runs in the clean process: only the standard library and site-packages are importable, not this project.
CLEAN_PROCESS_SCRIPT = LOAD_EXPORTED_MODEL + textwrap.dedent(
    """
    from PIL import Image

    images = [None if path is None else Image.open(path).convert("RGB") for path in batch["images"]]
    inputs = processor(words=batch["words"], images=images, objects=batch["objects"], captions=batch["captions"])
    model_inputs = {key: value for key, value in inputs.items() if key not in ("overflow_to_sample_mapping", "window_word_offset")}
    with torch.no_grad():
        output = model(**model_inputs)
        marginals = model.crf.marginals(output.logits, inputs["word_mask"].bool())
    tensors = {"inputs." + key: value.contiguous() for key, value in inputs.items()}
    tensors.update(logits=output.logits, predictions=output.predictions, marginals=marginals)
    save_file(tensors, result_file)
    project_modules = sorted(m for m in sys.modules if m.split(".")[0] in ("processing", "modeling_mgcm"))
    print(json.dumps({"model": type(model).__module__, "processor": type(processor).__module__,
                      "project_modules": project_modules}))
    """
)


def test_exported_folder_loads_in_a_clean_process_with_identical_predictions(
    exported_dir, tiny_mgcm_dir, tmp_path, single_thread
):
    batch = fixed_batch(tmp_path)
    (tmp_path / "batch.json").write_text(json.dumps(batch), encoding="utf-8")
    work_dir = tmp_path / "elsewhere"
    completed = run_clean_script(
        CLEAN_PROCESS_SCRIPT,
        [str(exported_dir), str(tmp_path / "batch.json"), str(tmp_path / "remote.safetensors")],
        work_dir,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    loaded = json.loads(completed.stdout.strip().splitlines()[-1])
    # The classes came from the exported files, copied into the dynamic-module cache, not from this project.
    assert loaded["model"].startswith("transformers_modules.") and loaded["model"].endswith(".modeling_mgcm")
    assert loaded["processor"].startswith("transformers_modules.") and loaded["processor"].endswith(
        ".processing_mgcm"
    )
    assert loaded["project_modules"] == []
    assert (work_dir / "modules" / "transformers_modules").is_dir()

    model = AutoModelForTokenClassification.from_pretrained(tiny_mgcm_dir).eval()
    processor = AutoProcessor.from_pretrained(tiny_mgcm_dir)
    assert type(model) is MGCMForTokenClassification and type(processor) is MGCMProcessor
    images = [None if path is None else Image.open(path).convert("RGB") for path in batch["images"]]
    inputs = processor(
        words=batch["words"], images=images, objects=batch["objects"], captions=batch["captions"]
    )
    with torch.no_grad():
        output = model(**{key: value for key, value in inputs.items() if key not in WINDOW_KEYS})
        marginals = model.crf.marginals(output.logits, inputs["word_mask"].bool())

    # The batch really exercises every input: two windows for the long tweet, an image present and absent,
    # objects, a caption present and absent, neighbour vectors.
    assert inputs["overflow_to_sample_mapping"].tolist().count(1) >= 2
    assert inputs["image_mask"].tolist() == [1] + [0] * (len(inputs["image_mask"]) - 2) + [1]
    assert inputs["object_mask"].sum() > 0 and inputs["caption_attention_mask"][1:-1].sum() == 0
    assert inputs["caption_attention_mask"][0].sum() > 0 and inputs["neighbour_weights"].abs().sum() > 0

    remote = load_file(str(tmp_path / "remote.safetensors"))
    assert sorted(key for key in remote if key.startswith("inputs.")) == sorted(
        "inputs." + key for key in inputs
    )
    for key, value in inputs.items():
        assert torch.equal(remote["inputs." + key], value), key
    assert torch.equal(remote["predictions"], output.predictions)
    assert torch.equal(remote["logits"], output.logits)
    assert torch.equal(remote["marginals"], marginals)


def fixed_posts(folder: Path) -> list[dict]:
    """Posts as a pipeline user writes them: text with an image and objects, text with a caption and no image,
    and a long text that spans two windows."""
    batch = fixed_batch(folder)
    return [
        {"text": "Obama visits Paris", "image": batch["images"][0], "objects": batch["objects"][0]},
        {"text": " ".join(batch["words"][1]), "caption": "a man waving to a crowd"},
        {
            "text": "photo of Jordan #Phoenix @obama",
            "image": batch["images"][2],
            "caption": batch["captions"][2],
        },
    ]


# Runs in the clean process: the exported folder as a pipeline, the task named and, as a Hub user would write
# it, inferred from the folder's config.json.
CLEAN_PIPELINE_SCRIPT = textwrap.dedent(
    """
    import json, sys

    import torch
    from transformers import pipeline

    exported, posts_file = sys.argv[1:3]
    torch.set_num_threads(1)
    posts = json.load(open(posts_file))
    named = pipeline("multimodal-ner", model=exported, trust_remote_code=True)
    tagger = pipeline(model=exported, trust_remote_code=True)
    project_modules = sorted(m for m in sys.modules if m.split(".")[0] in ("processing", "modeling_mgcm"))
    print(json.dumps({
        "task": tagger.task,
        "pipeline": type(tagger).__module__,
        "model": type(tagger.model).__module__,
        "processor": type(tagger.processor).__module__,
        "project_modules": project_modules,
        "words": tagger(posts, aggregation="words"),
        "named_entities": named(posts),
    }))
    """
)


def test_exported_folder_is_a_pipeline_in_a_clean_process_with_identical_entities(
    exported_dir, tagger, tmp_path, single_thread
):
    """`pipeline(model=folder, trust_remote_code=True)`, no task given, is the "multimodal-ner" pipeline of
    the folder's own code, and tags posts (text, image, objects, caption) exactly as the installed package."""
    posts = fixed_posts(tmp_path)
    (tmp_path / "posts.json").write_text(json.dumps(posts), encoding="utf-8")
    completed = run_clean_script(
        CLEAN_PIPELINE_SCRIPT, [str(exported_dir), str(tmp_path / "posts.json")], tmp_path / "elsewhere"
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    remote = json.loads(completed.stdout.strip().splitlines()[-1])
    assert remote["task"] == TASK_NAME
    for key, module in (
        ("pipeline", "pipeline_mgcm"),
        ("model", "modeling_mgcm"),
        ("processor", "processing_mgcm"),
    ):
        assert remote[key].startswith("transformers_modules.") and remote[key].endswith("." + module), key
    assert remote["project_modules"] == []

    # The installed package's pipeline over the folder the export was made from.
    assert type(tagger).__module__ == "modeling_mgcm.pipeline_mgcm"
    expected = json.loads(json.dumps(tagger(posts, aggregation="words")))
    assert remote["words"] == expected
    assert remote["named_entities"] == [post["entities"] for post in expected]
    # The comparison has something to compare: entities, every word of the long post, images read.
    assert any(post["entities"] for post in expected)
    assert len(expected[1]["words"]) == len(posts[1]["text"].split())
    assert [post["image_error"] for post in expected] == [None, None, None]


def test_the_installed_package_opens_an_exported_folder_with_its_own_classes(exported_dir, tagger, tmp_path):
    """With mgcm installed, the folder's `custom_pipelines` would make transformers ask for remote code even
    for the task by name; naming the installed class runs the installed code, no remote code."""
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        pipeline(TASK_NAME, model=str(exported_dir), device="cpu")
    installed = pipeline(
        TASK_NAME, model=str(exported_dir), pipeline_class=MultimodalNERPipeline, device="cpu"
    )
    assert type(installed.model) is MGCMForTokenClassification and type(installed.processor) is MGCMProcessor
    posts = fixed_posts(tmp_path)
    assert installed(posts) == tagger(posts)


def test_mgcm_predict_opens_an_exported_folder(exported_dir, tagger, capsys):
    """`mgcm-predict --model <exported folder>` runs the installed pipeline, without asking for remote code."""
    from processing.predict_cli import main

    assert main(["--model", str(exported_dir), "--text", "Jordan visits Phoenix", "--no_progress"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["entities"] == tagger("Jordan visits Phoenix")


# ------------------------------------------------------------------------------------------------------
# What the exported folder holds


def test_export_writes_auto_maps_the_pipeline_the_code_safetensors_and_a_filled_card(
    exported_dir, training_dir
):
    config = json.loads((exported_dir / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_mgcm.MGCMConfig",
        "AutoModel": "modeling_mgcm.MGCMModel",
        "AutoModelForTokenClassification": "modeling_mgcm.MGCMForTokenClassification",
    }
    assert config["custom_pipelines"] == {
        TASK_NAME: {
            "impl": "pipeline_mgcm.MultimodalNERPipeline",
            "pt": ["AutoModelForTokenClassification"],
            "type": "multimodal",
        }
    }
    processor_config = json.loads((exported_dir / "processor_config.json").read_text())
    assert processor_config["auto_map"] == {"AutoProcessor": "processing_mgcm.MGCMProcessor"}
    assert processor_config["processor_class"] == "MGCMProcessor"

    files = {path.relative_to(exported_dir).as_posix() for path in exported_dir.rglob("*") if path.is_file()}
    assert "model.safetensors" in files and "neighbour_table/neighbour_table.safetensors" in files
    assert not [name for name in files if name.endswith(hub_export.PICKLED_WEIGHT_SUFFIXES)]
    code = sorted(name for name in files if name.endswith(".py"))
    assert all("/" not in name for name in code)
    assert {"configuration_mgcm.py", "modeling_mgcm.py", "processing_mgcm.py", "pipeline_mgcm.py"} <= set(
        code
    )
    assert {"neighbour_table.py", "word_shape.py", "tweet_normalise.py", "image_sources.py"} <= set(code)
    # The files of modeling_mgcm/ as they are (nothing rewritten), and every relative import names one of them.
    for name in code:
        assert (exported_dir / name).read_bytes() == (MODELING_DIR / name).read_bytes(), name
        for imported in get_relative_imports(exported_dir / name):
            assert f"{imported}.py" in code, (name, imported)

    assert json.loads((exported_dir / "results.json").read_text()) == json.loads(
        (training_dir / "results.json").read_text()
    )
    card = (exported_dir / "README.md").read_text()
    assert "| valid | lenient | 61.25 | 58.75 | 60.42 |" in card and "| valid | strict |" in card
    assert 'pipeline(model="path/to/this/folder", trust_remote_code=True)' in card
    assert "import modeling_mgcm" not in card
    assert "`torch`" in card and "`pillow`" in card


def test_shipped_code_imports_only_what_a_hub_user_installs(exported_dir):
    """transformers' `check_imports` refuses remote code that imports a package that is not installed: the
    shipped files need torch, transformers, numpy, pillow, safetensors and huggingface_hub, nothing else."""
    assert hub_export.remote_code_imports(exported_dir) == [
        "PIL",
        "huggingface_hub",
        "numpy",
        "safetensors",
        "torch",
        "transformers",
    ]


def test_card_template_from_hub_configs_is_filled_from_results(training_dir, tmp_path):
    template = REPO / "hub_configs" / "mgcm-paper-twitter2017" / "README.md"
    output = hub_export.export_to_hub(training_dir, tmp_path / "out", template, repo_id="someone/mgcm-t17")
    card = (output / "README.md").read_text()
    assert "{{" not in card and "}}" not in card
    assert "| valid | lenient | 61.25 | 58.75 | 60.42 |" in card
    assert 'pipeline(model="someone/mgcm-t17", trust_remote_code=True)' in card
    assert 'from_pretrained("someone/mgcm-t17", trust_remote_code=True)' in card
    assert "Trained on `synthetic` for 1 epoch(s)" in card and "epoch 1, the best on the valid split" in card
    # The template's fixed text stays: the paper's published scores, for comparison.
    assert "| 86.03 | 86.16 | 86.09 |" in card
    # Its metadata: the template's base models, the run's scores, the repository's name.
    data = ModelCard.load(output / "README.md").data
    assert data.base_model == ["bert-base-cased", "microsoft/resnet-152"]
    assert data.model_name == "mgcm-t17" and [result.metric_value for result in data.eval_results] == [
        0.6042,
        0.5931,
    ]
    assert "pipeline_tag" not in data.to_dict() and data.inference is False


# ------------------------------------------------------------------------------------------------------
# The card's metadata, and no path of the training machine


def scored(result: EvalResult) -> tuple:
    """An eval result as (split, seqeval mode, value)."""
    return (result.dataset_split, result.metric_config, result.metric_value)


def test_the_exported_card_s_metadata_parses_back_with_the_scores_and_no_pipeline_tag(exported_dir):
    """`ModelCard.load` reads the card's YAML: the valid F1 in both seqeval modes as eval results, and no
    pipeline tag: the model runs in the custom "multimodal-ner" pipeline only, so the Hub widget is off."""
    data = ModelCard.load(exported_dir / "README.md").data
    assert [scored(result) for result in data.eval_results] == [
        ("valid", "lenient", 0.6042),
        ("valid", "strict", 0.5931),
    ]
    for result in data.eval_results:
        assert (result.task_type, result.metric_type, result.dataset_type) == (
            "token-classification",
            "f1",
            "synthetic",
        )
        assert result.metric_name == f"F1 (seqeval {result.metric_config})"
    assert data.pipeline_tag is None and "pipeline_tag" not in data.to_dict() and data.inference is False
    assert {"mgcm", "multimodal-ner", "named-entity-recognition"} <= set(data.tags)
    assert (data.library_name, data.license, data.language, data.metrics) == (
        "transformers",
        "apache-2.0",
        "en",
        ["seqeval"],
    )
    # The tiny random encoder derives from no Hub model.
    assert data.base_model is None and data.datasets == ["synthetic"]


@pytest.mark.parametrize("name", HUB_CONFIG_NAMES)
def test_hub_config_card_templates_name_their_base_models_and_no_pipeline_tag(name):
    data = ModelCard.load(REPO / "hub_configs" / name / "README.md").data
    configuration = next(c for c in make_hub_configs.hub_configurations() if c.name == name)
    assert data.base_model == list(configuration.base_model) and data.base_model
    assert all(hub_model_id(model) == model for model in data.base_model)
    assert data.pipeline_tag is None and data.inference is False and data.library_name == "transformers"
    assert data.eval_results is None  # filled in by the export, from a run


def results_with_local_paths(root: Path) -> dict:
    """The results.json of a Twitter-2017 run with a local encoder folder, captions and knowledge files, every
    path one of `root` (and the word vectors given as `~/...`), valid and test scored."""
    corpus, encoder = root / "data" / "twitter2017", root / "models" / "all-MiniLM-L6-v2"
    captions = root / "data" / "captions" / "twitter2017_blip2.txt"
    knowledge = root / "data" / "knowledge" / "twitter2017_pgim.txt"
    for folder in (corpus, encoder, captions.parent, knowledge.parent):
        folder.mkdir(parents=True)
    for file in (captions, knowledge):
        file.write_text("1.jpg :a text\n")
    results = fake_results()
    results["metrics"]["test"] = json.loads(json.dumps(results["metrics"]["valid"]))
    results["metrics"]["test"]["lenient"]["overall_f1"] = 0.5512

    def source(name: str, file: Path) -> dict:
        return {
            "name": name,
            "role": "granularity",
            "max_length": 32,
            "file": str(file),
            "sha256": "ab" * 32,
            "origin": None,
            "input_dropout": 0.0,
            "coverage": {"train": 1.0, "valid": 1.0},
        }

    results["run"].update(
        dataset=str(corpus),
        text_model=str(encoder),
        vision_model=None,
        granularities=["caption", "knowledge"],
        text_sources=[source("caption", captions), source("knowledge", knowledge)],
        args={
            "dataset_dir": str(corpus),
            "captions_file": str(captions),
            "text_source": [f"knowledge={knowledge}"],
            "text_model": str(encoder),
            "word_vectors": "~/.cache/mgcm-offline-models/glove-6b-50d",
            "output_dir": str(root / "outputs" / "t17-minilm"),
            "cache_dir": None,
            "granularities": ["caption", "knowledge"],
            "seed": 0,
        },
    )
    return results


@pytest.fixture
def local_paths_training_dir(tiny_mgcm_dir, tmp_path) -> Path:
    folder = tmp_path / "outputs" / "t17-minilm"
    shutil.copytree(tiny_mgcm_dir, folder)
    results = results_with_local_paths(tmp_path)
    (folder / "results.json").write_text(json.dumps(results), encoding="utf-8")
    return folder


def exported_texts(folder: Path) -> dict[str, str]:
    """Every text file of an exported folder by its relative path."""
    texts = {}
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in (".md", ".json", ".txt", ".py"):
            texts[path.relative_to(folder).as_posix()] = path.read_text(encoding="utf-8")
    return texts


def test_a_card_exported_from_a_run_with_local_paths_names_none_of_them(
    local_paths_training_dir, tmp_path, caplog
):
    """The corpus is named Twitter-2017, the local encoder folder is left out of `base_model` (with a
    warning) and the files are named by their file name: no path of the training machine in any file."""
    with caplog.at_level(logging.WARNING, logger=hub_export.__name__):
        output = hub_export.export_to_hub(local_paths_training_dir, tmp_path / "export")
    assert "the card names no base_model" in caplog.text and "--base_model" in caplog.text

    texts = exported_texts(output)
    assert {"README.md", "results.json", "config.json"} <= set(texts)
    for name, text in texts.items():
        for local in (str(tmp_path), str(Path.home()), "~/"):
            assert local not in text, (name, local)

    card = ModelCard.load(output / "README.md")
    assert card.data.base_model is None and card.data.datasets == ["twitter2017"]
    assert sorted(scored(result) for result in card.data.eval_results) == [
        ("test", "lenient", 0.5512),
        ("test", "strict", 0.5931),
        ("valid", "lenient", 0.6042),
        ("valid", "strict", 0.5931),
    ]
    assert {result.dataset_name for result in card.data.eval_results} == {"Twitter-2017"}
    # The body still says what the run read, by name.
    assert "# MGCM multimodal NER (Twitter-2017)" in card.text
    assert "`all-MiniLM-L6-v2`" in card.text and "`twitter2017_pgim.txt`" in card.text

    run = json.loads(texts["results.json"])["run"]
    assert run["dataset"] == "Twitter-2017" and run["text_model"] == "all-MiniLM-L6-v2"
    assert run["args"]["text_source"] == ["knowledge=twitter2017_pgim.txt"]
    assert (run["args"]["word_vectors"], run["args"]["output_dir"]) == ("glove-6b-50d", "t17-minilm")
    assert run["args"]["cache_dir"] is None and run["args"]["seed"] == 0


def test_the_command_line_names_the_base_model_and_the_dataset(local_paths_training_dir, tmp_path):
    output = tmp_path / "export"
    completed = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "export_to_hub.py"),
            str(local_paths_training_dir),
            str(output),
        ]
        + ["--dataset_name", "someone/tweets", "--base_model", "sentence-transformers/all-MiniLM-L6-v2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "no base_model" not in completed.stderr
    data = ModelCard.load(output / "README.md").data
    assert data.base_model == ["sentence-transformers/all-MiniLM-L6-v2"]
    assert data.datasets == ["someone/tweets"] and data.model_name == "mgcm-tweets"
    assert {result.dataset_type for result in data.eval_results} == {"someone/tweets"}
    assert str(tmp_path) not in (output / "README.md").read_text()


# ------------------------------------------------------------------------------------------------------
# Refusals, each naming what is wrong


def test_export_refuses_a_folder_without_results_or_safetensors_and_a_used_output(training_dir, tmp_path):
    no_results = tmp_path / "no_results"
    shutil.copytree(training_dir, no_results)
    (no_results / "results.json").unlink()
    with pytest.raises(hub_export.ExportError, match=r"no_results/results\.json does not exist"):
        hub_export.export_to_hub(no_results, tmp_path / "a")

    pickled = tmp_path / "pickled"
    shutil.copytree(training_dir, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(hub_export.ExportError, match=r"no model\*\.safetensors.*pytorch_model\.bin"):
        hub_export.export_to_hub(pickled, tmp_path / "b")

    used = tmp_path / "used"
    used.mkdir()
    (used / "something.txt").write_text("x")
    with pytest.raises(hub_export.ExportError, match="used exists and is not an empty folder"):
        hub_export.export_to_hub(training_dir, used)
    with pytest.raises(hub_export.ExportError, match="is the training folder"):
        hub_export.export_to_hub(training_dir, training_dir)

    with pytest.raises(hub_export.ExportError, match=r"--base_model '/models/encoder' is not a Hub model id"):
        hub_export.export_to_hub(training_dir, tmp_path / "d", base_model=["/models/encoder"])

    broken = tmp_path / "broken"
    shutil.copytree(training_dir, broken)
    (broken / "results.json").write_text('{"metrics": {}\n  "run": 1}')
    with pytest.raises(hub_export.ExportError, match=r"broken/results\.json, line 2: not valid JSON"):
        hub_export.export_to_hub(broken, tmp_path / "c")


def test_export_refuses_weights_that_do_not_match_the_config(training_dir, tmp_path):
    """Weights from another version of the model code would load half-initialised: refuse instead."""
    changed = tmp_path / "changed"
    shutil.copytree(training_dir, changed)
    config = json.loads((changed / "config.json").read_text())
    config["use_word_shape"] = not config["use_word_shape"]
    (changed / "config.json").write_text(json.dumps(config))
    with pytest.raises(hub_export.ExportError, match="do not match its config.json.*word_shape"):
        hub_export.export_to_hub(changed, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_card_template_with_an_unknown_placeholder_names_file_and_line(tmp_path):
    template = tmp_path / "card.md"
    template.write_text("# Card\n\n{{ results_table }}\n{{ results_tabel }}\n")
    with pytest.raises(
        hub_export.ExportError, match=r"card\.md, line 4: unknown placeholder '\{\{ results_tabel \}\}'"
    ):
        hub_export.fill_card_template(template.read_text(), {"results_table": "x"}, str(template))
    assert hub_export.fill_card_template("a {{results_table}} b", {"results_table": "T"}, "t") == "a T b"


def test_push_to_hub_without_a_login_says_how_to_log_in(exported_dir, tmp_path, monkeypatch):
    """No token: a clear error before any request (the upload itself needs the Hub and is not tested here)."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(
        hub_export.ExportError, match="needs a Hub login: run `hf auth login` or set HF_TOKEN"
    ):
        hub_export.push_folder_to_hub(exported_dir, "someone/mgcm", private=False)


# ------------------------------------------------------------------------------------------------------
# hub_configs/


def test_hub_config_files_are_in_sync_with_mgcm_config():
    """The committed files are exactly what make_hub_configs.py writes from today's MGCMConfig."""
    assert sorted(path.name for path in (REPO / "hub_configs").iterdir() if path.is_dir()) == sorted(
        HUB_CONFIG_NAMES
    )
    assert make_hub_configs.outdated_files() == []


def architecture(config: MGCMConfig) -> dict:
    """The config's values, without where it was loaded from."""
    return {key: value for key, value in config.to_dict().items() if key != "_name_or_path"}


def test_paper_configs_are_mgcm_defaults_with_resnet152_grid_and_bert_base_cased():
    paper = architecture(make_hub_configs.hub_configurations()[0].config)
    assert architecture(MGCMConfig()) == paper
    for name in ("mgcm-paper-twitter2015", "mgcm-paper-twitter2017"):
        config = AutoConfig.from_pretrained(REPO / "hub_configs" / name)
        assert type(config) is MGCMConfig and architecture(config) == paper
        assert config.granularities == ("image", "objects") and not config.use_word_shape
        assert (config.num_neighbours, config.augmentation_dim, config.max_objects) == (4, 200, 5)
        assert len(config.object_labels) == 80 and config.text_config.vocab_size == 28996
        assert [config.id2label[index] for index in range(9)] == list(processing.LABEL_NAMES)
        with torch.device("meta"):
            model = MGCMForTokenClassification(config)
        assert next(model.parameters()).device.type == "meta"
        # bert-base-cased without its pooler (108,310,272 - 590,592) and ResNet-152 without its classifier.
        assert sum(p.numel() for p in model.mgcm.text_encoder.parameters()) == 107_719_680
        assert sum(p.numel() for p in model.mgcm.vision_model.parameters()) == 58_143_808
        regions = extract_image_features(model.mgcm.vision_model, torch.empty(1, 3, 224, 224, device="meta"))
        assert tuple(regions.shape) == (1, 49, 2048)


@pytest.mark.parametrize("name, hidden_size", [("mgcm-offline-minilm", 384), ("mgcm-offline-mpnet", 768)])
def test_offline_configs_build_text_and_caption_models_without_vision(name, hidden_size):
    config = MGCMConfig.from_pretrained(REPO / "hub_configs" / name)
    assert config.granularities == ("caption",) and config.vision_config is None and config.use_word_shape
    assert (config.augmentation_mode, config.augmentation_dim, config.num_neighbours) == ("gate", 50, 4)
    assert config.hidden_size == hidden_size
    with torch.device("meta"):
        model = MGCMForTokenClassification(config)
    assert model.mgcm.vision_model is None
    assert type(model.mgcm.text_encoder).__name__ == {"mgcm-offline-minilm": "BertModel"}.get(
        name, "MPNetModel"
    )


@pytest.mark.skipif(
    not OFFLINE_MINILM.is_dir(), reason="the offline all-MiniLM-L6-v2 folder is not on this machine"
)
def test_minilm_config_matches_the_downloaded_encoder_weights():
    on_disk = json.loads((OFFLINE_MINILM / "config.json").read_text())
    assert {
        key: on_disk[key] for key in make_hub_configs.ALL_MINILM_L6_V2
    } == make_hub_configs.ALL_MINILM_L6_V2
    config = MGCMConfig.from_pretrained(REPO / "hub_configs" / "mgcm-offline-minilm")
    with torch.device("meta"):
        model = MGCMForTokenClassification(config)
    expected = {name: tuple(p.shape) for name, p in model.mgcm.text_encoder.state_dict().items()}
    with safe_open(str(OFFLINE_MINILM / "model.safetensors"), "pt") as weights:
        # The checkpoint also holds the pooler (unused) and an old position-id buffer.
        stored = {
            name: tuple(weights.get_slice(name).get_shape())
            for name in weights.keys()
            if not name.startswith("pooler.") and name != "embeddings.position_ids"
        }
    assert stored == {name: shape for name, shape in expected.items() if name in stored}
    assert sum(math.prod(shape) for shape in stored.values()) == sum(
        p.numel() for p in model.mgcm.text_encoder.parameters()
    )


@pytest.mark.parametrize("name", HUB_CONFIG_NAMES)
def test_hub_processor_settings_load_into_mgcm_processor(name, tiny_tokenizer, tmp_path):
    """Next to a tokenizer and a neighbour table, each processor_config.json loads as MGCMProcessor with the
    configuration's settings, and encodes a post as the model configuration expects."""
    folder = tmp_path / name
    shutil.copytree(REPO / "hub_configs" / name, folder)
    config = MGCMConfig.from_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    words = ["obama", "paris", "london", "the", "in", "at"]
    vectors = np.random.default_rng(0).normal(size=(len(words), config.augmentation_dim))
    neighbour_table_from_embeddings(words, vectors, k=config.num_neighbours).save_pretrained(
        folder / "neighbour_table"
    )

    processor = MGCMProcessor.from_pretrained(folder)
    settings = json.loads((folder / "processor_config.json").read_text())
    # Compared as JSON, the form both are stored in (tuples and lists read back alike).
    assert json.loads(json.dumps(processor.to_dict())) == settings
    assert (processor.image_processor is not None) == config.use_image
    assert processor.object_labels == (config.object_labels if config.use_objects else None)
    assert processor.max_objects == config.max_objects

    image = Image.new("RGB", (300, 200), (200, 30, 30)) if config.use_image else None
    objects = [{"label": "person", "score": 0.9}] if config.use_objects else None
    inputs = processor(
        words=["Obama", "in", "Paris"],
        images=image,
        objects=objects,
        captions="a man in a city" if config.use_caption else None,
    )
    assert inputs["neighbour_vectors"].shape == (1, 3, config.num_neighbours, config.augmentation_dim)
    if config.use_image:
        assert tuple(inputs["pixel_values"].shape) == (1, 3, 224, 224)
    if config.use_objects:
        assert inputs["object_ids"].tolist() == [[0] + [80] * 4]
