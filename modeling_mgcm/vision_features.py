"""Region features from any Hugging Face vision backbone: a CNN grid or a ViT token sequence, as `(B, R, D_v)`.

MGCM attends over image regions. A CNN (ResNet, ConvNeXt) gives a feature map `(B, C, h, w)` whose `h*w`
cells are the regions; a transformer (ViT, CLIP vision, Swin) gives a token sequence `(B, N, D)` whose
tokens are the regions. This module ships with the model as Hub remote code, so it imports nothing from
`processing`.
"""

import torch
from torch import nn
from transformers import PretrainedConfig


def _vision_part(vision_model: nn.Module) -> nn.Module:
    # A dual-encoder such as CLIPModel needs text inputs in its forward; its image tower alone does not.
    config = getattr(vision_model, "config", None)
    if getattr(config, "vision_config", None) is not None and hasattr(vision_model, "vision_model"):
        return vision_model.vision_model
    return vision_model


def extract_image_features(vision_model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Runs the backbone and returns its regions.

    Args:
        vision_model: a vision backbone built by `AutoModel` (ResNet, ConvNeXt, ViT, CLIP vision, ...), or a
            dual encoder with a `vision_model` tower (CLIPModel). Freezing and `torch.no_grad` are the
            caller's business.
        pixel_values: `(batch_size, 3, height, width)` images as the backbone's image processor makes them.

    Returns:
        `(batch_size, num_regions, feature_dim)`: a feature map `(B, C, h, w)` flattened to `(B, h*w, C)`
        (row-major over the grid), or the `last_hidden_state` token sequence `(B, N, D)` as it is.
    """
    if pixel_values.ndim != 4:
        raise ValueError(
            f"pixel_values must be (batch_size, channels, height, width); got shape {tuple(pixel_values.shape)}"
        )
    outputs = _vision_part(vision_model)(pixel_values=pixel_values, return_dict=True)
    hidden = getattr(outputs, "last_hidden_state", None)
    if hidden is None:
        raise ValueError(
            f"{type(vision_model).__name__} returned no last_hidden_state; use a backbone model "
            "(AutoModel.from_config / from_pretrained), not a task head"
        )
    if hidden.ndim == 4:
        return hidden.flatten(2).transpose(1, 2)
    if hidden.ndim == 3:
        return hidden
    raise ValueError(
        f"{type(vision_model).__name__}.last_hidden_state has shape {tuple(hidden.shape)}; expected a "
        "feature map (B, C, h, w) or a token sequence (B, N, D)"
    )


def image_feature_dim(vision_config: PretrainedConfig) -> int:
    """`D_v` of `extract_image_features` from the config alone: `hidden_sizes[-1]` for CNNs, else `hidden_size`."""
    if getattr(vision_config, "vision_config", None) is not None:
        vision_config = vision_config.vision_config
    hidden_sizes = getattr(vision_config, "hidden_sizes", None)
    if hidden_sizes:
        return int(hidden_sizes[-1])
    hidden_size = getattr(vision_config, "hidden_size", None)
    if isinstance(hidden_size, int) and hidden_size > 0:
        return hidden_size
    raise ValueError(
        f"cannot tell the feature width of {type(vision_config).__name__} "
        f"(model_type {getattr(vision_config, 'model_type', None)!r}): it has neither hidden_sizes nor hidden_size"
    )


__all__ = ["extract_image_features", "image_feature_dim"]
