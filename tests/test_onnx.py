"""The ONNX runtime: a tiny MGCM trained on the synthetic corpus (every granularity: image through its vision
backbone, objects, caption, knowledge; semantic augmentation and word shape) exported once with
`mgcm-export-onnx --int8`, then run through ONNX Runtime by the model class, the pipeline and `mgcm-predict`.

float32 emissions match torch's within 1e-4 and the tags are identical, whatever the batch (mixed lengths, long
posts in several windows, rows without image, objects or text sources, one word); int8 tags agree on at least
99% of the test split's words; stale files are refused; fresh ones load without the torch weights.
"""

import copy
import json
import shutil
import sys
import textwrap

import numpy as np
import onnx
import pytest
import torch
from clean_process import run_clean_script
from PIL import Image
from region_features import RegionFeatureTable
from torch.utils.data import DataLoader
from training_runs import fake_results
from transformers import pipeline

from modeling_mgcm import (
    MGCMConfig,
    MGCMForTokenClassification,
    MGCMOnnxForTokenClassification,
    MGCMPreTrainedModel,
    MGCMProcessor,
    StaleOnnxError,
    onnx_export,
)
from modeling_mgcm.host_reads import no_host_reads
from processing import MGCMDataCollator, make_synthetic_corpus
from processing import onnx_export as export_cli
from processing.corpus.labels import LABEL_NAMES
from processing.corpus.synthetic import SYNTHETIC_OBJECT_LABELS
from processing.predict_cli import main as predict_main
from processing.testing.tiny_backbones import (
    build_corpus_tokenizer,
    tiny_image_processor,
    tiny_text_config,
    tiny_vision_config,
)
from processing.text.neighbour_search import neighbour_table_from_embeddings
from processing.training.hub_export import export_to_hub
from processing.training.optimizer import parameter_groups
from processing.training.window_rows import preprocess_corpus

IMAGE_SIZE = 32
EPOCHS = 4
WINDOW_INFO = ("overflow_to_sample_mapping", "window_word_offset")

pytestmark = pytest.mark.usefixtures("single_thread")


