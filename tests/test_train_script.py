"""End-to-end runs of `examples/train.py` on a small synthetic corpus, in subprocesses as a user runs it."""

import importlib.util
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from accelerate import Accelerator
from huggingface_hub import ModelCard
from torch.utils.data import DataLoader
from training_runs import TRAIN_SCRIPT, run_environment, run_train_script
from transformers import AutoModelForTokenClassification, AutoProcessor

import modeling_mgcm  # noqa: F401  (registers the Auto classes)
from processing import LABEL_NAMES, ImageFeatureCache, MGCMDataCollator, make_synthetic_corpus
from processing.evaluation.corpus_evaluation import evaluate_corpus
from processing.evaluation.prediction_files import read_predictions
from processing.training.checkpointing import latest_checkpoint
from processing.training.window_rows import preprocess_corpus

REPO = Path(__file__).resolve().parents[1]
SIZES = (64, 24, 24)
SEED = 7
SMALL_RUN = [
    "--synthetic",
    "--synthetic_sizes",
    ",".join(map(str, SIZES)),
    "--seed",
    str(SEED),
    "--per_device_train_batch_size",
    "8",
    "--no_text_only_baseline",
]


def train(output_dir: Path, *extra: str, processes: int = 1) -> dict:
    completed = run_train_script([*SMALL_RUN, "--output_dir", str(output_dir), *extra], processes=processes)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads((output_dir / "results.json").read_text())


def overall_scores(results: dict) -> dict:
    return {
        (split, mode): (metrics["overall_precision"], metrics["overall_recall"], metrics["overall_f1"])
        for split, by_mode in results["metrics"].items()
        for mode, metrics in by_mode.items()
    }


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory) -> tuple[Path, dict]:
    output_dir = tmp_path_factory.mktemp("single") / "run"
    return output_dir, train(
        output_dir, "--num_train_epochs", "3", "--checkpointing_steps", "4", "--with_tracking"
    )


