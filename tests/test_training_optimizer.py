"""The optimizer of a training run (`processing.training.optimizer`): the three learning-rate groups and
their weight decay, the rates that the log reports per group, and a linear schedule whose rate at each
optimizer step does not depend on the number of processes."""

import argparse

import pytest
import torch
from mgcm_batches import tiny_model

from processing.training.optimizer import (
    build_optimizer,
    build_scheduler,
    group_learning_rates,
    parameter_groups,
)


def test_parameter_groups_split_learning_rates_and_weight_decay(tiny_text_config, tiny_resnet_config):
    model = tiny_model(tiny_text_config, vision_config=tiny_resnet_config, image_feature_dim=None)
    groups = parameter_groups(model, lr=1e-5, fusion_lr=1e-3, crf_lr=5e-2, weight_decay=0.01)
    grouped = [id(p) for group in groups for p in group["params"]]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(id(p) for p in trainable)
    by_name = {group["name"]: group for group in groups}
    assert set(by_name) == {"backbone", "backbone_no_decay", "fusion", "fusion_no_decay", "crf_no_decay"}
    assert (by_name["backbone"]["lr"], by_name["fusion"]["lr"], by_name["crf_no_decay"]["lr"]) == (
        1e-5,
        1e-3,
        5e-2,
    )
    for group in groups:
        no_decay = group["name"].endswith("_no_decay")
        assert group["weight_decay"] == (0.0 if no_decay else 0.01)
        assert all((p.ndim < 2) == no_decay for p in group["params"] if not group["name"].startswith("crf"))
    crf_parameters = {id(p) for p in list(model.crf.parameters()) + list(model.span_crf.parameters())}
    assert {id(p) for p in by_name["crf_no_decay"]["params"]} == crf_parameters
    layer_norm = model.mgcm.text_encoder.embeddings.LayerNorm.weight
    assert any(p is layer_norm for p in by_name["backbone_no_decay"]["params"])
    torch.optim.AdamW(groups)  # the groups are valid optimizer input
    defaults = parameter_groups(model, lr=2e-5)
    assert {group["lr"] for group in defaults} == {2e-5}


def test_the_frozen_vision_backbone_is_in_no_group_and_a_trainable_one_is_a_backbone(
    tiny_text_config, tiny_resnet_config
):
    def grouped_names(model) -> dict[str, str]:
        names = {id(parameter): name for name, parameter in model.named_parameters()}
        return {
            names[id(p)]: group["name"] for group in parameter_groups(model, lr=1.0) for p in group["params"]
        }

    frozen = tiny_model(tiny_text_config, vision_config=tiny_resnet_config, image_feature_dim=None)
    assert not any(name.startswith("mgcm.vision_model.") for name in grouped_names(frozen))
    trainable = tiny_model(
        tiny_text_config,
        vision_config=tiny_resnet_config,
        image_feature_dim=None,
        freeze_vision_backbone=False,
    )
    vision = {
        group for name, group in grouped_names(trainable).items() if name.startswith("mgcm.vision_model.")
    }
    assert vision == {"backbone", "backbone_no_decay"}


def optimizer_args(**overrides) -> argparse.Namespace:
    settings = dict(
        learning_rate=1e-4,
        fusion_learning_rate=1e-3,
        crf_learning_rate=1e-2,
        weight_decay=0.01,
        warmup_ratio=0.25,
        max_train_steps=8,
    )
    return argparse.Namespace(**(settings | overrides))


def test_the_logged_rates_are_one_per_group_whatever_its_weight_decay(tiny_text_config):
    optimizer = build_optimizer(tiny_model(tiny_text_config), optimizer_args())
    assert group_learning_rates(optimizer) == {"backbone": 1e-4, "fusion": 1e-3, "crf": 1e-2}


@pytest.mark.parametrize("num_processes", [1, 2, 3])
def test_the_rate_at_each_optimizer_step_is_the_same_on_any_number_of_processes(
    tiny_text_config, num_processes
):
    args = optimizer_args()
    optimizer = build_optimizer(tiny_model(tiny_text_config), args)
    scheduler = build_scheduler(optimizer, args, num_processes)
    rates = []
    for _ in range(args.max_train_steps):
        rates.append(group_learning_rates(optimizer)["fusion"])
        optimizer.step()
        # A prepared scheduler steps once per process for every optimizer step.
        for _ in range(num_processes):
            scheduler.step()
    # Warm-up over 2 of the 8 steps (25%) from 0, then linear decay towards 0 at step 9.
    expected = [0.0, 0.5e-3, *(1e-3 * (8 - step) / 6 for step in range(2, 8))]
    assert rates == pytest.approx(expected)
