"""Throughput of the "multimodal-ner" pipeline (posts/s) at batch 1 and batch 32, for text+caption posts and
for text+image posts with uncached images (decoded and run through the vision backbone) and with cached
features (`ImageFeatureCache`). Targets on 2 CPU cores: >= 100 posts/s at batch 32 text+caption, and a
batch-1 text+caption latency under 30 ms.

    python benchmarks/inference.py [--text-model FOLDER] [--vision resnet152|resnet50|tiny] [--threads N]
                                   [--dtype float32|bfloat16]

The model is `MGCMForTokenClassification.from_backbones` on the MiniLM folder (pretrained text encoder) and a
randomly initialised ResNet (the paper's ResNet-152 by default: no pretrained vision weights are available
offline, and random weights cost the same time), with the image and caption granularities and gated
semantic augmentation over GloVe 6B 50d (k=4); the MGCM layers are randomly initialised, which does not
change the timing. Posts are Twitter-2015 valid tweets (words joined by spaces, as raw text) with their
BLIP-2 captions; images are synthetic 640x480 JPEGs (the tweet images are not available here). Each
setting is warmed up, then timed over whole batches; the time split between the pipeline's stages
(prepare_post: splitting, tokenising, image decoding; forward: padding, neighbour lookup, the model and CRF
marginals; postprocess: windows merged, entities) is printed beside it. `batch_size` counts windows (a tweet
is one window), as in every `ChunkPipeline`; the figures below were printed before the pipeline became one.

Runs on 2 cores (AMD EPYC with AVX-512, load average 0.4-0.7 before the start) printed, in float32 and then with
`--dtype bfloat16` (whose entities matched float32's on all 200 synthetic test posts of a trained model):

    setting                          batch  posts/s  ms/post  p90 ms
    text+caption                         1     33.7     29.6    33.7
    text+caption                        32     78.9     12.4    13.4
    text+image, cached features          1     30.8     32.6    35.3
    text+image, cached features         32     65.6     15.4    15.9
    text+image, uncached                 1      5.3    188.1   195.1
    text+image, uncached                32      6.3    159.0   159.0
    bfloat16 text+caption                1     38.5     24.1    32.5
    bfloat16 text+caption               32    114.1      8.7     9.2

The forward pass takes 95% of the time, and the MiniLM encoder 85% of the forward pass: it runs on the tweet
(about 40 word pieces on Twitter-2015, half of them the pieces of the trailing t.co link) and on the caption
(about 12). On a shared machine, OpenMP threads wait for each other on a busy core: run with --threads 1
(or OMP_WAIT_POLICY=PASSIVE) when other processes use the CPU.
"""

import argparse
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer, ConvNextImageProcessorPil, ResNetConfig, ResNetModel, pipeline

from modeling_mgcm import MGCMForTokenClassification
from processing import LABEL_NAMES, ImageFeatureCache, MGCMProcessor, build_neighbour_table, load_tweet_corpus
from processing.testing.tiny_backbones import tiny_image_processor, tiny_vision_config

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OFFLINE_MODELS = Path(
    os.environ.get("MGCM_OFFLINE_MODELS", str(Path.home() / ".cache" / "mgcm-offline-models"))
)
VISION_CONFIGS = {
    "resnet152": lambda: ResNetConfig(depths=[3, 8, 36, 3], layer_type="bottleneck"),
    "resnet50": lambda: ResNetConfig(depths=[3, 4, 6, 3], layer_type="bottleneck"),
    "tiny": tiny_vision_config,
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--text-model", default=str(OFFLINE_MODELS / "all-MiniLM-L6-v2"))
    parser.add_argument("--word-vectors", default=str(OFFLINE_MODELS / "glove-6b-50d"))
    parser.add_argument("--data-dir", default=str(PROJECT_ROOT / ".." / "shared" / "data"))
    parser.add_argument("--vision", choices=sorted(VISION_CONFIGS), default="resnet152")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="model weights")
    parser.add_argument(
        "--device", default=None, help="pipeline device, e.g. cuda:0 (default: the pipeline's)"
    )
    parser.add_argument("--posts", type=int, default=320, help="posts timed per text setting at batch 32")
    parser.add_argument("--single-posts", type=int, default=60, help="posts timed one by one")
    parser.add_argument(
        "--image-posts", type=int, default=64, help="posts timed with uncached images at batch 32"
    )
    parser.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "mgcm-benchmark-cache"))
    return parser.parse_args()


def read_posts(data_dir: Path) -> list[dict]:
    """Twitter-2015 valid tweets as raw posts with their BLIP-2 captions."""
    corpus = load_tweet_corpus(
        data_dir / "twitter2015", captions_file=data_dir / "captions" / "twitter2015_blip2.txt"
    )["valid"]
    return [{"text": " ".join(row["tokens"]), "caption": row["caption"]} for row in corpus]


