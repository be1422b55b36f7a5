"""`mgcm-predict`: tag posts with a trained MGCM folder from the command line.

One post:

    mgcm-predict --model outputs/mgcm --text "Jordan visits Phoenix" --image photo.jpg

Many posts, streamed from JSON Lines (one `{"text", "image", "caption", "objects", "image_id", "id"}` object a
line, plus a key per further text source of the model, e.g. `"knowledge"`; only `text` is required, `id` is
copied to the output):

    mgcm-predict --model outputs/mgcm --input posts.jsonl --output predictions.jsonl

With `--runtime onnx` (`--int8` for the int8 model) the model runs on ONNX Runtime from the folder's exported
`onnx/` files (`mgcm-export-onnx FOLDER`), without loading the torch weights; a folder without them is
exported once into `--onnx_cache_dir`.

A model that reads PGIM-style `knowledge` gets it written for posts without one by a local text-generation
model (`--knowledge_model FOLDER`, see `modeling_mgcm.knowledge_writer`), cached in `--knowledge_cache`.

On several processes (`accelerate launch --num_processes N -m processing.predict_cli ...`, one per GPU or
several machines), the input's chunks are dealt out between the processes in turn; each writes its records
beside the output, and the first process merges them into the one output, in input order, identical to a
one-process run's.

Every input line gives exactly one output line, in order: `{"line", "id", "text", "entities"}`, plus
`"image_error"` when the post's image was missing, undecodable or, with `--image_dir`, a path outside that
folder, or with `--image_url_hosts` a URL on another host (the post is then tagged from its text and caption), or `{"line", "id", "error"}` for a line that is not a JSON object or a post the pipeline refuses. One
bad post never stops the run. Posts are read and tagged `--chunk_size` at a time, so memory does not grow
with the input. A summary (posts, entities per type, masked images, errors, throughput) ends the run on
standard error.
"""

import argparse
import itertools
import json
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TextIO

from tqdm.auto import tqdm

from modeling_mgcm.atomic_files import atomic_write_path
from modeling_mgcm.image_sources import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_URL_TIMEOUT
from modeling_mgcm.pipeline_mgcm import TASK_NAME, BadImageWarning, MultimodalNERPipeline
from processing.cli_options import name_value_pairs

PASSTHROUGH_KEYS = ("id",)


@dataclass
class PredictionSummary:
    """Counts of a batch run; `posts` counts input lines."""

    posts: int = 0
    tagged: int = 0
    errors: int = 0
    masked_images: int = 0
    entities: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def add(self, record: dict[str, Any]) -> None:
        self.posts += 1
        if "error" in record:
            self.errors += 1
            return
        self.tagged += 1
        self.masked_images += "image_error" in record
        self.entities.update(entity["entity_group"] for entity in record["entities"])

    def absorb(self, other: "PredictionSummary") -> None:
        """Add the counts of `other` (another process's share) to these."""
        self.posts += other.posts
        self.tagged += other.tagged
        self.errors += other.errors
        self.masked_images += other.masked_images
        self.entities.update(other.entities)

    @property
    def posts_per_second(self) -> float:
        return self.posts / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "posts": self.posts,
            "tagged": self.tagged,
            "errors": self.errors,
            "masked_images": self.masked_images,
            "entities": dict(sorted(self.entities.items())),
            "seconds": round(self.seconds, 3),
            "posts_per_second": round(self.posts_per_second, 2),
        }

    def format(self) -> str:
        entity_counts = (
            ", ".join(f"{name} {count}" for name, count in sorted(self.entities.items())) or "none"
        )
        return (
            f"posts: {self.posts} ({self.tagged} tagged, {self.errors} errors)\n"
            f"entities: {sum(self.entities.values())} ({entity_counts})\n"
            f"posts whose image was masked: {self.masked_images}\n"
            f"throughput: {self.posts_per_second:.1f} posts/s ({self.seconds:.1f} s)"
        )


