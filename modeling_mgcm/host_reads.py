"""When the model may read tensor values on the host: for its input checks and its one data-dependent shape.

Reading a value (`bool(mask.any())`, `int(length)`) makes the host wait for the device: on a GPU every such
read stalls the stream, and under `torch.compile` or on the `meta` device it breaks the graph. On the CPU it
costs no synchronisation. So by default the model reads values only from CPU tensors outside compilation;
`MGCM_CHECK_INPUTS=1` turns the reads on everywhere (a debug switch for bad inputs on a GPU), and
`MGCM_CHECK_INPUTS=0` turns them off everywhere. Without them the forward is one fixed graph.
"""

import os

import torch


def host_reads_allowed(tensor: torch.Tensor) -> bool:
    """Whether the model may read the values of `tensor` (an input of the current forward) on the host."""
    switch = os.environ.get("MGCM_CHECK_INPUTS", "")
    if switch == "0" or torch.compiler.is_compiling():
        return False
    if switch == "1":
        return tensor.device.type != "meta"
    return tensor.device.type == "cpu"


__all__ = ["host_reads_allowed"]