def write_images(folder: Path, count: int) -> list[Path]:
    """Smooth random 640x480 JPEGs (about the size of tweet photos), so decoding costs what it would."""
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        coarse = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((640, 480), Image.Resampling.BICUBIC)
        path = folder / f"image-{index:03d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def build_tagger(args: argparse.Namespace, posts: list[dict], work_dir: Path):
    """The pipeline over MiniLM + a random ResNet, with image and caption granularities and GloVe neighbours."""
    vision_folder = work_dir / f"vision-{args.vision}"
    torch.manual_seed(0)
    ResNetModel(VISION_CONFIGS[args.vision]()).save_pretrained(vision_folder)
    tokenizer = AutoTokenizer.from_pretrained(args.text_model)
    words = [word for post in posts for word in post["text"].split()]
    table = build_neighbour_table(words, args.word_vectors, k=4, keep_top_n=20_000, cache_dir=args.cache_dir)
    if args.vision == "tiny":
        image_processor = tiny_image_processor()
    else:
        image_processor = ConvNextImageProcessorPil(size={"shortest_edge": 224}, crop_pct=224 / 256)
    model = MGCMForTokenClassification.from_backbones(
        args.text_model,
        str(vision_folder),
        use_image=True,
        text_sources=["caption"],
        augmentation_mode="gate",
        augmentation_dim=table.dim,
        num_neighbours=table.k,
        id2label=dict(enumerate(LABEL_NAMES)),
        label2id={label: index for index, label in enumerate(LABEL_NAMES)},
    ).eval()
    processor = MGCMProcessor(
        tokenizer=tokenizer, image_processor=image_processor, neighbour_table=table, max_length=128
    )
    model.to(getattr(torch, args.dtype))
    return pipeline("multimodal-ner", model=model, processor=processor, device=args.device), table


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


def measure(tagger, stages: dict, posts: list, batch_size: int, **options) -> dict:
    """Posts/s over `posts` (after one warm-up batch), per-post latency quantiles at batch 1, stage shares."""
    tagger(posts[:batch_size], batch_size=batch_size, **options)
    stages.clear()
    latencies = []
    started = time.perf_counter()
    for start in range(0, len(posts), batch_size):
        batch_started = time.perf_counter()
        tagger(posts[start : start + batch_size], batch_size=batch_size, **options)
        latencies.append((time.perf_counter() - batch_started) / len(posts[start : start + batch_size]))
    elapsed = time.perf_counter() - started
    total = sum(stages.values()) or 1.0
    return {
        "posts_per_second": len(posts) / elapsed,
        "median_ms": 1000 * statistics.median(latencies),
        "p90_ms": 1000 * float(np.quantile(latencies, 0.9)),
        "stages": {stage: 100 * value / total for stage, value in stages.items()},
    }


def main() -> None:
    # Read before this process loads anything, so that the figure is other processes' load.
    load_before = os.getloadavg()[0]
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    data_dir = Path(args.data_dir)
    posts = read_posts(data_dir)
    with tempfile.TemporaryDirectory(prefix="mgcm-inference-") as work:
        work_dir = Path(work)
        tagger, table = build_tagger(args, posts, work_dir)
        stages = time_stages(tagger)
        images = write_images(work_dir, max(args.image_posts, 32))
        cache = ImageFeatureCache(
            work_dir / "features",
            tagger.model.mgcm.vision_model,
            tagger.processor.image_processor,
            backbone_name=f"random-{args.vision}",
            # A randomly initialised deep ResNet in eval mode gives features beyond the float16 range.
            storage_dtype=torch.float32,
            show_progress=False,
        )
        from datasets import Dataset
        from datasets import Image as ImageFeature

        image_rows = Dataset.from_dict(
            {"id": [path.stem for path in images], "image": [str(path) for path in images]}
        ).cast_column("image", ImageFeature())
        cache.build(image_rows)

        text_posts = posts[: args.posts]
        uncached = [
            {**post, "image": images[i % len(images)]} for i, post in enumerate(posts[: args.image_posts])
        ]
        cached = [{**post, "image_id": images[i % len(images)].stem} for i, post in enumerate(text_posts)]
        settings = [
            ("text+caption", 1, posts[: args.single_posts], {}),
            ("text+caption", 32, text_posts, {}),
            ("text+image, cached features", 1, cached[: args.single_posts], {"image_feature_cache": cache}),
            ("text+image, cached features", 32, cached, {"image_feature_cache": cache}),
            ("text+image, uncached", 1, uncached[: max(8, args.image_posts // 8)], {}),
            ("text+image, uncached", 32, uncached, {}),
        ]
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
            f"load average {load_before:.2f}; {args.dtype}; text model {Path(args.text_model).name}, "
            f"vision {args.vision} (random), neighbours {len(table)} words x k={table.k}; "
            f"{len(posts)} Twitter-2015 valid posts, captions on {sum(bool(p['caption']) for p in posts)}"
        )
        if load_before > 0.5:
            # OpenMP threads spin while waiting for each other: a busy core slows every operator down.
            print(
                "warning: other processes are using the CPU; figures are lower and noisier than on a quiet one"
            )
        print(f"{'setting':32} {'batch':>5} {'posts/s':>8} {'ms/post':>8} {'p90 ms':>7}  time split (%)")
        for name, batch_size, setting_posts, options in settings:
            result = measure(tagger, stages, setting_posts, batch_size, **options)
            split = ", ".join(f"{stage} {share:.0f}" for stage, share in result["stages"].items())
            print(
                f"{name:32} {batch_size:>5} {result['posts_per_second']:>8.1f} {result['median_ms']:>8.1f} "
                f"{result['p90_ms']:>7.1f}  {split}"
            )


if __name__ == "__main__":
    main()
