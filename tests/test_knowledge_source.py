"""A model trained on Twitter-2015 with PGIM's knowledge as a text source (`--text_source knowledge=...`), end
to end: it saves and reloads, tags through the pipeline and `mgcm-predict` with and without knowledge (and
with knowledge written for it), and exports to a Hub folder that loads as remote code in a clean process."""

import json
from pathlib import Path

import pytest
import torch
from clean_process import KNOWLEDGE_TAGGING_SCRIPT, run_clean_script
from safetensors.torch import load_file
from training_runs import run_train_script
from transformers import AutoModelForTokenClassification, AutoProcessor, pipeline

import modeling_mgcm  # noqa: F401  (registers the Auto classes)
from modeling_mgcm import WINDOW_INFO_KEYS
from processing import LABEL_NAMES, load_tweet_corpus, write_conll
from processing.evaluation.metrics import MODES, ner_metrics
from processing.evaluation.prediction_files import read_predictions
from processing.predict_cli import main as predict_main
from processing.training.hub_export import export_to_hub

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CORPUS = DATA / "twitter2015"
CAPTIONS = DATA / "captions" / "twitter2015_blip2.txt"
KNOWLEDGE = DATA / "knowledge" / "twitter2015_pgim.txt"
KNOWLEDGE_LENGTH = 48
# Tweets of each split kept for the run: enough for every label, small enough for a test.
SUBSET = {"train": 48, "valid": 24, "test": 24}

