"""Knowledge written for new posts: the pipeline's `knowledge_writer` and `mgcm-predict --knowledge_model`
with a tiny randomly initialised text-generation model, on a tiny model that reads a `knowledge` source."""

import json
import shutil

import pytest
import torch
from clean_process import KNOWLEDGE_TAGGING_SCRIPT, run_clean_script
from safetensors.torch import load_file
from tiny_text_generation import build_pipeline
from training_runs import fake_results
from transformers import AutoModelForTokenClassification, AutoProcessor, pipeline

import modeling_mgcm  # noqa: F401  (registers the pipeline task)
from modeling_mgcm.knowledge_writer import KnowledgeWriter
from processing import WINDOW_INFO_KEYS
from processing.predict_cli import main as predict_main
from processing.testing.tiny_backbones import save_tiny_mgcm
from processing.training.hub_export import export_to_hub

POSTS = [
    {"text": "Jordan visits Phoenix", "caption": "a man on a court"},
    {"text": "Obama in Paris"},
    {"text": "photo of Obama", "caption": "a person", "knowledge": "Obama (person) is named."},
]


@pytest.fixture(scope="module")
def knowledge_model_dir(tmp_path_factory):
    return save_tiny_mgcm(
        tmp_path_factory.mktemp("tiny-knowledge-mgcm"),
        max_length=32,
        stride=4,
        text_source_max_lengths={"knowledge": 24},
    )


@pytest.fixture(scope="module")
def tagger(knowledge_model_dir):
    return pipeline("multimodal-ner", model=str(knowledge_model_dir), device="cpu")


def test_a_text_generation_pipeline_writes_the_knowledge_of_posts_without_it(tagger):
    generator = build_pipeline()
    written = tagger(POSTS, aggregation="words", knowledge_writer=generator, batch_size=3)
    # The same knowledge, written by hand with the same generator and given with the posts.
    writer = KnowledgeWriter(generator)
    knowledge = writer([post["text"] for post in POSTS[:2]], [post.get("caption") for post in POSTS[:2]])
    assert all(knowledge)
    given = tagger(
        [POSTS[0] | {"knowledge": knowledge[0]}, POSTS[1] | {"knowledge": knowledge[1]}, POSTS[2]],
        aggregation="words",
        batch_size=3,
    )
    assert written == given
    assert all(word["gates"]["knowledge"] > 0 for post in written for word in post["words"])
    without = tagger(POSTS[:2], aggregation="words", batch_size=3)
    assert all(word["gates"]["knowledge"] == 0 for post in without for word in post["words"])


def test_a_knowledge_writer_for_a_model_without_knowledge_is_refused(tiny_mgcm_dir):
    tagger = pipeline("multimodal-ner", model=str(tiny_mgcm_dir), device="cpu")
    with pytest.raises(ValueError, match="does not read 'knowledge'"):
        tagger(POSTS[0], knowledge_writer=lambda texts, captions: ["x"] * len(texts))


def test_mgcm_predict_writes_knowledge_with_a_local_model_and_caches_it(
    knowledge_model_dir, tmp_path, tagger
):
    generator_dir = tmp_path / "generator"
    generator = build_pipeline()
    generator.model.save_pretrained(generator_dir)
    generator.tokenizer.save_pretrained(generator_dir)
    source = tmp_path / "posts.jsonl"
    source.write_text("".join(json.dumps(post) + "\n" for post in POSTS), encoding="utf-8")
    cache = tmp_path / "knowledge.jsonl"
    arguments = [
        "--model",
        str(knowledge_model_dir),
        "--input",
        str(source),
        "--knowledge_model",
        str(generator_dir),
    ]
    arguments += ["--knowledge_cache", str(cache), "--knowledge_max_new_tokens", "12"]
    outputs = []
    for run in range(2):
        output = tmp_path / f"predictions-{run}.jsonl"
        assert predict_main([*arguments, "--output", str(output)]) == 0
        outputs.append(output.read_text())
        # Two posts lack knowledge: written once, served from the cache on the second run.
        assert len(cache.read_text().splitlines()) == 2
    assert outputs[0] == outputs[1]
    writer = KnowledgeWriter(build_pipeline(), max_new_tokens=12)
    expected = tagger(POSTS, knowledge_writer=writer, batch_size=32)
    records = [json.loads(line) for line in outputs[0].splitlines()]
    assert [record["entities"] for record in records] == json.loads(json.dumps(expected))


@pytest.mark.usefixtures("single_thread")
def test_the_hub_export_of_a_knowledge_model_reads_knowledge_in_a_clean_process(
    knowledge_model_dir, tmp_path
):

    training_dir = tmp_path / "run"
    shutil.copytree(knowledge_model_dir, training_dir)
    (training_dir / "results.json").write_text(json.dumps(fake_results()), encoding="utf-8")
    exported = tmp_path / "hub"
    export_to_hub(training_dir, exported)
    batch = {
        "words": [post["text"].split() for post in POSTS],
        "captions": [post.get("caption") for post in POSTS],
        "knowledge": ["Jordan (person) Phoenix (location)", "Obama (person)", None],
    }
    (tmp_path / "batch.json").write_text(json.dumps(batch), encoding="utf-8")
    result_file = tmp_path / "remote.safetensors"
    completed = run_clean_script(
        KNOWLEDGE_TAGGING_SCRIPT,
        [str(exported), str(tmp_path / "batch.json"), str(result_file)],
        tmp_path / "clean",
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert json.loads(completed.stdout.strip().splitlines()[-1])["text_sources"] == ["caption", "knowledge"]
    remote = load_file(str(result_file))
    model = AutoModelForTokenClassification.from_pretrained(knowledge_model_dir).eval()
    processor = AutoProcessor.from_pretrained(knowledge_model_dir)
    inputs = processor(
        words=batch["words"], captions=batch["captions"], text_sources={"knowledge": batch["knowledge"]}
    )
    with torch.no_grad():
        output = model(**{k: v for k, v in inputs.items() if k not in WINDOW_INFO_KEYS})
    assert torch.equal(remote["with.logits"], output.logits)
    assert torch.equal(remote["with.knowledge_gate"], output.gate_values["knowledge"])
    # The third post has no knowledge: its gate is zero, as for every post of the run without knowledge.
    assert (remote["with.knowledge_gate"][:2].sum(dim=1) > 0).all() and (
        remote["with.knowledge_gate"][2] == 0
    ).all()
    assert (remote["without.knowledge_gate"] == 0).all()
