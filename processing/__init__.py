"""Everything around the model: corpora, features, evaluation, training support, and the user commands.

- `corpus/`: the tweet corpora (CoNLL readers, captions, objects, text sources), their `datasets` features and
  statistics, tag normalisation, and the synthetic corpus of the tests;
- `text/`: word vectors and building the semantic-augmentation neighbour table;
- `images/`: the image feature cache and object detection over a corpus's images;
- `evaluation/`: seqeval scores (lenient and strict) and scoring a model on a corpus;
- `training/`: the training loop and its command line, checkpointing, the data collator, the non-finite-loss
  guard, the model card and the Hub export;
- `testing/`: tiny random backbones for tests and smoke runs;
- `explanations/` (`processing.explain`) and `predict_cli.py` (`mgcm-predict`): inference over the pipeline;
  `onnx_export.py` (`mgcm-export-onnx`): the ONNX files of a model folder.

The model, the processor and the pipeline live in `modeling_mgcm/`, the folder that ships with a model. The
public names below are re-exported here and imported on first use, so that `import processing` loads nothing.
"""

import importlib
from typing import Any

_PUBLIC_NAMES = {
    "ImageLoadError": "modeling_mgcm.image_loading",
    "load_image": "modeling_mgcm.image_loading",
    "KnowledgeWriter": "modeling_mgcm.knowledge_writer",
    "PGIM_PROMPT": "modeling_mgcm.knowledge_writer",
    "NeighbourTable": "modeling_mgcm.neighbour_table",
    "BadImageWarning": "modeling_mgcm.pipeline_mgcm",
    "MultimodalNERPipeline": "modeling_mgcm.pipeline_mgcm",
    "MGCMProcessor": "modeling_mgcm.processing_mgcm",
    "NUMBER_CLASS_TOKEN": "modeling_mgcm.tweet_normalise",
    "URL_CLASS_TOKEN": "modeling_mgcm.tweet_normalise",
    "normalise_token": "modeling_mgcm.tweet_normalise",
    "split_tweet": "modeling_mgcm.tweet_tokenizer",
    "WINDOW_INFO_KEYS": "modeling_mgcm.windows",
    "merge_windows": "modeling_mgcm.windows",
    "NUM_WORD_SHAPES": "modeling_mgcm.word_shape",
    "WORD_SHAPE_NAMES": "modeling_mgcm.word_shape",
    "word_shape_id": "modeling_mgcm.word_shape",
    "ENTITY_TYPES": "processing.corpus.labels",
    "ID_TO_LABEL": "processing.corpus.labels",
    "LABEL_NAMES": "processing.corpus.labels",
    "LABEL_TO_ID": "processing.corpus.labels",
    "normalise_tag": "processing.corpus.labels",
    "repair_bio_tags": "processing.corpus.labels",
    "CorpusSource": "processing.corpus.hub_dataset",
    "export_corpus_dataset": "processing.corpus.hub_dataset",
    "corpus_features": "processing.corpus.schema",
    "corpus_stats": "processing.corpus.stats",
    "format_corpus_stats": "processing.corpus.stats",
    "SYNTHETIC_OBJECT_LABELS": "processing.corpus.synthetic",
    "make_synthetic_corpus": "processing.corpus.synthetic",
    "score_ambiguous_mentions": "processing.corpus.synthetic",
    "ConllTweet": "processing.corpus.tweet_corpus",
    "CorpusFormatError": "processing.corpus.tweet_corpus",
    "DuplicateTweetIdError": "processing.corpus.tweet_corpus",
    "load_tweet_corpus": "processing.corpus.tweet_corpus",
    "read_captions_file": "processing.corpus.tweet_corpus",
    "read_conll_file": "processing.corpus.tweet_corpus",
    "read_objects_file": "processing.corpus.tweet_corpus",
    "write_conll": "processing.corpus.tweet_corpus",
    "entity_spans": "processing.evaluation.metrics",
    "format_metrics_table": "processing.evaluation.metrics",
    "ner_metrics": "processing.evaluation.metrics",
    "score_entity_spans": "processing.evaluation.metrics",
    "ExplainedEntity": "processing.explanations",
    "PostExplanation": "processing.explanations",
    "explain": "processing.explanations",
    "explain_post": "processing.explanations",
    "ImageCacheStats": "processing.images.feature_cache",
    "ImageFeatureCache": "processing.images.feature_cache",
    "DetectedObjects": "processing.images.object_detection",
    "ObjectDetectionStats": "processing.images.object_detection",
    "detect_objects": "processing.images.object_detection",
    "write_objects_file": "processing.images.object_detection",
    "build_neighbour_table": "processing.text.neighbour_search",
    "neighbour_table_from_embeddings": "processing.text.neighbour_search",
    "WordVectors": "processing.text.word_vectors",
    "WordVectorsFormatError": "processing.text.word_vectors",
    "load_word_vectors": "processing.text.word_vectors",
    "MGCMDataCollator": "processing.training.data_collator",
}


def __getattr__(name: str) -> Any:
    module = _PUBLIC_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'processing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC_NAMES])


__all__ = sorted(_PUBLIC_NAMES)