pytestmark = pytest.mark.skipif(
    not (CORPUS.is_dir() and KNOWLEDGE.is_file() and CAPTIONS.is_file()),
    reason="../shared/data with Twitter-2015, its captions and its knowledge is not here",
)


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory) -> Path:
    """The output folder of a short train.py run on the first tweets of each Twitter-2015 split."""
    root = tmp_path_factory.mktemp("knowledge-run")
    subset_dir = root / "twitter2015"
    subset_dir.mkdir()
    corpus = load_tweet_corpus(CORPUS)
    for split, size in SUBSET.items():
        write_conll(corpus[split].select(range(size)), subset_dir / f"{split}.txt")
    output_dir = root / "run"
    completed = run_train_script(
        [
            "--dataset_dir",
            str(subset_dir),
            "--captions_file",
            str(CAPTIONS),
            "--text_source",
            f"knowledge={KNOWLEDGE}",
            "--text_source_max_length",
            f"knowledge={KNOWLEDGE_LENGTH}",
            "--text_source_origin",
            "knowledge=PGIM (Li et al. 2023), written by ChatGPT",
            "--input_dropout",
            "knowledge=0.3",
            "--drop_text_sources_at_eval",
            "knowledge",
            "--num_train_epochs",
            "2",
            "--checkpointing_steps",
            "2",
            "--output_dir",
            str(output_dir),
        ]
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return output_dir


@pytest.fixture(scope="module")
def valid_posts() -> list[dict]:
    """Valid tweets of the run with their caption and knowledge, as pipeline posts."""
    corpus = load_tweet_corpus(CORPUS, captions_file=CAPTIONS, text_source_files={"knowledge": KNOWLEDGE})
    rows = corpus["valid"].select(range(SUBSET["valid"]))
    return [
        {"text": row["tokens"], "caption": row["caption"], "knowledge": row["knowledge"]}
        for row in rows
        if row["knowledge"]
    ]


def test_the_saved_model_records_the_knowledge_source(trained_dir):
    config = json.loads((trained_dir / "config.json").read_text())
    assert config["text_sources"] == ["caption", "knowledge"]
    assert config["input_dropout"] == {"knowledge": 0.3}
    settings = json.loads((trained_dir / "processor_config.json").read_text())
    assert settings["text_source_max_lengths"] == {"caption": 32, "knowledge": KNOWLEDGE_LENGTH}
    results = json.loads((trained_dir / "results.json").read_text())
    knowledge = next(source for source in results["run"]["text_sources"] if source["name"] == "knowledge")
    assert knowledge["role"] == "granularity" and knowledge["file"] == str(KNOWLEDGE)
    assert knowledge["coverage"]["train"] > 0.9
    # The same checkpoint scored without knowledge, on every final split.
    assert results["metrics_without"]["text_sources"] == ["knowledge"]
    assert set(results["metrics_without"]["metrics"]) == set(SUBSET)
    # Each split's predictions, with and without knowledge, beside the corpus words: they score as results.json.
    corpus = load_tweet_corpus(CORPUS)
    for split, size in SUBSET.items():
        for suffix, metrics in (
            ("", results["metrics"]),
            ("-without-knowledge", results["metrics_without"]["metrics"]),
        ):
            posts = read_predictions(trained_dir / "predictions" / f"{split}{suffix}.tsv")
            rows = corpus[split].select(range(size))
            assert list(posts) == rows["id"] and [words for words, _, _ in posts.values()] == rows["tokens"]
            gold, predicted = [tags for _, tags, _ in posts.values()], [tags for _, _, tags in posts.values()]
            assert gold == [[LABEL_NAMES[tag] for tag in tags] for tags in rows["ner_tags"]]
            for mode in MODES:
                assert ner_metrics(gold, predicted, mode=mode) == metrics[split][mode]
    card = (trained_dir / "README.md").read_text()
    assert "## Text sources" in card and "PGIM (Li et al. 2023), written by ChatGPT" in card
    assert knowledge["sha256"][:16] in card
    # Step checkpoints: every 2 steps and at each epoch end, the newest kept.
    assert (trained_dir / "checkpoints").is_dir()


def test_the_reloaded_model_reads_the_knowledge(trained_dir, valid_posts):
    model = AutoModelForTokenClassification.from_pretrained(trained_dir).eval()
    processor = AutoProcessor.from_pretrained(trained_dir)
    post = valid_posts[0]
    captions = [post["caption"]]
    with_knowledge = processor(
        [post["text"]], captions=captions, text_sources={"knowledge": [post["knowledge"]]}
    )
    without = processor([post["text"]], captions=captions, text_sources={"knowledge": [None]})
    assert with_knowledge["knowledge_attention_mask"].sum() == KNOWLEDGE_LENGTH
    assert without["knowledge_attention_mask"].sum() == 0
    with torch.no_grad():
        logits = [
            model(**{k: v for k, v in inputs.items() if k not in WINDOW_INFO_KEYS}).logits
            for inputs in (with_knowledge, without)
        ]
    assert not torch.allclose(logits[0], logits[1])


def test_the_pipeline_tags_posts_with_and_without_knowledge(trained_dir, valid_posts):
    tagger = pipeline("multimodal-ner", model=str(trained_dir), device="cpu")
    with_knowledge = tagger(valid_posts[:4], aggregation="words")
    stripped = [{key: value for key, value in post.items() if key != "knowledge"} for post in valid_posts[:4]]
    without = tagger(stripped, aggregation="words")
    for post, tagged, bare in zip(valid_posts, with_knowledge, without, strict=False):
        assert len(tagged["words"]) == len(bare["words"]) == len(post["text"])
        assert all(word["gates"]["knowledge"] > 0 for word in tagged["words"])
        assert all(word["gates"]["knowledge"] == 0 for word in bare["words"])
        assert all(word["gates"]["caption"] > 0 for word in bare["words"])


def test_a_knowledge_writer_gives_the_pipeline_knowledge_for_posts_without_it(trained_dir, valid_posts):
    knowledge_of = {" ".join(post["text"]): post["knowledge"] for post in valid_posts}
    calls = []

    def write_knowledge(texts, captions):
        calls.append((list(texts), list(captions)))
        return [knowledge_of[text] for text in texts]

    tagger = pipeline("multimodal-ner", model=str(trained_dir), device="cpu")
    posts = valid_posts[:3]
    stripped = [{"text": post["text"], "caption": post["caption"]} for post in posts]
    written = tagger(stripped, aggregation="words", knowledge_writer=write_knowledge, batch_size=3)
    given = tagger(posts, aggregation="words", batch_size=3)
    assert written == given
    # One call for the batch, with the text (words joined) and the caption of each post.
    assert calls == [([" ".join(post["text"]) for post in posts], [post["caption"] for post in posts])]
    # A post that says it has no knowledge ("") is not written for.
    tagger({"text": posts[0]["text"], "knowledge": ""}, knowledge_writer=write_knowledge)
    assert len(calls) == 1


def test_mgcm_predict_tags_jsonl_posts_with_and_without_knowledge(trained_dir, valid_posts, tmp_path, capsys):
    posts = [
        {"id": "with", **valid_posts[0]},
        {"id": "without", "text": valid_posts[0]["text"], "caption": valid_posts[0]["caption"]},
        {"id": "bad", "text": "Paris", "knowledge": ["not", "a", "string"]},
    ]
    source = tmp_path / "posts.jsonl"
    source.write_text("".join(json.dumps(post) + "\n" for post in posts), encoding="utf-8")
    output = tmp_path / "predictions.jsonl"
    assert predict_main(["--model", str(trained_dir), "--input", str(source), "--output", str(output)]) == 0
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [record["id"] for record in records] == ["with", "without", "bad"]
    assert "entities" in records[0] and "entities" in records[1]
    assert "'knowledge' must be a string" in records[2]["error"]

    tagger = pipeline("multimodal-ner", model=str(trained_dir), device="cpu")
    assert records[0]["entities"] == json.loads(json.dumps(tagger(valid_posts[0])))
    capsys.readouterr()
    text, knowledge = " ".join(valid_posts[0]["text"]), valid_posts[0]["knowledge"]
    arguments = ["--model", str(trained_dir), "--text", text, "--text_source", f"knowledge={knowledge}"]
    assert predict_main(arguments) == 0
    single = json.loads(capsys.readouterr().out)
    expected = tagger({"text": text, "knowledge": knowledge})
    assert single["entities"] == json.loads(json.dumps(expected))


@pytest.mark.usefixtures("single_thread")
def test_the_hub_export_loads_in_a_clean_process_and_reads_the_knowledge(trained_dir, valid_posts, tmp_path):

    exported = tmp_path / "hub"
    export_to_hub(trained_dir, exported)
    batch = {
        "words": [post["text"] for post in valid_posts[:3]],
        "captions": [post["caption"] for post in valid_posts[:3]],
        "knowledge": [post["knowledge"] for post in valid_posts[:3]],
    }
    (tmp_path / "batch.json").write_text(json.dumps(batch), encoding="utf-8")
    completed = run_clean_script(
        KNOWLEDGE_TAGGING_SCRIPT,
        [str(exported), str(tmp_path / "batch.json"), str(tmp_path / "remote.safetensors")],
        tmp_path / "clean",
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    loaded = json.loads(completed.stdout.strip().splitlines()[-1])
    assert loaded["model"].startswith("transformers_modules.")
    assert loaded["text_sources"] == ["caption", "knowledge"]
    remote = load_file(str(tmp_path / "remote.safetensors"))

    model = AutoModelForTokenClassification.from_pretrained(trained_dir).eval()
    processor = AutoProcessor.from_pretrained(trained_dir)
    inputs = processor(
        words=batch["words"], captions=batch["captions"], text_sources={"knowledge": batch["knowledge"]}
    )
    with torch.no_grad():
        logits = model(**{k: v for k, v in inputs.items() if k not in WINDOW_INFO_KEYS}).logits
    assert torch.equal(remote["with.logits"], logits)
    assert (remote["with.knowledge_gate"].sum(dim=1) > 0).all()
    assert (remote["without.knowledge_gate"] == 0).all()
    assert not torch.equal(remote["with.logits"], remote["without.logits"])
