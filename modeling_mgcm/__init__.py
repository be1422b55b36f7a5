"""MGCM for multimodal NER on social media: everything that ships with a model, as transformers-native classes.

This folder is what a saved model carries as Hub remote code, so its modules import each other only
relatively and nothing else from the project:
- the model: `configuration_mgcm`, `modeling_mgcm` (encoder, granularities, gates, CRF head) and its blocks
  `semantic_augmentation`, `cross_modal_attention`, `crf`, `vision_features`, `host_reads`; its ONNX export
  (`onnx_export`) and the exported model on ONNX Runtime (`onnx_model`);
- the processor (`processing_mgcm`) and what it needs at inference: `tweet_tokenizer` (the word splitter),
  `tweet_normalise`, `word_shape`, `neighbour_table` (lookup of a built table, and saving it with
  `atomic_files`, the project's one way to write a file atomically);
- the pipeline (`pipeline_mgcm`, task "multimodal-ner") and what it needs: `image_loading`, `image_sources`,
  `knowledge_writer`.

Importing this package registers `MGCMConfig` with `AutoConfig`, the models with `AutoModel` and
`AutoModelForTokenClassification`, the processor with `AutoProcessor` and the pipeline task, and marks them
for `auto_map` so that `save_pretrained` writes a folder loadable as remote code.
"""

from transformers import AutoConfig, AutoModel, AutoModelForTokenClassification

from .configuration_mgcm import (
    AUGMENTATION_MODES,
    COCO_OBJECT_LABELS,
    GRANULARITIES,
    MGCM_LABEL_NAMES,
    MGCMConfig,
)
from .crf import ConditionalRandomField
from .image_loading import ImageLoadError, load_image
from .knowledge_writer import PGIM_PROMPT, KnowledgeWriter
from .modeling_mgcm import (
    MGCMForTokenClassification,
    MGCMModel,
    MGCMModelOutput,
    MGCMPreTrainedModel,
    MGCMTokenClassifierOutput,
)
from .neighbour_table import NeighbourTable
from .onnx_model import MGCMOnnxForTokenClassification, StaleOnnxError
from .pipeline_mgcm import BadImageWarning, MultimodalNERPipeline
from .processing_mgcm import MGCMProcessor
from .tweet_normalise import NUMBER_CLASS_TOKEN, URL_CLASS_TOKEN, normalise_token
from .tweet_tokenizer import split_tweet
from .vision_features import extract_image_features, image_feature_dim
from .windows import WINDOW_INFO_KEYS, merge_windows
from .word_shape import NUM_WORD_SHAPES, WORD_SHAPE_NAMES, word_shape_id

AutoConfig.register(MGCMConfig.model_type, MGCMConfig, exist_ok=True)
AutoModel.register(MGCMConfig, MGCMModel, exist_ok=True)
AutoModelForTokenClassification.register(MGCMConfig, MGCMForTokenClassification, exist_ok=True)
MGCMConfig.register_for_auto_class()
MGCMModel.register_for_auto_class("AutoModel")
MGCMForTokenClassification.register_for_auto_class("AutoModelForTokenClassification")
MGCMProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "AUGMENTATION_MODES",
    "COCO_OBJECT_LABELS",
    "GRANULARITIES",
    "MGCM_LABEL_NAMES",
    "ConditionalRandomField",
    "MGCMConfig",
    "MGCMForTokenClassification",
    "MGCMModel",
    "MGCMModelOutput",
    "MGCMOnnxForTokenClassification",
    "MGCMPreTrainedModel",
    "MGCMTokenClassifierOutput",
    "extract_image_features",
    "image_feature_dim",
    "BadImageWarning",
    "ImageLoadError",
    "KnowledgeWriter",
    "MGCMProcessor",
    "MultimodalNERPipeline",
    "NUM_WORD_SHAPES",
    "NUMBER_CLASS_TOKEN",
    "NeighbourTable",
    "PGIM_PROMPT",
    "StaleOnnxError",
    "URL_CLASS_TOKEN",
    "WINDOW_INFO_KEYS",
    "WORD_SHAPE_NAMES",
    "load_image",
    "merge_windows",
    "normalise_token",
    "split_tweet",
    "word_shape_id",
]
