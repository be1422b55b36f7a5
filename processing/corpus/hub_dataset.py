"""A loaded tweet corpus as a Hub dataset folder: one Parquet file per split plus a README.md dataset card.

`datasets` 4+ runs no loading scripts; a folder of Parquet files whose card YAML holds the features, the splits
(`dataset_info`) and the file of each split (`configs`) is the native form, read by
`datasets.load_dataset(folder)` locally and, once uploaded with `huggingface_hub`, from the Hub. Images are
embedded in the Parquet files, so the folder holds everything; an image that is missing or cannot be decoded
stays None and is counted, never replaced.

Command line: `python -m processing.corpus export DIR OUT [--captions-file F] [--text-source NAME=FILE] ...`.
"""

import logging
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from datasets import ClassLabel, DatasetDict, DatasetInfo, Features, Image, List, SplitDict, SplitInfo, Value

# The writer `datasets` builders use: it stores the features in the Parquet schema, as `push_to_hub` does.
from datasets.arrow_writer import ParquetWriter
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData

from modeling_mgcm.atomic_files import replace_directory
from modeling_mgcm.image_loading import ImageLoadError, load_image

logger = logging.getLogger(__name__)

DATA_DIR = "data"
CONFIG_NAME = "default"
# Rows per Parquet row group and per batch read; small because rows carry image bytes.
ROWS_PER_BATCH = 100

_UMT_DISTRIBUTION = (
    "The tweets, tokens and tags are those distributed with UMT (Yu et al., ACL 2020), "
    "https://github.com/jefferyYu/UMT (`data/{folder}/`)."
)
_TWITTER_TERMS = (
    "Research use only; Twitter's terms of service apply to the tweets and their images. The corpus was "
    "published without a licence file: ask the original authors before any other use, and remove a tweet "
    "whose author deleted it."
)


@dataclass(frozen=True)
class CorpusSource:
    """Where a corpus comes from, for its dataset card.

    `description` (Markdown) says where the tweets and annotations come from; `terms` says who may use it
    and how; `citation` is BibTeX ("" when none); `license` is a Hub licence id ("unknown" when the data has
    no licence); `split_sizes` (tweets per split) lets `infer_corpus_source` recognise the corpus.
    """

    pretty_name: str
    description: str
    terms: str
    citation: str = ""
    license: str = "unknown"
    language: tuple[str, ...] = ()
    split_sizes: Mapping[str, int] = field(default_factory=dict)


KNOWN_CORPUS_SOURCES = {
    "twitter2015": CorpusSource(
        pretty_name="Twitter-2015 multimodal NER",
        description=(
            "Twitter-2015 (Zhang et al., AAAI 2018): English tweets with their images, annotated with PER, "
            "LOC, ORG and OTHER entities (OTHER is read as MISC here). "
            + _UMT_DISTRIBUTION.format(folder="twitter2015")
        ),
        terms=_TWITTER_TERMS,
        citation=(
            "@inproceedings{zhang2018adaptive,\n"
            "  title = {Adaptive Co-attention Network for Named Entity Recognition in Tweets},\n"
            "  author = {Zhang, Qi and Fu, Jinlan and Liu, Xiaoyu and Huang, Xuanjing},\n"
            "  booktitle = {Proceedings of the AAAI Conference on Artificial Intelligence},\n"
            "  year = {2018}\n"
            "}"
        ),
        language=("en",),
        split_sizes={"train": 4000, "valid": 1000, "test": 3257},
    ),
    "twitter2017": CorpusSource(
        pretty_name="Twitter-2017 multimodal NER",
        description=(
            "Twitter-2017 (Lu et al., ACL 2018): English tweets with their images, annotated with PER, LOC, "
            "ORG and MISC entities. " + _UMT_DISTRIBUTION.format(folder="twitter2017")
        ),
        terms=_TWITTER_TERMS,
        citation=(
            "@inproceedings{lu2018visual,\n"
            "  title = {Visual Attention Model for Name Tagging in Multimodal Social Media},\n"
            "  author = {Lu, Di and Neves, Leonardo and Carvalho, Vitor and Zhang, Ning and Ji, Heng},\n"
            "  booktitle = {Proceedings of the 56th Annual Meeting of the Association for Computational "
            "Linguistics (Volume 1: Long Papers)},\n"
            "  pages = {1990--1999},\n"
            "  year = {2018}\n"
            "}"
        ),
        language=("en",),
        split_sizes={"train": 3373, "valid": 723, "test": 723},
    ),
}


