"""Speed and accuracy of the "multimodal-ner" pipeline on each backend: torch float32, torch bfloat16, ONNX
Runtime float32 and ONNX Runtime dynamic int8, side by side in one run.

    python benchmarks/inference.py [--encoders minilm,mpnet] [--configs text,full,full+knowledge]
                                   [--backends torch-float32,torch-bfloat16,onnx-float32,onnx-int8]
                                   [--posts 256] [--single-posts 50] [--threads N]
                                   [--trained-model FOLDER | --trained-model none] [--json FILE]

For every encoder and config, the model is built as `examples/train.py` builds it with the flags of
`benchmarks/run_accuracy.sh` (`text`: no granularity, no word shape, no augmentation; `full`: word shape, gated
semantic augmentation over GloVe 6B 50d, the BLIP-2 caption; `full+knowledge`: `full` and PGIM's knowledge as a
second text source of 200 pieces; all with `--url_token http`). Its MGCM layers are randomly initialised, which
costs the same time; it is saved and exported to ONNX (float32 and int8) once. Posts are Twitter-2015 valid
tweets (words joined by spaces, as raw text) with the text sources their config reads.

Per backend it prints posts/s over `--posts` posts at batch 32 (after a warm-up batch), the median and p90
latency of `--single-posts` posts tagged one at a time through the pipeline, and the share of the pipeline's
forward stage. For `full` it also times the bare encoder alone, exported to ONNX and quantised with the same
settings, on the very word pieces the int8 pipeline gave its graph (tweet and caption, batch by batch): the
limit the pipeline can approach. Last, the trained model `--trained-model` (default: the issue-16 run
`outputs/benchmarks/t15-minilm-full+knowledge-s1/best_model` when present) tags the Twitter-2015 test split
through the pipeline (words as given, caption, knowledge) on each backend; its entity F1 is scored by seqeval
in both modes, and the int8 tags are compared word by word with float32's.

Run it with nothing else on the CPU: every figure is a ratio to another measured in the same run.
"""

import argparse
import inspect
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from torch import nn
from transformers import AutoModel, pipeline