def test_tracking_records_the_learning_rate_of_every_group_at_every_optimizer_step(single_process_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output_dir, results = single_process_run
    # The hyperparameters go to an event file of their own, in a subfolder; the scalars to the run's folder.
    folders = {path.parent for path in output_dir.rglob("events.out.tfevents*")}
    accumulators = [EventAccumulator(str(folder)).Reload() for folder in folders]
    (events,) = [found for found in accumulators if "learning_rate/fusion" in found.Tags()["scalars"]]
    steps = results["training"]["optimizer_steps"]
    assert steps == 24  # 64 tweets in batches of 8, 3 epochs
    for group in ("backbone", "fusion", "crf"):
        rates = {event.step: event.value for event in events.Scalars(f"learning_rate/{group}")}
        assert sorted(rates) == list(range(1, steps + 1))
        # Linear warm-up over 2 steps (10% of 24) from 0, then linear decay towards 0 at step 25.
        assert rates[1] == 0.0 and rates[3] > rates[4] > rates[steps] > 0
    valid = [event.step for event in events.Scalars("valid_f1")]
    assert valid == [8, 16, 24]


def test_run_writes_results_for_every_split_in_both_seqeval_modes(single_process_run):
    output_dir, results = single_process_run
    assert set(results["metrics"]) == {"train", "valid", "test"}
    for by_mode in results["metrics"].values():
        assert set(by_mode) == {"lenient", "strict"}
    assert results["training"]["num_processes"] == 1
    assert len(results["history"]) == 3
    for epoch in results["history"]:
        assert epoch["train_seconds"] > 0 and epoch["valid_seconds"] > 0 and epoch["train_batches"] > 0
    assert results["training"]["peak_rss_mib"] > 50
    # Every split's predictions, one file each (their content: tests/test_knowledge_source.py).
    assert sorted(path.name for path in (output_dir / "predictions").iterdir()) == [
        "test.tsv",
        "train.tsv",
        "valid.tsv",
    ]
    best = max(results["history"], key=lambda epoch: epoch["valid_f1"])
    assert results["training"]["best_epoch"] == best["epoch"]
    # Synthetic tweets without an image are counted, never replaced.
    assert results["images"]["missing"] > 0 and results["images"]["with_features"] > 0
    card = (output_dir / "README.md").read_text()
    assert "| test | lenient |" in card and "never selected on test" in card
    # The card's metadata holds the valid and test F1 of both seqeval modes, as the Hub reads them.
    data = ModelCard.load(output_dir / "README.md").data
    assert {(r.dataset_split, r.metric_config): r.metric_value for r in data.eval_results} == {
        (split, mode): round(results["metrics"][split][mode]["overall_f1"], 4)
        for split in ("valid", "test")
        for mode in ("lenient", "strict")
    }
    assert data.datasets == ["synthetic"] and "pipeline_tag" not in data.to_dict()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--final_eval_splits", "valid,tset"], "--final_eval_splits: no split ['tset']"),
        (
            ["--text_source_as_segment", "knowledge"],
            "names ['knowledge'], which no --text_source",
        ),
        (
            ["--caption_as_text_segment", "--granularities", "image,caption"],
            "a text source is either a segment or a granularity",
        ),
        (["--text_source", "knowledge"], "--text_source takes NAME=VALUE, got 'knowledge'"),
        (["--input_dropout", "knowledge=0.3"], "--input_dropout names ['knowledge']"),
    ],
)
def test_bad_run_options_stop_before_training_with_a_clear_message(tmp_path, arguments, message):
    completed = run_train_script([*SMALL_RUN, "--output_dir", str(tmp_path / "run"), *arguments])
    assert completed.returncode != 0
    assert message in completed.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_caption_segment_control_trains_a_text_model_that_reads_the_caption(tmp_path):
    output_dir = tmp_path / "concat"
    results = train(
        output_dir,
        "--granularities=",
        "--caption_as_text_segment",
        "--num_train_epochs",
        "1",
        "--url_token",
        "http",
    )
    assert results["run"]["granularities"] == [] and results["run"]["args"]["caption_as_text_segment"]
    model = AutoModelForTokenClassification.from_pretrained(output_dir)
    processor = AutoProcessor.from_pretrained(output_dir)
    assert not model.config.use_caption
    assert processor.caption_as_text_segment and processor.url_token == "http"


def test_the_selected_model_and_processor_load_through_the_auto_classes(single_process_run):
    output_dir, results = single_process_run
    model = AutoModelForTokenClassification.from_pretrained(output_dir)
    processor = AutoProcessor.from_pretrained(output_dir)
    assert type(model).__name__ == "MGCMForTokenClassification"
    assert type(processor).__name__ == "MGCMProcessor"
    assert (output_dir / "model.safetensors").is_file()
    assert not list(output_dir.glob("*.bin")), "weights must be safetensors"
    # The reloaded model reproduces the run's test metrics: it is the selected checkpoint.
    assert evaluate_saved_model(output_dir, "test")[0] == results["metrics"]["test"]


def test_the_benchmark_collector_reads_a_real_run_s_results(single_process_run, tmp_path):
    output_dir, results = single_process_run
    spec = importlib.util.spec_from_file_location("collect", REPO / "benchmarks" / "collect_accuracy.py")
    collect_accuracy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(collect_accuracy)
    run_dir = tmp_path / "t15-minilm-full-s7"
    run_dir.mkdir()
    shutil.copy(output_dir / "results.json", run_dir)
    records = {record["split"]: record for record in collect_accuracy.run_records(run_dir)}
    assert set(records) == {"train", "valid", "test"}
    for split, record in records.items():
        assert record["overall_f1"] == results["metrics"][split]["lenient"]["overall_f1"]
        assert record["strict_f1"] == results["metrics"][split]["strict"]["overall_f1"]
        assert record["epochs"] == 3 and record["best_epoch"] == results["training"]["best_epoch"] + 1
        # Uninterrupted, the epochs' timed stretches are the whole training.
        assert record["train_seconds"] == sum(epoch["train_seconds"] for epoch in results["history"]) > 0
        assert record["train_seconds"] <= results["training"]["train_seconds"]
        assert record["timed_train_batches"] == 3 * results["training"]["train_batches_per_process"]
        assert record["valid_f1_per_epoch"] == [epoch["valid_f1"] for epoch in results["history"]]
        assert set(record["per_type"]) <= {"PER", "LOC", "ORG", "MISC"} and record["per_type"]


