"""When the model may read tensor values on the host: for its input checks and its one data-dependent shape.

Reading a value (`bool(mask.any())`, `int(length)`) makes the host wait for the device: on a GPU every such
read stalls the stream, and under `torch.compile` or on the `meta` device it breaks the graph. On the CPU it
costs no synchronisation. So by default the model reads values only from CPU tensors outside compilation;
`MGCM_CHECK_INPUTS=1` turns the reads on everywhere (a debug switch for bad inputs on a GPU), and
`MGCM_CHECK_INPUTS=0` turns them off everywhere. Without them the forward is one fixed graph. The ONNX export
runs the model inside `no_host_reads()`, so that the graph it records is that fixed graph whatever exporter
traces it (one batch's row grouping would otherwise be baked into it).
"""

import contextvars
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_HOST_READS_OFF = contextvars.ContextVar("mgcm_host_reads_off", default=False)


def host_reads_allowed(tensor: torch.Tensor) -> bool:
    """Whether the model may read the values of `tensor` (an input of the current forward) on the host."""
    switch = os.environ.get("MGCM_CHECK_INPUTS", "")
    if switch == "0" or _HOST_READS_OFF.get() or torch.compiler.is_compiling():
        return False
    if switch == "1":
        return tensor.device.type != "meta"
    return tensor.device.type == "cpu"


@contextmanager
def no_host_reads() -> Iterator[None]:
    """Inside the block the model reads no tensor value on the host: its forward is one fixed graph."""
    token = _HOST_READS_OFF.set(True)
    try:
        yield
    finally:
        _HOST_READS_OFF.reset(token)


__all__ = ["host_reads_allowed", "no_host_reads"]
