"""Quantized weights: block formats, encoders, GGUF tensors kept as stored, the super-weight guard.

A quantized matrix is a :class:`~hogwild.quant.weights.QuantWeight`: its rows' blocks in the
byte layout ggml defines for the format (the layout the GGUF files use, so a GGUF tensor is
used as stored), read by the native kernels in ``hogwild/kernels/``.

- :mod:`.weights`: the contract (``QuantWeight``, ``BlockFormat``, ``FORMATS``).
- :mod:`.encode`, :mod:`.fp4`: round-to-nearest encoders (q8_0, q4_k; mxfp4, nvfp4);
  :mod:`.dequant`: back to floats.
- :mod:`.gguf_file`, :mod:`.gguf_tensors`: a GGUF's tensors as stored, under our names.
- :mod:`.plan`: the ``--weights`` setting and the matrices a model gets from it;
  :mod:`hogwild.kernels.quant_install`: putting them into a model (the kernels' ``QuantLinear``, or dequantized).
- :mod:`.superweights`: the super-weight guard; :mod:`hogwild.bench.quality`: KL and perplexity vs bf16.
"""

from .dequant import dequantize
from .encode import quantize
from .weights import FORMATS, BlockFormat, QuantWeight, block_format

__all__ = ["FORMATS", "BlockFormat", "QuantWeight", "block_format", "dequantize", "quantize"]