def parse_post_line(line: bytes, line_number: int) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """`(post for the pipeline, output record so far)`; the post is None and the record holds an "error" when
    the line is not a usable JSON object."""
    record: dict[str, Any] = {"line": line_number}
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        record["error"] = f"line {line_number}: not UTF-8 ({error})"
        return None, record
    if line_number == 1:
        text = text.removeprefix("\ufeff")
    if not text.strip():
        record["error"] = f"line {line_number}: empty line, expected a JSON object"
        return None, record
    try:
        post = json.loads(text)
    except RecursionError:
        record["error"] = f"line {line_number}: invalid JSON (nested too deeply): {text.strip()[:80]!r}"
        return None, record
    except ValueError as error:
        # JSONDecodeError, or a number beyond Python's 4300-digit integer conversion limit.
        record["error"] = f"line {line_number}: invalid JSON ({error}): {text.strip()[:80]!r}"
        return None, record
    if not isinstance(post, dict):
        record["error"] = (
            f"line {line_number}: expected a JSON object with a 'text', got {type(post).__name__}"
        )
        return None, record
    for key in PASSTHROUGH_KEYS:
        if key in post:
            record[key] = post.pop(key)
    return post, record


def _result_record(record: dict[str, Any], output: dict[str, Any]) -> dict[str, Any]:
    record.update(text=output["text"], entities=output["entities"])
    if output["image_error"] is not None:
        record["image_error"] = output["image_error"]
    return record