@dataclass(frozen=True)
class BadImage:
    """An image that stayed None in the export: its split, tweet id, column and why (`ImageLoadError` text)."""

    split: str
    id: str
    column: str
    reason: str


@dataclass(frozen=True)
class CorpusExport:
    """What `export_corpus_dataset` wrote: the folder, tweets per split, embedded images per split, rows
    without an image in the corpus per split, and the images that could not be used (left None)."""

    folder: Path
    split_sizes: dict[str, int]
    embedded_images: dict[str, int]
    absent_images: dict[str, int]
    bad_images: list[BadImage]

    def summary(self) -> str:
        """One line per split: tweets, embedded images, rows without an image, unusable images."""
        bad = {split: sum(image.split == split for image in self.bad_images) for split in self.split_sizes}
        return "\n".join(
            f"{split}: {size} tweets, {self.embedded_images[split]} images embedded, "
            f"{self.absent_images[split]} without image, {bad[split]} unusable images left out"
            for split, size in self.split_sizes.items()
        )


def infer_corpus_source(corpus: DatasetDict) -> CorpusSource | None:
    """The known corpus (`KNOWN_CORPUS_SOURCES`) whose split sizes every split of `corpus` has, else None."""
    for source in KNOWN_CORPUS_SOURCES.values():
        if all(source.split_sizes.get(split) == len(dataset) for split, dataset in corpus.items()):
            return source
    return None


def _resolve_source(corpus: DatasetDict, source: str | CorpusSource | None) -> CorpusSource:
    if isinstance(source, CorpusSource):
        return source
    if source is None:
        inferred = infer_corpus_source(corpus)
        if inferred is not None:
            return inferred
        sizes = {split: len(dataset) for split, dataset in corpus.items()}
        raise ValueError(
            f"cannot tell which corpus has splits of {sizes} tweets: pass source= one of "
            f"{sorted(KNOWN_CORPUS_SOURCES)} or a CorpusSource(pretty_name=..., description=..., terms=...)"
        )
    if source not in KNOWN_CORPUS_SOURCES:
        raise ValueError(f"unknown corpus source {source!r}: use one of {sorted(KNOWN_CORPUS_SOURCES)}")
    return KNOWN_CORPUS_SOURCES[source]


def _checked_image(
    entry: dict | None, split: str, row_id: str, column: str
) -> tuple[dict | None, BadImage | None]:
    """The `{"bytes", "path"}` entry to store for one image (bytes embedded, path reduced to the file name,
    since a local absolute path means nothing on the Hub), or None and why when it cannot be decoded."""
    if entry is None:
        return None, None
    try:
        # Missing, unreadable or undecodable: left out, as the feature cache masks such an image.
        load_image(entry)
    except ImageLoadError as error:
        return None, BadImage(split, row_id, column, str(error))
    path, data = entry["path"], entry["bytes"]
    if data is None:
        data = Path(path).read_bytes()
    return {"bytes": data, "path": None if path is None else os.path.basename(path)}, None


def _write_split(
    dataset, split: str, path: Path, image_columns: list[str], bad_images: list[BadImage]
) -> tuple[SplitInfo, int, int]:
    """Write one split as Parquet; returns its `SplitInfo`, the images embedded and the rows without one."""
    rows = dataset
    for column in image_columns:
        # Undecoded entries: the bytes or the path as stored, so that each image is decoded once, to check it.
        rows = rows.cast_column(column, Image(decode=False))
    embedded = absent = 0
    with ParquetWriter(features=dataset.features, path=str(path), writer_batch_size=ROWS_PER_BATCH) as writer:
        for batch in rows.iter(batch_size=ROWS_PER_BATCH):
            for column in image_columns:
                checked = []
                for row_id, entry in zip(batch["id"], batch[column], strict=True):
                    image, bad = _checked_image(entry, split, row_id, column)
                    absent += entry is None
                    embedded += image is not None
                    if bad is not None:
                        bad_images.append(bad)
                    checked.append(image)
                batch[column] = checked
            writer.write_batch(batch)
        num_examples, num_bytes = writer.finalize()
    return SplitInfo(name=split, num_bytes=num_bytes, num_examples=num_examples), embedded, absent


