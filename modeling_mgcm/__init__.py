"""MGCM for multimodal NER on social media, as transformers-native classes.

Importing this package registers `MGCMConfig` with `AutoConfig` and the models with `AutoModel` and
`AutoModelForTokenClassification`, and marks them for `auto_map` so that `save_pretrained` writes a folder
loadable as Hub remote code. This package imports nothing else from the project.
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
from .modeling_mgcm import (
    MGCMForTokenClassification,
    MGCMModel,
    MGCMModelOutput,
    MGCMPreTrainedModel,
    MGCMTokenClassifierOutput,
)
from .vision_features import extract_image_features, image_feature_dim

AutoConfig.register(MGCMConfig.model_type, MGCMConfig, exist_ok=True)
AutoModel.register(MGCMConfig, MGCMModel, exist_ok=True)
AutoModelForTokenClassification.register(MGCMConfig, MGCMForTokenClassification, exist_ok=True)
MGCMConfig.register_for_auto_class()
MGCMModel.register_for_auto_class("AutoModel")
MGCMForTokenClassification.register_for_auto_class("AutoModelForTokenClassification")

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
    "MGCMPreTrainedModel",
    "MGCMTokenClassifierOutput",
    "extract_image_features",
    "image_feature_dim",
]