def evaluate_saved_model(output_dir: Path, split_name: str) -> tuple[dict, list[list[int]]]:
    """Single-process evaluation of a saved run, rebuilding its corpus and reading its feature cache:
    (metrics, tag ids per tweet)."""
    model = AutoModelForTokenClassification.from_pretrained(output_dir)
    processor = AutoProcessor.from_pretrained(output_dir)
    corpus = make_synthetic_corpus(*SIZES, seed=SEED)
    backbone_folders = [path for path in (output_dir / "cache" / "image_features").iterdir() if path.is_dir()]
    assert len(backbone_folders) == 1
    cache = ImageFeatureCache(output_dir / "cache" / "image_features", None, None, backbone_folders[0].name)
    split = corpus[split_name]
    windows = preprocess_corpus(processor, split)
    loader = DataLoader(
        windows, batch_size=5, collate_fn=MGCMDataCollator(processor, cache, return_window_info=True)
    )
    accelerator = Accelerator()
    model, loader = accelerator.prepare(model, loader)
    return evaluate_corpus(model, loader, accelerator, split, model.config.id2label)


def test_a_run_killed_mid_training_resumes_to_the_same_metrics(single_process_run, tmp_path):
    _, uninterrupted = single_process_run
    output_dir = tmp_path / "killed"
    command = [sys.executable, str(TRAIN_SCRIPT), *SMALL_RUN, "--output_dir", str(output_dir)]
    command += ["--num_train_epochs", "3", "--checkpointing_steps", "4"]
    process = subprocess.Popen(
        command, env=run_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300
    # Kill as soon as the second checkpoint (step 8, inside epoch 1 of 8-batch epochs) is complete.
    while time.monotonic() < deadline and process.poll() is None:
        checkpoint = latest_checkpoint(output_dir / "checkpoints")
        if checkpoint is not None and checkpoint.name == "step_8":
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (output_dir / "results.json").exists()

    resumed = train(
        output_dir,
        "--num_train_epochs",
        "3",
        "--checkpointing_steps",
        "4",
        "--resume_from_checkpoint",
        "latest",
    )
    assert [epoch["valid_f1"] for epoch in resumed["history"]] == [
        epoch["valid_f1"] for epoch in uninterrupted["history"]
    ]
    assert overall_scores(resumed) == overall_scores(uninterrupted)
    assert resumed["metrics"] == uninterrupted["metrics"]


@pytest.mark.multiprocess
def test_two_process_cpu_run_splits_the_batches_and_gathers_every_example(tmp_path):
    output_dir = tmp_path / "ddp"
    results = train(output_dir, "--num_train_epochs", "1", processes=2)
    training = results["training"]
    assert training["num_processes"] == 2
    assert training["train_batches_per_process"] == -(-training["train_batches_total"] // 2)
    assert training["train_batches_seen_this_process"] == training["train_batches_per_process"]
    # gather_for_metrics: the two-process evaluation equals a single-process one of the same model.
    metrics, predictions = evaluate_saved_model(output_dir, "valid")
    assert metrics == results["metrics"]["valid"]
    # The first process's predictions file holds every tweet once, as the single-process evaluation tags it.
    written = read_predictions(output_dir / "predictions" / "valid.tsv")
    assert [[LABEL_NAMES.index(tag) for tag in tags] for _, _, tags in written.values()] == predictions
