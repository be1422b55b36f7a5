"""GPU check: train, tag and time mgcm on one CUDA device, in a few minutes.

    python benchmarks/gpu_check.py [--output_dir outputs/gpu_check] [--posts 2000]

On one CUDA device it
1. trains the synthetic corpus (600/200/200, tiny random backbones, 4 epochs) with `examples/train.py` in
   bf16 and in fp16, and checks that the train loss falls and that nothing is non-finite (a non-finite loss
   stops the script's training with an error);
2. tags posts with the `multimodal-ner` pipeline and with `mgcm-predict` on `cuda`, and checks that they
   agree;
3. prints, for the tiny synthetic model and for a MiniLM-sized model (6 layers, 384 wide, 12 heads, random
   weights): optimizer step time, peak GPU memory, and posts/s through `mgcm-predict` at batch 64.

It needs the project installed (`pip install -e .`, which brings datasets and seqeval) and prints one table
to paste into BENCHMARKS.md; `--smoke` runs the same steps on the CPU (in float32, on a 64/16/16 corpus, 1
epoch, 100 posts) to check the script itself where no GPU is.
"""

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO / "examples" / "train.py"


def run(command: list[str], **environment: str) -> subprocess.CompletedProcess:
    """Run a command of this check, stopping the whole check with its output if it fails."""
    completed = subprocess.run(
        command, env=dict(os.environ, **environment), capture_output=True, text=True, cwd=REPO
    )
    if completed.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{completed.stderr[-6000:]}")
    return completed


def train(output_dir: Path, precision: str, epochs: int, extra: list[str], cpu: bool) -> dict:
    """One synthetic run of examples/train.py; returns its results.json."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1"]
    command += ["--mixed_precision", precision, "--dynamo_backend", "no"]
    command += ["--cpu"] if cpu else []
    command += [str(TRAIN_SCRIPT), "--synthetic", "--no_text_only_baseline", "--checkpointing_steps", "no"]
    command += ["--synthetic_sizes", "64,16,16"] if cpu else []
    command += ["--num_train_epochs", str(epochs), "--output_dir", str(output_dir), *extra]
    run(command, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return json.loads((output_dir / "results.json").read_text())


def check_loss_falls(results: dict, label: str) -> None:
    losses = [epoch["train_loss"] for epoch in results["history"]]
    if not all(math.isfinite(loss) for loss in losses):
        sys.exit(f"{label}: non-finite train loss {losses}")
    if len(losses) > 1 and not losses[-1] < losses[0]:
        sys.exit(f"{label}: the train loss did not fall: {losses}")


def write_posts(path: Path, count: int) -> None:
    """Synthetic test posts (text and caption) as mgcm-predict's JSON Lines."""
    from processing import make_synthetic_corpus

    test = make_synthetic_corpus(0, 0, count, seed=1)["test"]
    with path.open("w", encoding="utf-8") as sink:
        for row in test:
            sink.write(
                json.dumps({"id": row["id"], "text": " ".join(row["tokens"]), "caption": row["caption"]})
            )
            sink.write("\n")


def predict(model_dir: Path, posts: Path, output: Path, device: str) -> float:
    """Posts per second of mgcm-predict at batch 64, as its summary reports it (model loading excluded), on
    a second run (the first warms the device and the file cache)."""
    command = [
        sys.executable,
        "-m",
        "processing.predict_cli",
        "--model",
        str(model_dir),
        "--input",
        str(posts),
    ]
    command += ["--output", str(output), "--device", device, "--batch_size", "64", "--no_progress"]
    run(command)
    completed = run(command)
    line = next(line for line in completed.stderr.splitlines() if line.startswith("throughput:"))
    return float(line.split()[1])


