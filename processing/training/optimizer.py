"""The optimizer and learning-rate schedule of a training run: AdamW over three learning-rate groups (the
backbones, the MGCM layers and heads, the CRF transition scores) with a linear warm-up and decay."""

import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from processing.training.arguments import TrainArguments

# Parameter-name prefixes of each group; every other trainable parameter is an MGCM layer or head (`fusion`).
BACKBONE_PREFIXES = ("mgcm.text_encoder.", "mgcm.vision_model.")
CRF_PREFIXES = ("crf.", "span_crf.")
NO_DECAY_SUFFIX = "_no_decay"


def parameter_groups(
    model: nn.Module,
    lr: float,
    fusion_lr: float | None = None,
    crf_lr: float | None = None,
    weight_decay: float = 0.01,
) -> list[dict]:
    """Optimizer parameter groups of an `MGCMForTokenClassification`: backbones at `lr`, the MGCM layers and
    heads at `fusion_lr` (default `lr`), the CRF transition scores at `crf_lr` (default `fusion_lr`). Weight
    decay applies to matrices only: never to biases, LayerNorm weights or CRF scores. Frozen parameters are
    left out.

    Returns a list of `{"name", "params", "lr", "weight_decay"}` dicts for `torch.optim.AdamW`; the names are
    `backbone`, `fusion` and `crf`, with `_no_decay` for the parameters without weight decay.
    """
    fusion_lr = lr if fusion_lr is None else fusion_lr
    crf_lr = fusion_lr if crf_lr is None else crf_lr
    rates = {"backbone": lr, "fusion": fusion_lr, "crf": crf_lr}
    grouped: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if name.startswith(BACKBONE_PREFIXES):
            part = "backbone"
        elif name.startswith(CRF_PREFIXES):
            part = "crf"
        else:
            part = "fusion"
        decays = parameter.ndim >= 2 and part != "crf"
        grouped.setdefault((part, decays), []).append(parameter)
    return [
        {
            "name": f"{part}{'' if decays else NO_DECAY_SUFFIX}",
            "params": parameters,
            "lr": rates[part],
            "weight_decay": weight_decay if decays else 0.0,
        }
        for (part, decays), parameters in grouped.items()
    ]


def build_optimizer(model: nn.Module, args: TrainArguments) -> torch.optim.AdamW:
    """AdamW over the model's learning-rate groups at `--learning_rate`, `--fusion_learning_rate` and
    `--crf_learning_rate`, with `--weight_decay`."""
    return torch.optim.AdamW(
        parameter_groups(
            model,
            lr=args.learning_rate,
            fusion_lr=args.fusion_learning_rate,
            crf_lr=args.crf_learning_rate,
            weight_decay=args.weight_decay,
        )
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, args: TrainArguments, num_processes: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `--warmup_ratio` of `args.max_train_steps` optimizer steps, then linear decay to 0.

    The prepared scheduler takes `num_processes` steps per optimizer step (Accelerate's rule for batches that
    are not split), so it is sized in those units: the rate at each optimizer step is then the same on any
    number of processes.
    """
    return get_linear_schedule_with_warmup(
        optimizer,
        int(args.warmup_ratio * args.max_train_steps) * num_processes,
        args.max_train_steps * num_processes,
    )


def group_learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The rate the next optimizer step applies, per parameter group (the decay variants share it)."""
    return {group["name"].removesuffix(NO_DECAY_SUFFIX): group["lr"] for group in optimizer.param_groups}


__all__ = ["build_optimizer", "build_scheduler", "group_learning_rates", "parameter_groups"]
