"""Knowledge written for new posts: the pipeline's `knowledge_writer` and `mgcm-predict --knowledge_model`
with a tiny randomly initialised text-generation model, on a tiny model that reads a `knowledge` source."""

import json

import pytest
from test_knowledge_writer import build_pipeline
from transformers import pipeline

import processing  # noqa: F401  (registers the pipeline task)
from processing.knowledge_writer import KnowledgeWriter
from processing.predict_cli import main as predict_main
from processing.tiny_backbones import save_tiny_mgcm

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
