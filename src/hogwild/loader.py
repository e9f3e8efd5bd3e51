"""Load a model ready to run on this machine: the plain model, then the fastest path.

:func:`hogwild.models.loading.load_model` gives the plain PyTorch model (pure ``models/``,
the definition every oracle compares against); :func:`hogwild.kernels.prepare_for_cpu`
swaps in the native kernels where the machine has them, and
:func:`hogwild.gpu.prepare_for_gpu` the fused Triton kernels on a CUDA device. This module joins the two so that
the CLI, the evaluation and Python users get the product path with one call, while the
layers stay apart (models never import kernels).
"""

from __future__ import annotations

import torch

from .gpu import prepare_for_gpu
from .kernels import prepare_for_cpu
from .models import loading
from .models.loading import LoadedModel
from .models.registry import DEFAULT_MODEL


def load_model(name_or_path: str = DEFAULT_MODEL, dtype: str | torch.dtype = "float32",
               device: str | torch.device = "cpu", optimize: bool = True) -> LoadedModel:
    """Like :func:`hogwild.models.loading.load_model`; with ``optimize`` (default), the model
    is prepared for CPU or GPU inference (a no-op without the kernels)."""
    loaded = loading.load_model(name_or_path, dtype=dtype, device=device)
    if optimize:
        prepare_for_cpu(loaded.model)
        prepare_for_gpu(loaded.model)
    return loaded
