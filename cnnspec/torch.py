"""PyTorch backend, re-exported: `from cnnspec.torch import build` (see cnnspec.backends.torch).

Importing this module does not import torch; building a network does.
"""

from .backends.torch import (
    LoadReport,
    WeightsError,
    build,
    export_onnx,
    load_torchvision_state_dict,
    load_weights,
    read_weights,
    source_code,
)

__all__ = [
    "LoadReport",
    "WeightsError",
    "build",
    "export_onnx",
    "load_torchvision_state_dict",
    "load_weights",
    "read_weights",
    "source_code",
]
