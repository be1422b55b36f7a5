"""A non-finite training loss on any process stops every process at the same step, with the same error.

The loss is checked on the device at every batch (no host synchronisation); the processes compare their
records only at `check`, a collective that the training loop calls at the same optimizer step everywhere:
before each checkpoint, at the end of each epoch, and every `--logging_steps` steps.
"""

import torch

NO_FAULT = torch.iinfo(torch.long).max


class NonFiniteLossMonitor:
    """Keeps, on the device, the first optimizer step whose loss was not finite on this process."""

    def __init__(self, accelerator) -> None:
        self.accelerator = accelerator
        self.first_bad_step = torch.full((1,), NO_FAULT, dtype=torch.long, device=accelerator.device)

    def record(self, loss: torch.Tensor, optimizer_step: int) -> None:
        """Note `loss` (a scalar) of a batch that counts towards `optimizer_step` (1-based); no sync."""
        bad_here = torch.where(torch.isfinite(loss.detach()), NO_FAULT, optimizer_step)
        self.first_bad_step = torch.minimum(self.first_bad_step, bad_here)

    def check(self, consequence: str = "") -> None:
        """Collective: call on every process at the same step. If any process saw a non-finite loss, every
        process raises the same `FloatingPointError`, naming the first such step and the processes."""
        steps = self.accelerator.gather(self.first_bad_step).tolist()
        first = min(steps)
        if first == NO_FAULT:
            return
        ranks = [rank for rank, step in enumerate(steps) if step == first]
        raise FloatingPointError(
            f"[rank {self.accelerator.process_index}] non-finite training loss at optimizer step {first} on "
            f"rank {', '.join(map(str, ranks))} of {len(steps)}; every rank stops. {consequence}".rstrip()
        )


__all__ = ["NonFiniteLossMonitor"]