def tag_records(
    tagger,
    lines: Iterable[bytes],
    batch_size: int = 32,
    chunk_size: int = 512,
    first_line: int = 1,
    shard: tuple[int, int] = (0, 1),
) -> Iterator[dict[str, Any]]:
    """Output records for JSON lines, in order, `chunk_size` lines in memory at a time.

    Posts go through the pipeline `batch_size` at a time; if a batch fails (a post the pipeline refuses),
    each of its posts is tagged alone and only the failing ones become "error" records. With
    `shard=(index, count)` only chunks `index, index + count, ...` are parsed and tagged (the lines of the
    others are skipped unread), so `count` processes share the input.
    """
    shard_index, shard_count = shard
    chunk: list[tuple[dict[str, Any] | None, dict[str, Any]]] = []
    for offset, line in enumerate(lines):
        if (offset // chunk_size) % shard_count != shard_index:
            continue
        chunk.append(parse_post_line(line, first_line + offset))
        if len(chunk) >= chunk_size:
            yield from _tag_chunk(tagger, chunk, batch_size)
            chunk = []
    if chunk:
        yield from _tag_chunk(tagger, chunk, batch_size)


def _tag_chunk(tagger, chunk, batch_size: int) -> list[dict[str, Any]]:
    posts = [post for post, _ in chunk if post is not None]
    outputs: list[Any] = []
    for start in range(0, len(posts), batch_size):
        batch = posts[start : start + batch_size]
        try:
            outputs.extend(tagger(batch, batch_size=batch_size, aggregation="words", on_bad_image="mask"))
        except Exception:  # noqa: BLE001 (one bad post must not stop the run: find it below)
            outputs.extend(_tag_alone(tagger, post) for post in batch)
    records = []
    position = 0
    for post, record in chunk:
        if post is not None:
            output = outputs[position]
            position += 1
            if isinstance(output, Exception):
                # The pipeline numbers its inputs; a post tagged alone is always its "input 0".
                message = str(output).removeprefix("input 0: ")
                record["error"] = f"line {record['line']}: {type(output).__name__}: {message}"
            else:
                record = _result_record(record, output)
        records.append(record)
    return records


def _tag_alone(tagger, post: dict[str, Any]) -> Any:
    try:
        return tagger(post, aggregation="words", on_bad_image="mask")
    except Exception as error:  # noqa: BLE001 (reported in the post's output line)
        return error


def _json_line(record: dict[str, Any]) -> str:
    line = json.dumps(record, ensure_ascii=False)
    if not line.isascii():
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (valid in JSON as "\\ud800") cannot be written as UTF-8: escape it.
            line = json.dumps(record)
    return line + "\n"


def run_batch(
    tagger,
    source: BinaryIO,
    sink: TextIO,
    batch_size: int,
    chunk_size: int,
    progress: bool,
    shard: tuple[int, int] = (0, 1),
) -> PredictionSummary:
    """Tag every line of `source` (of this `shard`, see `tag_records`) into `sink`, one JSON line each, and
    return the summary of what was tagged."""
    summary = PredictionSummary()
    started = time.perf_counter()
    records = tag_records(tagger, source, batch_size=batch_size, chunk_size=chunk_size, shard=shard)
    with tqdm(unit="post", desc="Tagging posts", disable=not progress, file=sys.stderr) as bar:
        for record in records:
            sink.write(_json_line(record))
            summary.add(record)
            bar.update(1)
    sink.flush()
    summary.seconds = time.perf_counter() - started
    return summary


def merge_shards(shard_files: list[str], sink: TextIO, chunk_size: int) -> None:
    """Write the record files of the processes into `sink` in input order: every input line gave one record
    and chunk k went to process k % N (`tag_records`), so the files take turns, `chunk_size` lines each."""
    with ExitStack() as stack:
        streams = [stack.enter_context(open(path, encoding="utf-8")) for path in shard_files]
        while streams:
            for stream in list(streams):
                chunk = list(itertools.islice(stream, chunk_size))
                sink.writelines(chunk)
                if len(chunk) < chunk_size:
                    streams.remove(stream)
    sink.flush()


def _distributed_state():
    """Accelerate's state when `accelerate launch` (or torchrun) started several processes, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # As Accelerator does: without cpu=True, CPU processes under `accelerate launch` each believe they are alone.
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def _run_sharded(tagger, args: argparse.Namespace, state) -> PredictionSummary | None:
    """Each process tags its share of `--input` into `<output>.part-<rank>-of-<N>`; the first merges the
    parts into `--output` in input order (written beside it, then renamed) and returns the summary."""
    from accelerate.utils import gather_object

    started = time.perf_counter()
    rank, count = state.process_index, state.num_processes
    parts = [f"{args.output}.part-{index}-of-{count}" for index in range(count)]
    with open(args.input, "rb") as source, open(parts[rank], "w", encoding="utf-8") as sink:
        progress = not args.no_progress and state.is_main_process
        share = run_batch(
            tagger, source, sink, args.batch_size, args.chunk_size, progress, shard=(rank, count)
        )
    print(f"mgcm-predict: process {rank} of {count} tagged {share.posts} lines", file=sys.stderr)
    shares = gather_object([share])  # also waits for every process to finish its part
    summary = None
    if state.is_main_process:
        with atomic_write_path(args.output) as merging, open(merging, "w", encoding="utf-8") as sink:
            merge_shards(parts, sink, args.chunk_size)
        for part in parts:
            os.remove(part)
        summary = PredictionSummary()
        for other in shares:
            summary.absorb(other)
        summary.seconds = time.perf_counter() - started
    state.wait_for_everyone()
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mgcm-predict",
        description="Tag PER/LOC/ORG/MISC entities in posts (text, image, caption, objects) with an MGCM model.",
    )
    parser.add_argument("--model", required=True, help="folder of a trained MGCM model and its processor")
    single = parser.add_argument_group("one post")
    single.add_argument("--text", help="the post's text")
    single.add_argument("--image", help="the post's image: a path or an http(s) URL")
    single.add_argument("--caption", help="a caption of the image")
    single.add_argument("--objects", help="detected object labels, comma-separated (in score order)")
    single.add_argument(
        "--text_source",
        action="append",
        metavar="NAME=TEXT",
        help="a further text about the post, e.g. knowledge='...'; repeat for several",
    )
    many = parser.add_argument_group("many posts")
    many.add_argument("--input", help="JSON Lines file of posts ('-' for standard input)")
    many.add_argument(
        "--output", default="-", help="JSON Lines file of predictions ('-', the default: stdout)"
    )
    many.add_argument(
        "--batch_size",
        type=int,
        default=32,
        help="posts per pipeline call and windows per model batch (a long post gives several windows)",
    )
    many.add_argument("--chunk_size", type=int, default=512, help="input lines held in memory at a time")
    many.add_argument("--no_progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--image_dir",
        help="the folder posts' image paths must name files in (relative ones resolved against it; others are"
        " refused unopened: give it for posts you do not trust)",
    )
    parser.add_argument(
        "--image_url_hosts",
        nargs="*",
        metavar="HOST",
        help="the only hosts (and their subdomains) image URLs are fetched from, redirects included, e.g."
        " pbs.twimg.com; a URL elsewhere is refused unfetched. Give the flag with no host to fetch no URL"
        " (default: any host)",
    )
    parser.add_argument(
        "--image_timeout", type=float, default=DEFAULT_URL_TIMEOUT, help="seconds to fetch a URL"
    )
    parser.add_argument(
        "--max_image_bytes", type=int, default=DEFAULT_MAX_IMAGE_BYTES, help="largest image a URL may send"
    )
    parser.add_argument(
        "--device", help="'cpu', 'cuda', 'cuda:1', 'mps'... (default: the first accelerator, else CPU)"
    )
    onnx = parser.add_argument_group("ONNX Runtime (pip install 'mgcm[onnx]')")
    onnx.add_argument(
        "--runtime",
        "--backend",
        choices=("torch", "onnx"),
        default="torch",
        help="run the model in torch (default) or ONNX Runtime: the folder's onnx/ files (mgcm-export-onnx), "
        "else exported once into --onnx_cache_dir",
    )
    onnx.add_argument("--int8", action="store_true", help="with --runtime onnx: the int8 model")
    onnx.add_argument(
        "--intra_op_threads", type=int, help="threads within an ONNX operator (default: the cores)"
    )
    onnx.add_argument("--inter_op_threads", type=int, help="threads across independent ONNX operators")
    onnx.add_argument(
        "--execution_provider",
        action="append",
        help="ONNX Runtime execution provider, in order of preference; repeat for several "
        "(default CPUExecutionProvider)",
    )
    onnx.add_argument(
        "--onnx_cache_dir", help="where a folder without ONNX files is exported (default $HF_HOME/mgcm-onnx)"
    )
    knowledge = parser.add_argument_group("writing knowledge for posts without it")
    knowledge.add_argument(
        "--knowledge_model", help="folder (or Hub id) of a text-generation model that writes the knowledge"
    )
    knowledge.add_argument(
        "--knowledge_max_new_tokens", type=int, default=160, help="tokens written per post at most"
    )
    knowledge.add_argument("--knowledge_batch_size", type=int, default=8, help="posts per generation batch")
    knowledge.add_argument(
        "--knowledge_cache", help="JSON Lines file that keeps written knowledge across runs, keyed by input"
    )
    return parser


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if (args.text is None) == (args.input is None):
        parser.error("give either --text (one post) or --input (a JSON Lines file of posts)")
    if args.input is not None and any(
        value is not None for value in (args.image, args.caption, args.objects, args.text_source)
    ):
        parser.error(
            "--image, --caption, --objects and --text_source go with --text; in --input files they are post fields"
        )
    try:
        # An empty text is allowed: it says the post has none of that source.
        args.text_sources = name_value_pairs(args.text_source, "--text_source", allow_empty=True)
    except ValueError as error:
        parser.error(str(error))
    if args.knowledge_max_new_tokens < 1 or args.knowledge_batch_size < 1:
        parser.error("--knowledge_max_new_tokens and --knowledge_batch_size must be >= 1")
    if args.batch_size < 1 or args.chunk_size < 1:
        parser.error(
            f"--batch_size and --chunk_size must be >= 1, got {args.batch_size} and {args.chunk_size}"
        )
    if args.image_timeout <= 0 or args.max_image_bytes < 1:
        parser.error("--image_timeout and --max_image_bytes must be positive")
    if args.input not in (None, "-") and not os.path.isfile(args.input):
        parser.error(f"--input {args.input}: no such file")
    if not os.path.isdir(args.model):
        parser.error(f"--model {args.model}: no such folder (give the output_dir of examples/train.py)")
    onnx_options = (
        args.int8,
        args.intra_op_threads,
        args.inter_op_threads,
        args.execution_provider,
        args.onnx_cache_dir,
    )
    if args.runtime != "onnx" and any(option not in (None, False) for option in onnx_options):
        parser.error(
            "--int8, --intra_op_threads, --inter_op_threads, --execution_provider and --onnx_cache_dir go with "
            "--runtime onnx"
        )
    for name in ("intra_op_threads", "inter_op_threads"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0 (0: ONNX Runtime's default)")


def _load_tagger(args: argparse.Namespace):
    from transformers import pipeline

    import modeling_mgcm  # noqa: F401  (registers the Auto classes)
    from modeling_mgcm.knowledge_writer import KnowledgeWriter

    device = args.device
    if device is not None and device.lstrip("-").isdigit():
        device = int(device)
    knowledge_writer = None
    if args.knowledge_model is not None:
        knowledge_writer = KnowledgeWriter(
            pipeline("text-generation", model=args.knowledge_model, device=device),
            max_new_tokens=args.knowledge_max_new_tokens,
            batch_size=args.knowledge_batch_size,
            cache_file=args.knowledge_cache,
        )
    model_kwargs = {}
    if args.runtime == "onnx":
        # Options as plain values: pipeline() deep-copies model_kwargs, which an onnxruntime.SessionOptions refuses.
        session_options = {
            name: value
            for name, value in (
                ("intra_op_num_threads", args.intra_op_threads),
                ("inter_op_num_threads", args.inter_op_threads),
            )
            if value is not None
        }
        model_kwargs = {"runtime": "onnx", "int8": args.int8, "session_options": session_options}
        if args.execution_provider:
            model_kwargs["providers"] = args.execution_provider
        if args.onnx_cache_dir:
            model_kwargs["onnx_cache_dir"] = args.onnx_cache_dir
        # The graph runs where the execution provider puts it; the pipeline's tensors stay on the CPU.
        device = "cpu"
    # The installed class, also for an exported folder, whose config names its shipped copy (custom_pipelines)
    # and would otherwise need trust_remote_code.
    return pipeline(
        TASK_NAME,
        model=args.model,
        pipeline_class=MultimodalNERPipeline,
        device=device,
        model_kwargs=model_kwargs,
        image_dir=args.image_dir,
        image_url_hosts=args.image_url_hosts,
        image_timeout=args.image_timeout,
        max_image_bytes=args.max_image_bytes,
        knowledge_writer=knowledge_writer,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status: 0 when the run finished (even with bad posts), 1 when
    the model folder cannot be loaded, 2 for bad arguments."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_arguments(parser, args)
    state = _distributed_state()
    if state is not None:
        if args.input in (None, "-") or args.output == "-":
            parser.error(
                "on several processes, give --input and --output files (each process reads the input)"
            )
        if args.device is None:
            args.device = str(state.device)
    try:
        tagger = _load_tagger(args)
    except (OSError, ValueError, KeyError, ImportError) as error:
        print(
            f"mgcm-predict: cannot load an MGCM model and processor from {args.model}: {error}",
            file=sys.stderr,
        )
        return 1
    if state is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BadImageWarning)
            summary = _run_sharded(tagger, args, state)
        if summary is not None:
            print(summary.format(), file=sys.stderr)
        return 0
    if args.text is not None:
        post: dict[str, Any] = {"text": args.text, "image": args.image, "caption": args.caption}
        post.update(args.text_sources)
        if args.objects:
            post["objects"] = [label.strip() for label in args.objects.split(",") if label.strip()]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BadImageWarning)
            output = tagger(post, aggregation="words", on_bad_image="mask")
        record = _result_record({}, output)
        if "image_error" in record:
            print(f"mgcm-predict: image left out: {record['image_error']}", file=sys.stderr)
        print(json.dumps(record, ensure_ascii=False, indent=2))
        return 0
    with ExitStack() as stack:
        source = sys.stdin.buffer if args.input == "-" else stack.enter_context(open(args.input, "rb"))
        sink = (
            sys.stdout
            if args.output == "-"
            else stack.enter_context(open(args.output, "w", encoding="utf-8"))
        )
        with warnings.catch_warnings():
            # Masked images are recorded per line and counted in the summary.
            warnings.simplefilter("ignore", BadImageWarning)
            summary = run_batch(tagger, source, sink, args.batch_size, args.chunk_size, not args.no_progress)
    print(summary.format(), file=sys.stderr)
    return 0


__all__ = [
    "PredictionSummary",
    "build_parser",
    "main",
    "merge_shards",
    "parse_post_line",
    "run_batch",
    "tag_records",
]

if __name__ == "__main__":
    sys.exit(main())
