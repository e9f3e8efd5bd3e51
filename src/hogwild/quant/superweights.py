"""The super-weight guard: find the few ``down_proj`` weights that carry the model, keep them exact.

A handful of scalar weights in the MLP's down projection produce activations thousands of
times larger than the rest (the "super weights" of LLM quantization studies): one input
channel of ``down_proj`` spikes on the first tokens, and a large weight in that column
writes the spike into one hidden dimension of the residual stream, where it acts for every
later layer. Rounded to 4 bits such a weight moves by a few percent, and so does that
activation; the model's output can fall apart.

Detection runs the float model on the start of a text that ships with the package
(:func:`calibration_text`, a public-domain passage) and records, per layer, the largest
``|down_proj output|``. A layer whose largest output is at least ``ratio`` times the median
over layers spikes; in it, the weights ``W[row, col]`` whose share of that output
(``|x[t, col] * W[row, col]|`` over ``|y[t, row]|``) is at least ``share`` are super weights.

The guard (:func:`guard`) quantizes each such matrix with its super weights held out (set to
0, so they no longer inflate their block's scale and its other weights keep their
precision) and stores the exact corrections in :attr:`QuantWeight.fix_index`/``fix_delta``:
the kernel adds ``x[:, col] * delta`` to output ``row``, which gives the original weight.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from importlib import resources

import torch

from ..models.llama import CausalLM
from .dequant import dequantize
from .encode import Fit, quantize
from .weights import QuantWeight

log = logging.getLogger(__name__)

#: the calibration and quality text (Shakespeare, Coriolanus, act I; public domain)
CALIBRATION_FILE = "coriolanus.txt"
#: tokens of the calibration text the detection runs on
CALIBRATION_TOKENS = 256
#: a layer spikes when its largest down_proj output is this many times the median layer's
SPIKE_RATIO = 50.0
#: a weight is a super weight when it writes at least this share of the spike
MIN_SHARE = 0.1
#: at most this many super weights per spiking layer (the largest contributions)
MAX_PER_LAYER = 4


def calibration_text() -> str:
    """The public-domain text shipped in ``hogwild/quant/data/`` for calibration and quality."""
    return resources.files("hogwild.quant").joinpath("data", CALIBRATION_FILE).read_text(encoding="utf-8")


@dataclass(frozen=True)
class SuperWeight:
    """One super weight: ``W[row, col]`` of layer ``layer``'s ``down_proj``."""

    layer: int
    row: int
    col: int
    #: the weight's value
    value: float
    #: the largest |down_proj output| of the layer (at hidden dimension ``row``)
    spike: float
    #: the input activation x[t, col] at the spiking token
    activation: float
    #: the spiking token's index in the calibration text
    token: int

    def as_dict(self) -> dict:
        return asdict(self)


def calibration_ids(tokenizer, tokens: int = CALIBRATION_TOKENS) -> torch.Tensor:
    """The first ``tokens`` token ids of :func:`calibration_text` (with the tokenizer's BOS, if any)."""
    return torch.tensor(tokenizer(calibration_text())["input_ids"][:tokens], dtype=torch.long)


@torch.inference_mode()
def find_super_weights(
    model: CausalLM, ids: torch.Tensor, ratio: float = SPIKE_RATIO, share: float = MIN_SHARE,
    per_layer: int = MAX_PER_LAYER,
) -> list[SuperWeight]:
    """Super weights of a float model (plain ``nn.Linear`` down projections) on ``ids``.

    The model must still have its float ``down_proj`` weights: run this before quantizing.
    """
    from ..models.sequence import SequencePlan

    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    layers = model.model.layers

    def recorder(index: int):
        def hook(module, inputs, output):
            seen[index] = (inputs[0].detach().float(), output.detach().float())

        return hook

    handles = [layer.mlp.down_proj.register_forward_hook(recorder(i)) for i, layer in enumerate(layers)]
    try:
        model(ids.to(model.device), SequencePlan(model.config, model.device, capacity=len(ids)))
    finally:
        for handle in handles:
            handle.remove()
    peaks = torch.tensor([float(seen[i][1].abs().max()) for i in range(len(layers))])
    floor = float(peaks.median()) * ratio
    found: list[SuperWeight] = []
    for i in range(len(layers)):
        x, y = seen[i]
        if float(peaks[i]) < floor or float(peaks[i]) == 0.0:
            continue
        token, row = divmod(int(y.abs().argmax()), y.shape[1])
        weight = layers[i].mlp.down_proj.weight
        contrib = (x[token] * weight[row].float()).abs()
        top = contrib.topk(min(per_layer, contrib.numel()))
        for value, col in zip(top.values.tolist(), top.indices.tolist()):
            if value >= share * float(peaks[i]):
                found.append(SuperWeight(i, row, col, float(weight[row, col]), float(y[token, row]),
                                         float(x[token, col]), token))
    return found


def guard(weight: torch.Tensor, fmt: str, cells: list[tuple[int, int]], fit: Fit | None = None) -> QuantWeight:
    """Quantize ``weight`` to ``fmt`` (``fit``: see :func:`quantize`) with the weights at
    ``cells`` (row, col) kept exact: held out of their blocks (set to 0) and restored
    through ``fix_index``/``fix_delta``."""
    if not cells:
        return quantize(weight, fmt, fit)
    held = weight.detach().float().clone()
    index = torch.tensor(sorted(set(cells)), dtype=torch.long)
    held[index[:, 0], index[:, 1]] = 0.0
    q = quantize(held, fmt, fit)
    plain = dequantize(q, torch.float64, fixes=False)[index[:, 0], index[:, 1]]
    original = weight.detach()[index[:, 0], index[:, 1]].double()
    q.fix_index = index.to(torch.int32)
    q.fix_delta = (original - plain).float()
    return q


def describe(found: list[SuperWeight]) -> list[str]:
    """One line per super weight, for logs and ``hogwild models --inspect``."""
    return [
        f"layer {s.layer} down_proj[{s.row}, {s.col}] = {s.value:+.4f}: input {s.activation:+.1f} at token "
        f"{s.token} writes a spike of {s.spike:+.1f} into hidden dim {s.row}"
        for s in found
    ]


def log_found(found: list[SuperWeight]) -> None:
    if not found:
        log.info("super-weight guard: no super weights found")
    for line in describe(found):
        log.info("super weight: %s", line)