from modeling_mgcm import (
    MGCMConfig,
    MGCMForTokenClassification,
    MGCMOnnxForTokenClassification,
    MGCMProcessor,
)
from modeling_mgcm.onnx_export import export_program, quantize_onnx
from processing import LABEL_NAMES, load_tweet_corpus
from processing.evaluation.metrics import MODES, ner_metrics
from processing.training.arguments import parse_args as parse_train_args
from processing.training.model_building import build_model
from processing.training.run_data import (
    build_processor,
    build_tokenizer,
    corpus_neighbour_table,
    load_corpus,
    object_label_vocabulary,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OFFLINE_MODELS = Path(
    os.environ.get("MGCM_OFFLINE_MODELS", str(Path.home() / ".cache" / "mgcm-offline-models"))
)
ENCODERS = {"minilm": "all-MiniLM-L6-v2", "mpnet": "all-mpnet-base-v2"}
BACKENDS = ("torch-float32", "torch-bfloat16", "onnx-float32", "onnx-int8")
TRAINED_RUN = PROJECT_ROOT / "outputs" / "benchmarks" / "t15-minilm-full+knowledge-s1" / "best_model"
KNOWLEDGE_LENGTH = 200


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoders", default="minilm,mpnet", help=f"comma-separated, of {sorted(ENCODERS)}")
    parser.add_argument("--configs", default="text,full,full+knowledge")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--data-dir", default=str(PROJECT_ROOT / ".." / "shared" / "data"))
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch and ONNX Runtime threads")
    parser.add_argument("--posts", type=int, default=256, help="posts timed at batch 32 (MiniLM)")
    parser.add_argument("--single-posts", type=int, default=50, help="posts timed one at a time (MiniLM)")
    parser.add_argument("--mpnet-posts", type=int, default=64, help="posts timed at batch 32 with MPNet")
    parser.add_argument("--mpnet-single-posts", type=int, default=16, help="posts timed one at a time, MPNet")
    parser.add_argument(
        "--trained-model",
        default=str(TRAINED_RUN),
        help="a trained Twitter-2015 model folder to score on test under each backend ('none' to skip)",
    )
    parser.add_argument("--f1-posts", type=int, default=None, help="score the first N test posts only")
    parser.add_argument(
        "--work-dir", default=None, help="where models are saved and exported (default: a tmp dir)"
    )
    parser.add_argument(
        "--cache-dir",
        default=str(PROJECT_ROOT / "outputs" / "benchmarks" / "cache-t15"),
        help="the neighbour-table cache (default: the accuracy runs'; built there if absent)",
    )
    parser.add_argument(
        "--json",
        default=str(PROJECT_ROOT / "benchmarks" / "results" / "inference.json"),
        help="every figure, as JSON",
    )
    return parser.parse_args()


def config_flags(config: str, data_dir: Path) -> list[str]:
    """The training flags of a config, as `benchmarks/run_accuracy.sh` gives them (Twitter-2015 files)."""
    glove = str(OFFLINE_MODELS / "glove-6b-50d")
    captions = str(data_dir / "captions" / "twitter2015_blip2.txt")
    full = ["--captions_file", captions, "--word_vectors", glove, "--augmentation_mode", "gate"]
    knowledge = [
        "--text_source", f"knowledge={data_dir / 'knowledge' / 'twitter2015_pgim.txt'}",
        "--text_source_max_length", f"knowledge={KNOWLEDGE_LENGTH}",
    ]  # fmt: skip
    flags = {
        "text": ["--granularities=", "--augmentation_mode", "none", "--no_word_shape"],
        "full": ["--granularities=caption", *full],
        "full+knowledge": ["--granularities=caption,knowledge", *full, *knowledge],
    }
    return flags[config]


def build_setting(
    encoder: str, config: str, data_dir: Path, work_dir: Path, cache_dir: Path
) -> tuple[Path, list[dict]]:
    """Save the model and processor of `config` over `encoder` into a folder with its ONNX files; returns the
    folder and the Twitter-2015 valid posts with the inputs the config reads."""
    folder = work_dir / f"{encoder}-{config}"
    args = parse_train_args(
        [
            "--dataset_dir", str(data_dir / "twitter2015"),
            "--text_model", str(OFFLINE_MODELS / ENCODERS[encoder]),
            "--url_token", "http",
            "--output_dir", str(folder),
            *config_flags(config, data_dir),
        ]
    )  # fmt: skip
    corpus = load_corpus(args)
    tokenizer = build_tokenizer(args, corpus)
    table = corpus_neighbour_table(args, corpus, PartialState(), cache_dir)
    labels = object_label_vocabulary(args)
    torch.manual_seed(0)
    model = build_model(args, tokenizer, table, labels).eval()
    build_processor(args, corpus, model.config, tokenizer, None, table, labels).save_pretrained(folder)
    model.export_to_onnx(folder, int8=True)
    sources = list(model.config.text_sources)
    posts = [
        {"text": " ".join(row["tokens"]), **{name: row[name] for name in sources}} for row in corpus["valid"]
    ]
    return folder, posts


def load_backend(backend: str, folder: Path, threads: int, onnx_cache_dir: Path | None = None):
    """The model of `folder` on `backend` (torch weights only for the torch backends)."""
    if backend.startswith("torch-"):
        dtype = getattr(torch, backend.removeprefix("torch-"))
        return MGCMForTokenClassification.from_pretrained(folder, dtype=dtype).eval()
    return MGCMOnnxForTokenClassification.from_pretrained(
        folder,
        int8=backend == "onnx-int8",
        session_options={"intra_op_num_threads": threads, "inter_op_num_threads": 1},
        onnx_cache_dir=onnx_cache_dir,
    )


def time_stages(tagger) -> dict[str, float]:
    """Wrap the pipeline's stages so that their seconds add up in the returned dict."""
    seconds: dict[str, float] = defaultdict(float)
    for stage in ("prepare_post", "forward", "postprocess"):
        method = getattr(type(tagger), stage).__get__(tagger)

        def timed(*args, _method=method, _stage=stage, **kwargs):
            started = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                seconds[_stage] += time.perf_counter() - started

        setattr(tagger, stage, timed)
    return seconds


def throughput(tagger, posts: list[dict], batch_size: int = 32) -> dict:
    """Posts/s at `batch_size` over `posts` after a warm-up batch, and the forward stage's share."""
    stages = time_stages(tagger)
    tagger(posts[:batch_size], batch_size=batch_size)
    stages.clear()
    started = time.perf_counter()
    tagger(posts, batch_size=batch_size)
    elapsed = time.perf_counter() - started
    return {
        "posts_per_second": len(posts) / elapsed,
        "forward_share": stages["forward"] / sum(stages.values()),
    }


def latency(tagger, posts: list[dict]) -> dict:
    """Median and p90 milliseconds of one post through the pipeline, after two warm-up posts."""
    tagger(posts[:2])
    seconds = []
    for post in posts:
        started = time.perf_counter()
        tagger(post)
        seconds.append(time.perf_counter() - started)
    return {"median_ms": 1000 * statistics.median(seconds), "p90_ms": 1000 * float(np.quantile(seconds, 0.9))}


class RecordingSession:
    """An ONNX Runtime session that keeps every feed it runs (to replay the same pieces on the bare encoder)."""

    def __init__(self, session) -> None:
        self.session, self.feeds = session, []

    def run(self, output_names, feed, *args, **kwargs):
        self.feeds.append(feed)
        return self.session.run(output_names, feed, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.session, name)


class EncoderGraph(nn.Module):
    """The bare text encoder: (B, T) pieces and mask [and token types] -> (B, T, d) last hidden state."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask, *token_type_ids):
        types = {"token_type_ids": token_type_ids[0]} if token_type_ids else {}
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask, **types).last_hidden_state


def bare_encoder_session(encoder: str, folder: Path, threads: int):
    """The encoder alone exported and quantised as the model is (`export_program`, `quantize_onnx`); its
    session and input names."""
    import onnxruntime

    model = AutoModel.from_pretrained(OFFLINE_MODELS / ENCODERS[encoder]).eval()
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in inspect.signature(model.forward).parameters:
        names.append("token_type_ids")
    example = tuple(torch.ones(2, 9, dtype=torch.long) for _ in names)
    dims = tuple({0: torch.export.Dim.DYNAMIC, 1: torch.export.Dim.DYNAMIC} for _ in names)
    program = export_program(EncoderGraph(model).eval(), example, dims, names, ["last_hidden_state"])
    path = folder / "bare-encoder.onnx"
    program.save(str(path))
    quantized = quantize_onnx(path, folder / "bare-encoder-int8.onnx")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return onnxruntime.InferenceSession(str(quantized), options, providers=["CPUExecutionProvider"]), names


def encoder_feeds(feeds: list[dict], text_sources: list[str], names: list[str]) -> list[dict]:
    """Per recorded model feed, the encoder feeds of its tweet pieces and of each text source's pieces."""
    result = []
    for feed in feeds:
        for prefix in ["", *(f"{name}_" for name in text_sources)]:
            ids, mask = feed[f"{prefix}input_ids"], feed[f"{prefix}attention_mask"]
            pieces = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            result.append({name: pieces[name] for name in names})
    return result


def bare_encoder_throughput(session, feeds: list[dict], num_posts: int) -> float:
    """Posts/s of the encoder alone over the recorded feeds (after one warm-up pass over the first two)."""
    for feed in feeds[:2]:
        session.run(None, feed)
    started = time.perf_counter()
    for feed in feeds:
        session.run(None, feed)
    return num_posts / (time.perf_counter() - started)


def benchmark_setting(
    args, encoder: str, config: str, data_dir: Path, work_dir: Path, backends
) -> list[dict]:
    folder, posts = build_setting(encoder, config, data_dir, work_dir, Path(args.cache_dir))
    processor = MGCMProcessor.from_pretrained(folder)
    num_posts, num_single = (
        (args.mpnet_posts, args.mpnet_single_posts) if encoder == "mpnet" else (args.posts, args.single_posts)
    )
    rows = []
    for backend in backends:
        model = load_backend(backend, folder, args.threads)
        tagger = pipeline("multimodal-ner", model=model, processor=processor)
        row = {"encoder": encoder, "config": config, "backend": backend}
        row |= throughput(tagger, posts[:num_posts]) | latency(tagger, posts[:num_single])
        rows.append(row)
        print_row(row)
        if backend == "onnx-int8" and config == "full":
            recording = model.session = RecordingSession(model.session)
            tagger(posts[:num_posts], batch_size=32)
            session, names = bare_encoder_session(encoder, folder, args.threads)
            feeds = encoder_feeds(recording.feeds, list(model.config.text_sources), names)
            bare = {"encoder": encoder, "config": config, "backend": "bare encoder, onnx-int8"}
            bare["posts_per_second"] = bare_encoder_throughput(session, feeds, num_posts)
            rows.append(bare)
            print_row(bare)
    return rows


def print_row(row: dict) -> None:
    figures = f"{row['posts_per_second']:8.1f}"
    if "median_ms" in row:
        figures += f" {row['median_ms']:9.1f} {row['p90_ms']:7.1f} {100 * row['forward_share']:8.0f}"
    print(f"{row['encoder']:7} {row['config']:15} {row['backend']:26} {figures}", flush=True)


def cpu_computes_bfloat16() -> bool:
    """Whether the CPU has bfloat16 instructions (AVX-512 BF16 or AMX), per Linux's /proc/cpuinfo."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text().split() if cpuinfo.is_file() else []
    return "avx512_bf16" in flags or "amx_bf16" in flags


def f1_backends(backends: list[str]) -> list[str]:
    """The backends to score on the whole test split: bfloat16 only where the CPU computes in it; elsewhere torch
    emulates it, several times slower than float32, and it is left out, said so."""
    if "torch-bfloat16" in backends and not cpu_computes_bfloat16():
        print("torch-bfloat16 not scored: this CPU has no bfloat16 instructions (torch emulates them)")
        return [backend for backend in backends if backend != "torch-bfloat16"]
    return backends


def score_trained_model(args, data_dir: Path, work_dir: Path, backends) -> list[dict]:
    """Twitter-2015 test entity F1 of the trained model through the pipeline on each backend."""
    folder = Path(args.trained_model)
    processor = MGCMProcessor.from_pretrained(folder)
    sources = list(MGCMConfig.from_pretrained(folder).text_sources)
    files = {"knowledge": data_dir / "knowledge" / "twitter2015_pgim.txt"}
    test = load_tweet_corpus(
        data_dir / "twitter2015",
        captions_file=data_dir / "captions" / "twitter2015_blip2.txt",
        text_source_files={name: files[name] for name in sources if name in files},
    )["test"]
    if args.f1_posts:
        test = test.select(range(args.f1_posts))
    posts = [{"text": row["tokens"], **{name: row[name] for name in sources}} for row in test]
    gold = [[LABEL_NAMES[tag] for tag in row["ner_tags"]] for row in test]
    rows, tags_by_backend = [], {}
    for backend in backends:
        model = load_backend(backend, folder, args.threads, onnx_cache_dir=work_dir / "onnx-cache")
        tagger = pipeline("multimodal-ner", model=model, processor=processor)
        started = time.perf_counter()
        outputs = tagger(posts, batch_size=32, aggregation="words")
        elapsed = time.perf_counter() - started
        tags = [[word["tag"] for word in output["words"]] for output in outputs]
        tags_by_backend[backend] = tags
        row = {"backend": backend, "posts": len(posts), "posts_per_second": len(posts) / elapsed}
        row |= {f"f1_{mode}": 100 * ner_metrics(gold, tags, mode=mode)["overall_f1"] for mode in MODES}
        if backend != "torch-float32" and "torch-float32" in tags_by_backend:
            reference = [tag for tweet in tags_by_backend["torch-float32"] for tag in tweet]
            same = sum(
                a == b for a, b in zip(reference, (tag for tweet in tags for tag in tweet), strict=True)
            )
            row["words_as_torch_float32"] = same / len(reference)
        rows.append(row)
        agreement = row.get("words_as_torch_float32")
        print(
            f"{backend:15} {row['f1_lenient']:8.2f} {row['f1_strict']:7.2f} {row['posts_per_second']:8.1f} "
            + (f"{100 * agreement:8.2f}" if agreement is not None else f"{'-':>8}"),
            flush=True,
        )
    return rows


def main() -> None:
    load_before = os.getloadavg()[0]
    args = parse_args()
    torch.set_num_threads(args.threads)
    data_dir = Path(args.data_dir)
    backends = args.backends.split(",")
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        raise SystemExit(f"unknown backends {unknown}; choose from {list(BACKENDS)}")
    import onnxruntime

    print(
        f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}, bfloat16 instructions: "
        f"{cpu_computes_bfloat16()}), onnxruntime "
        f"{onnxruntime.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, load average "
        f"{load_before:.2f} before the start"
    )
    with tempfile.TemporaryDirectory(prefix="mgcm-inference-") as tmp:
        work_dir = Path(args.work_dir or tmp)
        results = {"threads": args.threads, "load_average_before": load_before, "settings": []}
        print(
            f"{'encoder':7} {'config':15} {'backend':26} {'posts/s':>8} {'median ms':>9} {'p90 ms':>7} {'fwd %':>8}"
        )
        for encoder in args.encoders.split(","):
            for config in args.configs.split(","):
                results["settings"] += benchmark_setting(args, encoder, config, data_dir, work_dir, backends)
        if args.trained_model != "none" and Path(args.trained_model).is_dir():
            print(
                f"\nTwitter-2015 test, {args.trained_model}, seqeval entity F1 (lenient = default mode, strict IOB2)"
            )
            print(
                f"{'backend':15} {'lenient':>8} {'strict':>7} {'posts/s':>8} {'same tags as torch-float32 %':>8}"
            )
            results["trained_model"] = args.trained_model
            results["test_f1"] = score_trained_model(args, data_dir, work_dir, f1_backends(backends))
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
