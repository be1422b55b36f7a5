"""Precomputed region features of a tiny corpus's images, served as `processing.ImageFeatureCache` serves them."""

import torch

from modeling_mgcm.vision_features import extract_image_features


class RegionFeatureTable:
    """Region features per tweet id from a frozen vision backbone, with the `get(ids)` of `ImageFeatureCache`.

    A tweet without an image gets zero features and mask 0; `feature_dim` is D of the (R, D) features.
    """

    def __init__(self, corpus, vision_model, image_processor) -> None:
        self.features: dict[str, tuple[torch.Tensor, int]] = {}
        self.feature_dim = None
        for split in corpus.values():
            present = [index for index, image in enumerate(split["image"]) if image is not None]
            if not present:
                continue
            images = [split[index]["image"].convert("RGB") for index in present]
            with torch.no_grad():
                pixel_values = image_processor(images=images, return_tensors="pt")["pixel_values"]
                regions = extract_image_features(vision_model, torch.as_tensor(pixel_values))
            for tweet_id in split["id"]:
                self.features[tweet_id] = (torch.zeros_like(regions[0]), 0)
            for position, index in enumerate(present):
                self.features[split["id"][index]] = (regions[position], 1)
            self.feature_dim = regions.shape[-1]

    def get(self, ids):
        """Tweet ids -> (features (n, R, D), image_mask (n,))."""
        features = torch.stack([self.features[tweet_id][0] for tweet_id in ids])
        return features, torch.tensor([self.features[tweet_id][1] for tweet_id in ids])