def _size_category(rows: int) -> str:
    """The Hub's `size_categories` value for a dataset of `rows` rows."""
    for limit, name in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if rows < limit:
            return name
    return "n>1M"


def _feature_name(feature) -> str:
    """A short name of a feature for the card: `string`, `list of ClassLabel`, `list of {label, score}`."""
    if isinstance(feature, Value):
        return feature.dtype
    if isinstance(feature, List):
        return f"list of {_feature_name(feature.feature)}"
    if isinstance(feature, dict):
        return "{" + ", ".join(f"{key}: {_feature_name(value)}" for key, value in feature.items()) + "}"
    return type(feature).__name__


def _column_description(name: str, feature, column_notes: Mapping[str, str]) -> str:
    if name in column_notes:
        return column_notes[name]
    if isinstance(feature, Image):
        return "the tweet's image (the image file's bytes, embedded in the Parquet file); None when there is none"
    if isinstance(feature, List) and isinstance(feature.feature, ClassLabel):
        return f"one BIO tag per token, a ClassLabel over {', '.join(feature.feature.names)}"
    known = {
        "id": "the tweet's IMGID (its image was `<id>.jpg`)",
        "tokens": "the tweet's words, as tokenised in the corpus",
        "caption": 'a text describing the image, "" when none',
        "objects": "objects detected in the image, `{label, score}` in score order, [] when none",
    }
    if name in known:
        return known[name]
    if feature == Value("string"):
        return (
            'a named text source about the tweet (e.g. knowledge written by a language model), "" when none'
        )
    return "a further column"


def _card_text(
    source: CorpusSource,
    pretty_name: str,
    features: Features,
    export: CorpusExport,
    column_notes: Mapping[str, str],
) -> str:
    """The Markdown body of the dataset card."""
    bad = {split: sum(image.split == split for image in export.bad_images) for split in export.split_sizes}
    split_rows = "\n".join(
        f"| {split} | {size} | {export.embedded_images[split]} | {export.absent_images[split] + bad[split]} |"
        for split, size in export.split_sizes.items()
    )
    column_rows = "\n".join(
        f"| `{name}` | {_feature_name(feature)} | {_column_description(name, feature, column_notes)} |"
        for name, feature in features.items()
    )
    usage = 'corpus = load_dataset("path/to/this/folder")  # or its Hub id, "user/name"'
    if "ner_tags" in features:
        usage += (
            f'\ntag_names = corpus["{next(iter(export.split_sizes))}"].features["ner_tags"].feature.names'
        )
    sections = [
        f"# {pretty_name}",
        source.description,
        "## Splits\n\n| split | tweets | images embedded | no image |\n|---|---|---|---|\n" + split_rows,
        "## Columns\n\n| column | feature | content |\n|---|---|---|\n" + column_rows,
        f"## Loading\n\n```python\nfrom datasets import load_dataset\n\n{usage}\n```",
        "## Terms of use\n\n" + source.terms,
    ]
    if source.citation:
        sections.append("## Citation\n\n```bibtex\n" + source.citation + "\n```")
    return "\n\n".join(sections) + "\n"


def _dataset_card(
    source: CorpusSource,
    pretty_name: str,
    features: Features,
    split_infos: Sequence[SplitInfo],
    download_size: int,
    export: CorpusExport,
    column_notes: Mapping[str, str],
) -> DatasetCard:
    """The README.md: the card metadata, `dataset_info` (features, splits) and `configs` (data files), as
    `push_to_hub` writes them, then the card text."""
    card_data = DatasetCardData(
        pretty_name=pretty_name,
        license=source.license,
        language=list(source.language) or None,
        task_categories=["token-classification"],
        task_ids=["named-entity-recognition"],
        size_categories=[_size_category(sum(export.split_sizes.values()))],
        tags=["multimodal", "tweets"],
    )
    info = DatasetInfo(
        config_name=CONFIG_NAME,
        features=features,
        splits=SplitDict(),
        download_size=download_size,
        dataset_size=sum(split_info.num_bytes for split_info in split_infos),
    )
    for split_info in split_infos:
        info.splits.add(split_info)
    DatasetInfosDict({CONFIG_NAME: info}).to_dataset_card_data(card_data)
    data_files = [{"split": info.name, "path": f"{DATA_DIR}/{info.name}-*"} for info in split_infos]
    MetadataConfigs({CONFIG_NAME: {"data_files": data_files}}).to_dataset_card_data(card_data)
    body = _card_text(source, pretty_name, features, export, column_notes)
    return DatasetCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}")