def with_knowledge(corpus):
    """Every other tweet with an image gets a knowledge text (its caption's words reversed)."""

    def add(row, index):
        caption = row["caption"]
        return {"knowledge": " ".join(caption.split()[::-1]) if caption and index % 2 else None}

    return corpus.map(add, with_indices=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny full-featured MGCM trained for a few epochs on the synthetic corpus and saved with its processor
    (no ONNX files), the corpus's test split and the feature table of its images."""
    corpus = with_knowledge(make_synthetic_corpus(320, 0, 80, seed=0, image_size=IMAGE_SIZE))
    words = sorted({word for split in corpus.values() for tweet in split["tokens"] for word in tweet})
    vectors = np.random.default_rng(0).normal(size=(len(words), 8))
    processor = MGCMProcessor(
        build_corpus_tokenizer(words),
        image_processor=tiny_image_processor(IMAGE_SIZE),
        neighbour_table=neighbour_table_from_embeddings([word.lower() for word in words], vectors, k=2),
        object_labels=list(SYNTHETIC_OBJECT_LABELS),
        max_length=24,
        stride=4,
        text_source_max_lengths={"knowledge": 12},
    )
    text_config = tiny_text_config(len(processor.tokenizer), hidden_size=32)
    text_config.hidden_dropout_prob = text_config.attention_probs_dropout_prob = 0.0
    config = MGCMConfig(
        text_config=text_config,
        vision_config=tiny_vision_config(),
        text_sources=["caption", "knowledge"],
        object_labels=list(SYNTHETIC_OBJECT_LABELS),
        augmentation_mode="gate",
        augmentation_dim=8,
        num_neighbours=2,
        use_word_shape=True,
        hidden_dropout_prob=0.0,
        attention_dropout_prob=0.0,
        fusion_dropout_prob=0.0,
        id2label=dict(enumerate(LABEL_NAMES)),
        label2id={label: index for index, label in enumerate(LABEL_NAMES)},
    )
    torch.manual_seed(0)
    model = MGCMForTokenClassification(config)
    features = RegionFeatureTable(corpus, model.mgcm.vision_model, processor.image_processor)
    windows = preprocess_corpus(processor, corpus)
    optimizer = torch.optim.AdamW(parameter_groups(model, lr=3e-3, crf_lr=1e-2, weight_decay=0.01))
    loader = DataLoader(
        windows["train"],
        batch_size=16,
        shuffle=True,
        collate_fn=MGCMDataCollator(processor, features),
        generator=torch.Generator().manual_seed(0),
    )
    model.train()
    for _ in range(EPOCHS):
        for batch in loader:
            loss = model(**batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    folder = tmp_path_factory.mktemp("trained") / "mgcm"
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return {"folder": folder, "test": corpus["test"], "windows": windows["test"], "features": features}


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """A copy of the trained folder with `onnx/` written by `mgcm-export-onnx FOLDER --int8` (the one export
    of this module)."""
    folder = tmp_path_factory.mktemp("exported") / "mgcm"
    shutil.copytree(trained["folder"], folder)
    assert export_cli.main([str(folder), "--int8"]) == 0
    return folder


@pytest.fixture(scope="module")
def torch_model(trained):
    return MGCMForTokenClassification.from_pretrained(trained["folder"]).eval()


@pytest.fixture(scope="module")
def onnx_float(exported):
    return MGCMOnnxForTokenClassification.from_pretrained(exported)


def split_batches(trained, batch_size: int = 16):
    """Padded model batches of the test split's windows, cached image features included."""
    collator = MGCMDataCollator(MGCMProcessor.from_pretrained(trained["folder"]), trained["features"])
    for batch in DataLoader(trained["windows"], batch_size=batch_size, collate_fn=collator):
        for key in ("labels", *WINDOW_INFO):
            batch.pop(key, None)
        yield dict(batch)


def run_both(torch_model, onnx_model_, batch):
    with torch.no_grad():
        expected = torch_model(**batch)
    return expected, onnx_model_(**batch)


def assert_same(expected, actual, atol=1e-4):
    assert (actual.logits - expected.logits).abs().max() <= atol
    assert torch.equal(actual.predictions, expected.predictions)
    assert set(actual.gate_values) == set(expected.gate_values)
    for name, gates in expected.gate_values.items():
        torch.testing.assert_close(actual.gate_values[name], gates, rtol=0, atol=atol)


# ----------------------------------------------------------------------------------------------------------
# The exported files


def test_the_export_writes_the_three_graphs_with_dynamic_axes_and_the_crf(exported, torch_model, onnx_float):
    assert sorted(path.name for path in (exported / "onnx").iterdir()) == [
        "model.onnx",
        "model_quantized.onnx",
        "vision_model.onnx",
    ]
    inputs = {value.name: value.shape for value in onnx_float.session.get_inputs()}
    assert list(inputs) == onnx_export.graph_input_names(torch_model)
    assert {"knowledge_input_ids", "caption_attention_mask", "object_ids", "image_features"} <= set(inputs)
    fixed = {"neighbour_vectors": {2, 3}, "neighbour_weights": {2}, "image_features": {2}}
    for name, shape in inputs.items():
        for axis, size in enumerate(shape):
            assert isinstance(size, int) == (axis in fixed.get(name, ())), (name, shape)
    vision_shape = onnx_float.vision_session.get_inputs()[0].shape
    assert isinstance(vision_shape[0], str) and vision_shape[1] == 3
    for name in ("start_transitions", "end_transitions", "transitions"):
        assert torch.equal(getattr(onnx_float.crf, name), getattr(torch_model.crf, name))


def assert_linear_weights_folded_and_quantised(folder, torch_model) -> None:
    """Every weight matrix is an initializer of its MatMul (stored transposed once), and int8 in the quantised
    file. The exporter writes `MatMul(x, Transpose(weight))`; left unfolded, each weight would be transposed at
    every run and `quantize_dynamic` would keep its MatMul in float32."""
    graph = onnx.load(folder / "onnx" / "model.onnx").graph
    initializers = {value.name for value in graph.initializer}
    assert not [
        node.name for node in graph.node if node.op_type == "Transpose" and node.input[0] in initializers
    ]
    weight_matmuls = [
        node for node in graph.node if node.op_type == "MatMul" and node.input[1] in initializers
    ]
    # Each Linear of the text encoder runs once per text it reads (the tweet and each text source).
    linears = [module for module in torch_model.modules() if isinstance(module, torch.nn.Linear)]
    assert len(weight_matmuls) >= len(linears) > 5
    quantized = onnx.load(folder / "onnx" / "model_quantized.onnx").graph
    int8_matmuls = [
        node for node in quantized.node if node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")
    ]
    assert len(int8_matmuls) == len(weight_matmuls)


def test_every_linear_weight_is_folded_and_quantised(exported, torch_model):
    assert_linear_weights_folded_and_quantised(exported, torch_model)


# ----------------------------------------------------------------------------------------------------------
# float32: the torch model's emissions and tags


def test_float32_matches_torch_on_every_test_batch(trained, torch_model, onnx_float):
    """Test-split windows in batches of 16: mixed lengths, the windows of long tweets, rows with and without
    image, objects, caption and knowledge."""
    batches = list(split_batches(trained))
    assert len(set(trained["windows"]["tweet_index"])) < len(trained["windows"])  # tweets in several windows
    assert any(int(batch["knowledge_attention_mask"].any(1).sum()) not in (0, 16) for batch in batches)
    assert any(int(batch["image_mask"].sum()) not in (0, 16) for batch in batches)
    for batch in batches:
        assert_same(*run_both(torch_model, onnx_float, batch))


def test_float32_matches_torch_on_raw_images_through_the_exported_backbone(trained, torch_model, onnx_float):
    processor = MGCMProcessor.from_pretrained(trained["folder"])
    images = [image.convert("RGB") for image in trained["test"]["image"][:12] if image is not None][:4]
    pixel_values = torch.as_tensor(
        processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    )
    torch.testing.assert_close(
        onnx_float.extract_image_features(pixel_values),
        torch_model.extract_image_features(pixel_values),
        rtol=0,
        atol=1e-5,
    )
    batch = next(split_batches(trained, batch_size=len(images)))
    batch.pop("image_features")
    batch["pixel_values"], batch["image_mask"] = pixel_values, torch.tensor([1, 0, 1, 1][: len(images)])
    assert_same(*run_both(torch_model, onnx_float, batch))


@pytest.mark.parametrize("absent", ["image", "objects", "caption", "knowledge", "everything"])
def test_a_batch_without_a_side_input_matches_torch(trained, torch_model, onnx_float, absent):
    """An input the batch lacks is an all-masked input in both runtimes, down to one word of one post."""
    keys = {
        "image": ("image_features", "image_mask"),
        "objects": ("object_ids", "object_mask"),
        "caption": ("caption_input_ids", "caption_attention_mask"),
        "knowledge": ("knowledge_input_ids", "knowledge_attention_mask"),
    }
    dropped = [key for name, pair in keys.items() if absent in (name, "everything") for key in pair]
    batch = next(split_batches(trained, batch_size=5))
    assert_same(*run_both(torch_model, onnx_float, {k: v for k, v in batch.items() if k not in dropped}))
    one_word = {key: value[:1] for key, value in batch.items() if key not in dropped}
    one_word["word_mask"] = torch.zeros_like(one_word["word_mask"])
    one_word["word_mask"][0, 0] = 1
    one_word["word_ids"] = torch.where(one_word["word_ids"] > 0, -1, one_word["word_ids"])
    assert_same(*run_both(torch_model, onnx_float, one_word))


# ----------------------------------------------------------------------------------------------------------
# int8


def test_int8_tags_agree_with_torch_on_99_percent_of_the_test_words(trained, torch_model, exported):
    quantized = MGCMOnnxForTokenClassification.from_pretrained(exported, int8=True)
    agree = total = 0
    for batch in split_batches(trained, batch_size=32):
        expected, actual = run_both(torch_model, quantized, batch)
        words = batch["word_mask"].bool()
        agree += int((actual.predictions == expected.predictions)[words].sum())
        total += int(words.sum())
    assert total > 500
    assert agree / total >= 0.99, f"int8 agrees on {agree} of {total} words"


# ----------------------------------------------------------------------------------------------------------
# The pipeline and the command line


def posts(trained) -> list[dict]:
    """Posts as users give them: raw images, a long post in several windows, posts lacking side inputs."""
    test = trained["test"]
    chosen = []
    for row in test.select(range(6)):
        post = {"text": row["tokens"], "caption": row["caption"], "knowledge": row["knowledge"]}
        if row["image"] is not None:
            post["image"] = row["image"].convert("RGB")
        post["objects"] = row["objects"]
        chosen.append(post)
    chosen.append({"text": " ".join(word for row in test.select(range(6)) for word in row["tokens"])})
    chosen.append({"text": "Jordan", "image": Image.new("RGB", (40, 30), "red")})
    return chosen


def spans(entity: dict) -> tuple:
    return entity["entity_group"], entity["start"], entity["end"]


@pytest.mark.parametrize("weights", ["absent", "unreadable"])
def test_the_pipeline_tags_identically_with_onnx_and_loads_no_torch_weights(
    trained, exported, tmp_path, monkeypatch, caplog, weights
):
    torch_tagger = pipeline("multimodal-ner", model=str(trained["folder"]), device="cpu")
    expected = torch_tagger(posts(trained), aggregation="words", batch_size=4)
    folder = tmp_path / "onnx-only"
    shutil.copytree(exported, folder)
    (folder / "model.safetensors").unlink()
    if weights == "unreadable":
        (folder / "model.safetensors").mkdir()  # opening it raises IsADirectoryError

    def no_torch_weights(*args, **kwargs):
        raise AssertionError("the torch weights were loaded")

    monkeypatch.setattr(MGCMPreTrainedModel, "from_pretrained", classmethod(no_torch_weights))
    onnx_tagger = pipeline(
        "multimodal-ner",
        model=str(folder),
        device="cpu",
        model_kwargs={"runtime": "onnx", "session_options": {"intra_op_num_threads": 1}},
    )
    assert isinstance(onnx_tagger.model, MGCMOnnxForTokenClassification)
    actual = onnx_tagger(posts(trained), aggregation="words", batch_size=4)
    assert len(expected[6]["words"]) > 24  # several windows
    for want, got in zip(expected, actual, strict=True):
        assert [word["tag"] for word in got["words"]] == [word["tag"] for word in want["words"]]
        for want_word, got_word in zip(want["words"], got["words"], strict=True):
            assert got_word["score"] == pytest.approx(want_word["score"], abs=1e-4)
            assert got_word["gates"] == pytest.approx(want_word["gates"], abs=1e-4)
        assert [spans(entity) for entity in got["entities"]] == [spans(entity) for entity in want["entities"]]
    assert any(post["entities"] for post in expected)
    assert ("cannot read" in caplog.text) == (weights == "unreadable")


def test_mgcm_predict_tags_with_the_onnx_runtime(trained, exported, tmp_path, capsys):
    lines = [
        {"id": index, **{k: v for k, v in post.items() if k != "image"}}
        for index, post in enumerate(posts(trained))
    ]
    source = tmp_path / "posts.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    outputs = {}
    for runtime in ("torch", "onnx"):
        target = tmp_path / f"{runtime}.jsonl"
        arguments = [
            "--model",
            str(exported),
            "--input",
            str(source),
            "--output",
            str(target),
            "--no_progress",
        ]
        assert predict_main([*arguments, "--backend", runtime, "--device", "cpu"]) == 0
        outputs[runtime] = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert len(outputs["onnx"]) == len(lines)
    for want, got in zip(outputs["torch"], outputs["onnx"], strict=True):
        assert [spans(entity) for entity in got["entities"]] == [spans(entity) for entity in want["entities"]]
    assert any(record["entities"] for record in outputs["onnx"])


def test_mgcm_predict_refuses_onnx_options_without_the_onnx_runtime(exported):
    with pytest.raises(SystemExit) as exit_info:
        predict_main(["--model", str(exported), "--text", "Jordan", "--int8"])
    assert exit_info.value.code == 2


# ----------------------------------------------------------------------------------------------------------
# Stale files, missing files, options


def test_files_exported_from_other_weights_or_config_are_refused(exported, tmp_path):
    folder = tmp_path / "retrained"
    shutil.copytree(exported, folder)
    model = MGCMForTokenClassification.from_pretrained(folder)
    with torch.no_grad():
        model.classifier.bias.add_(0.01)
    model.save_pretrained(folder)
    with pytest.raises(StaleOnnxError, match=r"other weights.*model\.safetensors.*mgcm-export-onnx"):
        MGCMOnnxForTokenClassification.from_pretrained(folder)
    with pytest.raises(StaleOnnxError, match="other weights"):
        MGCMOnnxForTokenClassification.from_pretrained(folder, int8=True)
    shutil.copy(exported / "model.safetensors", folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    config["layer_norm_eps"] = 1e-5
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(StaleOnnxError, match="another config.json"):
        MGCMOnnxForTokenClassification.from_pretrained(folder)


def test_a_folder_without_onnx_files_is_exported_once_into_the_cache(
    trained, exported, tmp_path, monkeypatch
):
    exports = []

    def copy_the_module_s_export(model, onnx_dir, weights, config_digest, **options):
        # The real export of these weights is the module's; its fingerprint must be the one asked for.
        assert (weights, config_digest) == onnx_export.folder_fingerprint(trained["folder"])
        exports.append(onnx_dir)
        shutil.copytree(exported / "onnx", onnx_dir)

    monkeypatch.setattr(onnx_export, "write_onnx_files", copy_the_module_s_export)
    cache = tmp_path / "cache"
    first = MGCMOnnxForTokenClassification.from_pretrained(trained["folder"], onnx_cache_dir=cache)
    again = MGCMOnnxForTokenClassification.from_pretrained(trained["folder"], onnx_cache_dir=cache, int8=True)
    assert len(exports) == 1 and exports[0].parent.parent == cache and exports[0].name == "onnx"
    assert first.model_path == exports[0] / "model.onnx"
    assert again.model_path == exports[0] / "model_quantized.onnx"
    assert not (trained["folder"] / "onnx").exists()


def test_int8_on_a_folder_with_the_float_graph_only_quantises_it_into_the_cache(exported, tmp_path):
    folder = tmp_path / "float-only"
    shutil.copytree(exported, folder)
    (folder / "onnx" / "model_quantized.onnx").unlink()
    quantized = MGCMOnnxForTokenClassification.from_pretrained(
        folder, int8=True, onnx_cache_dir=tmp_path / "c"
    )
    path = quantized.model_path
    assert path.name == "model_quantized.onnx" and path.is_relative_to(tmp_path / "c")
    metadata = quantized.session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata["mgcm_quantization"])["weight_type"] == "QInt8"


def test_a_folder_with_neither_onnx_files_nor_weights_says_how_to_export(exported, tmp_path):
    folder = tmp_path / "empty"
    shutil.copytree(exported, folder, ignore=shutil.ignore_patterns("onnx", "*.safetensors"))
    with pytest.raises(OSError, match="no ONNX files.*no model.safetensors.*mgcm-export-onnx"):
        MGCMOnnxForTokenClassification.from_pretrained(folder, onnx_cache_dir=tmp_path / "cache")


def test_runtime_options_reach_the_sessions_and_bad_ones_are_named(exported):
    model = MGCMForTokenClassification.from_pretrained(
        exported, runtime="onnx", session_options={"intra_op_num_threads": 1, "inter_op_num_threads": 1}
    )
    assert model.session.get_session_options().intra_op_num_threads == 1
    assert model.session.get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="no attribute 'intra_threads'"):
        MGCMOnnxForTokenClassification.from_pretrained(exported, session_options={"intra_threads": 2})
    with pytest.raises(ValueError, match=r"\['NoSuchExecutionProvider'\] are not available"):
        MGCMOnnxForTokenClassification.from_pretrained(exported, providers=["NoSuchExecutionProvider"])
    with pytest.raises(TypeError, match="runtime='onnx'"):
        MGCMForTokenClassification.from_pretrained(exported, int8=True)
    with pytest.raises(ValueError, match="runtime must be 'torch' or 'onnx'"):
        MGCMForTokenClassification.from_pretrained(exported, runtime="tensorrt")
    with pytest.raises(ValueError, match="float32"):
        MGCMOnnxForTokenClassification.from_pretrained(exported, dtype=torch.bfloat16)


def test_attentions_and_losses_need_the_torch_model(trained, onnx_float):
    batch = next(split_batches(trained, batch_size=2))
    with pytest.raises(ValueError, match="output_attentions"):
        onnx_float(**batch, output_attentions=True)
    with pytest.raises(ValueError, match="no loss"):
        onnx_float(**batch, labels=torch.zeros_like(batch["word_mask"]))


def test_a_missing_onnxruntime_names_the_extra(exported, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"onnxruntime.*pip install 'mgcm\[onnx\]'"):
        MGCMOnnxForTokenClassification.from_pretrained(exported)


def test_a_missing_exporter_names_the_extra(trained, monkeypatch, tmp_path):
    folder = tmp_path / "mgcm"
    shutil.copytree(trained["folder"], folder)
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(ImportError, match=r"onnxscript.*pip install 'mgcm\[onnx\]'"):
        onnx_export.export_folder(folder)
    assert not (folder / "onnx").exists()


# ----------------------------------------------------------------------------------------------------------
# The export-friendly forward


def test_without_host_reads_text_sources_are_encoded_in_one_pass_with_the_same_emissions(
    trained, torch_model, monkeypatch
):
    """The export records the fixed-shape forward: every row of a text source encoded in one padded pass, not
    grouped by length with host reads, and with the same emissions."""
    batch = next(split_batches(trained, batch_size=16))
    grouped_calls = []
    grouped = torch_model.mgcm._text_source_states_by_length
    monkeypatch.setattr(
        torch_model.mgcm,
        "_text_source_states_by_length",
        lambda *args: grouped_calls.append(1) or grouped(*args),
    )
    with torch.no_grad():
        expected = torch_model(**batch).logits
        assert len(grouped_calls) == 2  # caption and knowledge, grouped by length
        with no_host_reads():
            one_pass = torch_model(**batch).logits
    assert len(grouped_calls) == 2
    torch.testing.assert_close(one_pass, expected, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# The Hub export


# Runs in a process that cannot import this project: the exported folder's own code on ONNX Runtime.
CLEAN_ONNX_PIPELINE_SCRIPT = textwrap.dedent(
    """
    import json, sys

    from transformers import pipeline

    exported, posts_file = sys.argv[1:3]
    tagger = pipeline(model=exported, trust_remote_code=True, model_kwargs={"runtime": "onnx"})
    print(json.dumps({"model": type(tagger.model).__module__, "words": tagger(json.load(open(posts_file)), aggregation="words")}))
    """
)


def test_the_hub_export_carries_fresh_onnx_files_that_its_remote_code_runs(trained, exported, tmp_path):
    training_dir = tmp_path / "run"
    shutil.copytree(exported, training_dir)
    (training_dir / "results.json").write_text(json.dumps(fake_results()), encoding="utf-8")
    hub = export_to_hub(training_dir, tmp_path / "hub")
    for name in ("model.onnx", "model_quantized.onnx", "vision_model.onnx"):
        assert (hub / "onnx" / name).read_bytes() == (exported / "onnx" / name).read_bytes()
    assert "### ONNX Runtime" in (hub / "README.md").read_text(encoding="utf-8")
    (hub / "model.safetensors").unlink()
    image = tmp_path / "red.png"
    Image.new("RGB", (40, 30), "red").save(image)
    hub_posts = [
        {"text": post["text"], "caption": post.get("caption"), "objects": post.get("objects", [])}
        for post in posts(trained)
    ]
    hub_posts[0]["image"] = str(image)
    (tmp_path / "posts.json").write_text(json.dumps(hub_posts), encoding="utf-8")
    completed = run_clean_script(
        CLEAN_ONNX_PIPELINE_SCRIPT, [str(hub), str(tmp_path / "posts.json")], tmp_path / "elsewhere"
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    remote = json.loads(completed.stdout.strip().splitlines()[-1])
    assert remote["model"].startswith("transformers_modules.") and remote["model"].endswith(".onnx_model")
    expected = pipeline("multimodal-ner", model=str(trained["folder"]), device="cpu")(
        hub_posts, aggregation="words"
    )
    for want, got in zip(expected, remote["words"], strict=True):
        assert [word["tag"] for word in got["words"]] == [word["tag"] for word in want["words"]]


def test_the_hub_export_leaves_stale_onnx_files_out(exported, tmp_path, caplog):
    training_dir = tmp_path / "run"
    shutil.copytree(exported, training_dir)
    (training_dir / "results.json").write_text(json.dumps(fake_results()), encoding="utf-8")
    config = json.loads((training_dir / "config.json").read_text())
    config["layer_norm_eps"] = 1e-5
    (training_dir / "config.json").write_text(json.dumps(config))
    hub = export_to_hub(training_dir, tmp_path / "hub")
    assert not (hub / "onnx").exists()
    assert "ONNX files" in caplog.text and "left out" in caplog.text


def one_layer_text_model(tiny_text_config, width: int | None = None, **config) -> MGCMForTokenClassification:
    """A seeded eval-mode MGCM over a 1-layer copy of the tiny BERT (`width` wide), without image, objects or
    augmentation; `config` adds MGCMConfig fields."""
    text_config = copy.deepcopy(tiny_text_config)
    text_config.num_hidden_layers = 1
    if width is not None:
        text_config.hidden_size, text_config.intermediate_size = width, 2 * width
    torch.manual_seed(0)
    return MGCMForTokenClassification(
        MGCMConfig(
            text_config=text_config,
            vision_config=None,
            use_image=False,
            use_objects=False,
            augmentation_mode="none",
            **config,
        )
    ).eval()


def test_export_to_onnx_of_a_text_only_model_without_crf(tiny_text_config, tmp_path):
    """No granularity: the graph has logits only; no CRF: tags are the argmax, as in torch."""
    from mgcm_batches import build_batch, three_examples

    model = one_layer_text_model(tiny_text_config, use_crf=False, aux_span_loss_weight=0)
    files = model.export_to_onnx(tmp_path / "text-only")
    assert [path.name for path in files] == ["model.onnx"]
    assert (tmp_path / "text-only" / "model.safetensors").is_file()
    exported_model = MGCMOnnxForTokenClassification.from_pretrained(tmp_path / "text-only")
    assert exported_model.crf is None
    assert [value.name for value in exported_model.session.get_outputs()] == ["logits"]
    batch = build_batch(three_examples(), extra_words=2, without=("image", "objects", "caption"))
    for key in ("labels", "word_shape_ids", "neighbour_vectors", "neighbour_weights"):
        batch.pop(key)
    expected, actual = run_both(model, exported_model, batch)
    assert_same(expected, actual)
    assert actual.gate_values == {}


def test_shared_encoder_weights_above_the_folding_limit_are_folded_and_quantised(tiny_text_config, tmp_path):
    """The encoder reads the tweet and the caption, so each weight has two users; with weights over
    onnxscript's default limit (8,192 values) its optimiser leaves such transposes unfolded."""
    model = one_layer_text_model(tiny_text_config, width=96, text_sources=["caption"])
    model.export_to_onnx(tmp_path / "caption", int8=True)
    assert_linear_weights_folded_and_quantised(tmp_path / "caption", model)


def test_the_pipeline_takes_an_onnx_model_and_sends_runtime_options_to_model_kwargs(
    trained, exported, onnx_float
):
    tagger = pipeline("multimodal-ner", model=onnx_float, processor=str(exported))
    expected = pipeline("multimodal-ner", model=str(trained["folder"]), device="cpu")
    post = posts(trained)[0]
    assert [spans(entity) for entity in tagger(post)] == [spans(entity) for entity in expected(post)]
    with pytest.raises(TypeError, match=r"model_kwargs=\{'runtime': 'onnx'\}"):
        pipeline("multimodal-ner", model=onnx_float, processor=str(exported), backend="onnx")
