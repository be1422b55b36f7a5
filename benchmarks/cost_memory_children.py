"""The measurements of `training_cost.py` that run in a child process of their own, so that each peak RSS is
that phase's alone: the neighbour table's first build and cached read, a few training steps of the full model
then saving it, and tagging valid tweets through the pipeline from the saved folder."""

import json
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from accelerate import Accelerator
from cost_configs import FULL, INFER_BATCH_SIZE
from cost_training_steps import build_config_run, load_real_corpus, training_defaults, training_step
from peak_memory import run_measured
from transformers import AutoModelForTokenClassification, AutoProcessor, pipeline

from processing import build_neighbour_table, load_tweet_corpus, load_word_vectors

# The command that runs a child phase (`--child PHASE --child-spec FILE`).
BENCHMARK_SCRIPT = Path(__file__).resolve().with_name("training_cost.py")


# Linux keeps a process's peak RSS across fork and exec: a child started by this (large) process would report
# at least this process's peak. A bare interpreter in between starts the measured process from a small one
# and reads its peak with wait4; it writes the peak (ru_maxrss) and exit code to the file named first.
def child_peak_rss_mib(arguments: Sequence[str], log_path: Path) -> float:
    """Run `python *arguments` in a fresh process and return its own peak resident memory in MiB.

    Raises RuntimeError with the end of the child's standard error (in `log_path`) if it fails.
    """
    exit_status, peak = run_measured(list(arguments), log_path)
    if exit_status != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(
            f"python {shlex.join(arguments)} exited with {exit_status}; its log ({log_path}) ends:\n{tail}"
        )
    return peak


def run_child(phase: str, spec: dict, work_dir: Path) -> tuple[float, dict]:
    """Run `training_cost.py`'s `phase` in a fresh process; returns its peak RSS (MiB) and the JSON it wrote."""
    spec_path = work_dir / f"child-{phase}-{spec.get('encoder_name', 'all')}.json"
    result_path = spec_path.with_suffix(".result.json")
    spec = {**spec, "result_path": str(result_path)}
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    peak = child_peak_rss_mib(
        [str(BENCHMARK_SCRIPT), "--child", phase, "--child-spec", str(spec_path)],
        spec_path.with_suffix(".log"),
    )
    return peak, json.loads(result_path.read_text(encoding="utf-8"))


def child_neighbour_table(spec: dict) -> dict:
    """First build of the neighbour table into an empty cache folder, then the call that reads it back."""
    corpus = load_tweet_corpus(spec["dataset_dir"])
    words = [word for split in corpus.values() for tokens in split["tokens"] for word in tokens]
    started = time.perf_counter()
    vectors = load_word_vectors(spec["word_vectors"])
    vectors_seconds = time.perf_counter() - started
    del vectors
    cache_dir = Path(spec["cache_dir"])
    if cache_dir.exists() and any(cache_dir.iterdir()):
        raise ValueError(f"{cache_dir}: the neighbour cache folder of a first build must be empty")
    started = time.perf_counter()
    table = build_neighbour_table(words, spec["word_vectors"], k=spec["k"], cache_dir=cache_dir)
    first_seconds = time.perf_counter() - started
    started = time.perf_counter()
    cached = build_neighbour_table(words, spec["word_vectors"], k=spec["k"], cache_dir=cache_dir)
    cached_seconds = time.perf_counter() - started
    if cached.vocabulary != table.vocabulary:
        raise RuntimeError(f"the cached neighbour table in {cache_dir} differs from the one just built")
    return {
        "corpus_tokens": len(words),
        "corpus_word_types": len(set(words)),
        "table_words": len(table),
        "k": table.k,
        "dim": table.dim,
        "vectors_load_seconds": vectors_seconds,
        "first_build_seconds": first_seconds,
        "cached_seconds": cached_seconds,
        "cache_bytes": sum(path.stat().st_size for path in cache_dir.rglob("*") if path.is_file()),
    }


def child_train(spec: dict) -> dict:
    """The full model trained for a few steps as train.py trains it, then saved with its processor."""
    torch.set_num_threads(spec["threads"])
    corpus, table = load_real_corpus(spec)
    defaults = training_defaults(Path(spec["dataset_dir"]), Path(spec["encoder_dir"]))
    accelerator = Accelerator(mixed_precision="bf16" if spec["precision"] == "bf16" else "no")
    run = build_config_run(
        FULL, Path(spec["encoder_dir"]), corpus, table, defaults, accelerator, spec["steps"]
    )
    started = time.perf_counter()
    for rows in run.batches:
        training_step(run, rows, accelerator, defaults.max_grad_norm)
    seconds = time.perf_counter() - started
    for item in (accelerator.unwrap_model(run.model), run.processor):
        item.save_pretrained(spec["model_dir"])
    return {"steps": spec["steps"], "train_seconds": seconds}


def child_infer(spec: dict) -> dict:
    """Tag Twitter-2015 valid tweets with their captions through the "multimodal-ner" pipeline."""
    torch.set_num_threads(spec["threads"])
    dtype = torch.bfloat16 if spec["precision"] == "bf16" else torch.float32
    model = AutoModelForTokenClassification.from_pretrained(spec["model_dir"], dtype=dtype)
    processor = AutoProcessor.from_pretrained(spec["model_dir"])
    tagger = pipeline("multimodal-ner", model=model, processor=processor)
    valid = load_tweet_corpus(spec["dataset_dir"], captions_file=spec["captions_file"])["valid"]
    rows = valid.select(range(min(spec["tweets"], len(valid))))
    posts = [{"text": row["tokens"], "caption": row["caption"]} for row in rows]
    started = time.perf_counter()
    outputs = tagger(posts, batch_size=INFER_BATCH_SIZE)
    seconds = time.perf_counter() - started
    if len(outputs) != len(posts):
        raise RuntimeError(f"the pipeline returned {len(outputs)} outputs for {len(posts)} posts")
    return {
        "tweets": len(posts),
        "batch_size": INFER_BATCH_SIZE,
        "weights_dtype": str(dtype).removeprefix("torch."),
        "seconds": seconds,
        "tweets_per_second": len(posts) / seconds,
        "entities_found": sum(len(output) for output in outputs),
    }


CHILD_PHASES: dict[str, Callable[[dict], dict]] = {
    "neighbour_table": child_neighbour_table,
    "train": child_train,
    "infer": child_infer,
}


__all__ = [
    "BENCHMARK_SCRIPT",
    "CHILD_PHASES",
    "child_infer",
    "child_neighbour_table",
    "child_peak_rss_mib",
    "child_train",
    "run_child",
]