def export_corpus_dataset(
    corpus: DatasetDict,
    folder: str | os.PathLike,
    source: str | CorpusSource | None = None,
    pretty_name: str | None = None,
    column_notes: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> CorpusExport:
    """Write `corpus` (e.g. from `load_tweet_corpus`) as a Hub dataset folder that `load_dataset(folder)` reads.

    Every column is kept with its feature (`ner_tags` a ClassLabel list, `image` an Image, each text source a
    string); image files are embedded, and an image that is missing or does not decode stays None and is
    listed in the returned `CorpusExport` (and logged). The card describes the features, the split sizes,
    the source and its terms: `source` is a key of `KNOWN_CORPUS_SOURCES` ("twitter2015", "twitter2017"),
    a `CorpusSource`, or None to recognise a known corpus by its split sizes. `pretty_name` replaces the
    source's; `column_notes` (column -> text) replaces a column's description in the card.

    The folder is written beside `folder` and renamed into place when complete. An existing `folder` that is
    not empty is refused (`FileExistsError`) unless `overwrite=True`.
    """
    if not isinstance(corpus, DatasetDict) or not corpus:
        raise ValueError(f"export_corpus_dataset takes a non-empty datasets.DatasetDict, got {corpus!r:.80}")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{folder} is not empty: choose a new folder or pass overwrite=True (--overwrite)"
        )
    features = next(iter(corpus.values())).features
    for split, dataset in corpus.items():
        if dataset.features != features:
            raise ValueError(f"split {split!r} has other features than the first split: {dataset.features}")
    if "id" not in features:
        raise ValueError(f"the corpus has no 'id' column (columns: {list(features)})")
    resolved = _resolve_source(corpus, source)
    column_notes = dict(column_notes or {})
    unknown_notes = set(column_notes) - set(features)
    if unknown_notes:
        raise ValueError(f"column_notes names columns the corpus lacks: {sorted(unknown_notes)}")
    image_columns = [name for name, feature in features.items() if isinstance(feature, Image)]

    folder.parent.mkdir(parents=True, exist_ok=True)
    # A hidden name no other writer picks, beside `folder` so that the final rename stays on one file system.
    partial = folder.with_name(f".{folder.name}.partial-{uuid.uuid4().hex}")
    try:
        (partial / DATA_DIR).mkdir(parents=True)
        split_infos, embedded, absent, bad_images = [], {}, {}, []
        for split, dataset in corpus.items():
            path = partial / DATA_DIR / f"{split}-00000-of-00001.parquet"
            split_info, embedded[split], absent[split] = _write_split(
                dataset, split, path, image_columns, bad_images
            )
            split_infos.append(split_info)
        download_size = sum(path.stat().st_size for path in (partial / DATA_DIR).iterdir())
        export = CorpusExport(
            folder=folder,
            split_sizes={split: len(dataset) for split, dataset in corpus.items()},
            embedded_images=embedded,
            absent_images=absent,
            bad_images=bad_images,
        )
        card = _dataset_card(
            resolved,
            pretty_name or resolved.pretty_name,
            features,
            split_infos,
            download_size,
            export,
            column_notes,
        )
        card.save(partial / "README.md")
        replace_directory(partial, folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    for bad in bad_images:
        logger.warning("%s %s %r: image left out: %s", bad.split, bad.column, bad.id, bad.reason)
    return export


__all__ = [
    "KNOWN_CORPUS_SOURCES",
    "BadImage",
    "CorpusExport",
    "CorpusSource",
    "export_corpus_dataset",
    "infer_corpus_source",
]