def check_pipeline_agrees(model_dir: Path, posts: Path, predictions: Path, device: str) -> None:
    """The pipeline on the device tags the first posts as mgcm-predict wrote them."""
    from transformers import pipeline

    import processing  # noqa: F401  (registers the pipeline task)

    tagger = pipeline("multimodal-ner", model=str(model_dir), device=device)
    rows = [json.loads(line) for line in posts.read_text(encoding="utf-8").splitlines()[:64]]
    written = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()[:64]]
    outputs = tagger([{"text": r["text"], "caption": r["caption"]} for r in rows], aggregation="words")

    def tags(entities: list[dict]) -> list[dict]:
        return [
            {key: value for key, value in e.items() if key not in ("score", "marginals")} for e in entities
        ]

    for output, record in zip(outputs, written, strict=True):
        if tags(output["entities"]) != tags(record["entities"]):
            sys.exit(f"the pipeline and mgcm-predict disagree on post {record['id']}")


def minilm_sized_folder(folder: Path) -> Path:
    """A random BERT of all-MiniLM-L6-v2's shape, with a tokenizer over the synthetic corpus's words."""
    from transformers import BertConfig, BertModel

    from processing import make_synthetic_corpus
    from processing.testing.tiny_backbones import build_corpus_tokenizer

    corpus = make_synthetic_corpus(600, 200, 200, seed=42)
    tokenizer = build_corpus_tokenizer(
        sorted({w for split in corpus.values() for t in split["tokens"] for w in t})
    )
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/gpu_check"))
    parser.add_argument("--posts", type=int, default=2000, help="posts tagged for posts/s")
    parser.add_argument("--smoke", action="store_true", help="run on the CPU, small, to check this script")
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("no CUDA device: run this on a GPU machine (or --smoke to check the script on the CPU)")
    device = "cpu" if args.smoke else "cuda"
    epochs, posts_count = (1, 100) if args.smoke else (4, args.posts)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    posts = args.output_dir / "posts.jsonl"
    write_posts(posts, posts_count)

    rows = []
    minilm = minilm_sized_folder(args.output_dir / "minilm-sized-random")
    runs = [
        ("tiny", "bf16", []),
        ("tiny", "fp16", []),
        ("MiniLM-sized", "bf16", ["--text_model", str(minilm), "--learning_rate", "1e-4"]),
    ]
    if args.smoke:
        # Half precision is for the GPU (a CPU without bf16 instructions emulates it slowly).
        runs = [("tiny", "no", []), ("MiniLM-sized", "no", runs[2][2])]
    for model_name, precision, extra in runs:
        label = f"{model_name} {precision}"
        run_dir = args.output_dir / label.replace(" ", "-")
        results = train(run_dir, precision, epochs, extra, cpu=args.smoke)
        check_loss_falls(results, label)
        training = results["training"]
        posts_per_second = predict(run_dir, posts, run_dir / "predictions.jsonl", device)
        check_pipeline_agrees(run_dir, posts, run_dir / "predictions.jsonl", device)
        rows.append(
            {
                "model": model_name,
                "precision": precision,
                "step_ms": 1000 * training["train_seconds"] / training["optimizer_steps"],
                "peak_gpu_mib": training["peak_gpu_memory_mib"],
                "posts_per_second": posts_per_second,
                "test_f1": results["metrics"]["test"]["lenient"]["overall_f1"],
            }
        )
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke run)"
    print(
        f"\n{name}, torch {torch.__version__}; step time includes data loading; posts/s: mgcm-predict, batch 64"
    )
    print(f"{'model':<14}{'precision':<11}{'step ms':>9}{'peak GPU MiB':>14}{'posts/s':>10}{'test F1':>9}")
    for row in rows:
        memory = "-" if row["peak_gpu_mib"] is None else f"{row['peak_gpu_mib']:.0f}"
        print(
            f"{row['model']:<14}{row['precision']:<11}{row['step_ms']:>9.1f}{memory:>14}"
            f"{row['posts_per_second']:>10.1f}{100 * row['test_f1']:>9.2f}"
        )
    (args.output_dir / "gpu_check.json").write_text(json.dumps({"device": name, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
