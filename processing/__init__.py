import warnings

from .corpus import (
    ConllTweet,
    CorpusFormatError,
    DuplicateTweetIdError,
    load_tweet_corpus,
    read_captions_file,
    read_conll_file,
    read_objects_file,
    write_conll,
)
from .corpus_schema import corpus_features
from .corpus_stats import corpus_stats, format_corpus_stats
from .data_collator import MGCMDataCollator
from .explain import ExplainedEntity, PostExplanation, explain, explain_post
from .image_feature_cache import ImageCacheStats, ImageFeatureCache
from .image_loading import ImageLoadError, load_image
from .knowledge_writer import PGIM_PROMPT, KnowledgeWriter
from .labels import ENTITY_TYPES, ID_TO_LABEL, LABEL_NAMES, LABEL_TO_ID, normalise_tag, repair_bio_tags
from .metrics import entity_spans, format_metrics_table, ner_metrics, score_entity_spans
from .neighbour_table import NeighbourTable, build_neighbour_table
from .object_detection import DetectedObjects, ObjectDetectionStats, detect_objects, write_objects_file
from .pipeline_mgcm import BadImageWarning, MultimodalNERPipeline
from .processing_mgcm import WINDOW_INFO_KEYS, MGCMProcessor, merge_windows
from .synthetic import SYNTHETIC_OBJECT_LABELS, make_synthetic_corpus, score_ambiguous_mentions
from .tweet_normalise import NUMBER_CLASS_TOKEN, URL_CLASS_TOKEN, normalise_token
from .tweet_tokenizer import split_tweet
from .word_shape import NUM_WORD_SHAPES, WORD_SHAPE_NAMES, word_shape_id
from .word_vectors import WordVectors, WordVectorsFormatError, load_word_vectors

# `python -m processing.corpus` runs a module that importing this package has already loaded; runpy's
# warning about that is noise for this command.
warnings.filterwarnings(
    "ignore", message=r"'processing\.corpus' found in sys\.modules", category=RuntimeWarning
)

__all__ = [
    "ExplainedEntity",
    "PostExplanation",
    "explain",
    "explain_post",
    "DetectedObjects",
    "ImageCacheStats",
    "ImageFeatureCache",
    "ImageLoadError",
    "ObjectDetectionStats",
    "detect_objects",
    "load_image",
    "write_objects_file",
    "ENTITY_TYPES",
    "ID_TO_LABEL",
    "LABEL_NAMES",
    "LABEL_TO_ID",
    "SYNTHETIC_OBJECT_LABELS",
    "ConllTweet",
    "CorpusFormatError",
    "DuplicateTweetIdError",
    "corpus_features",
    "corpus_stats",
    "entity_spans",
    "format_corpus_stats",
    "format_metrics_table",
    "load_tweet_corpus",
    "make_synthetic_corpus",
    "ner_metrics",
    "normalise_tag",
    "read_captions_file",
    "read_conll_file",
    "read_objects_file",
    "repair_bio_tags",
    "score_ambiguous_mentions",
    "score_entity_spans",
    "write_conll",
    "NUM_WORD_SHAPES",
    "NUMBER_CLASS_TOKEN",
    "URL_CLASS_TOKEN",
    "WORD_SHAPE_NAMES",
    "NeighbourTable",
    "WordVectors",
    "WordVectorsFormatError",
    "build_neighbour_table",
    "load_word_vectors",
    "normalise_token",
    "word_shape_id",
    "MGCMDataCollator",
    "MGCMProcessor",
    "WINDOW_INFO_KEYS",
    "merge_windows",
    "BadImageWarning",
    "MultimodalNERPipeline",
    "KnowledgeWriter",
    "PGIM_PROMPT",
    "split_tweet",
]
