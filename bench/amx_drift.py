"""Logit drift of the AMX paths: bf16 activations on the tile unit against fp32 activations.

On CPUs with AMX, the bf16-weight linear runs on the tile unit, which reads x as bf16
(``amx_linear`` in ``hogwild_cpu.c``), and so does the attention over a bf16 store, which
reads the rotated queries and the softmax weights as bf16 (``amx_group``); the AVX-512
kernels keep both in fp32. Weights and cache are the same bf16 either way, so the difference
is the rounding of activations alone. This script scores the shipped text
(:func:`hogwild.quant.superweights.calibration_text`) with one loaded model twice per
chunk, instruction set pinned to AVX-512 and then to AMX, and reports ``KL(avx512 || amx)``
per next-token distribution, both perplexities and top-1 agreement
(:func:`hogwild.bench.quality.compare`), in two ways:

- ``linear``: the model's own causal forward (attention in PyTorch), chunks of
  ``hogwild.kernels.MAX_ROWS`` tokens, so every linear is a native kernel call;
- ``engine``: through the engine's KV store (:class:`hogwild.bench.quality.ThroughStore`,
  steps of 64 tokens folded into history), so the native attention kernel runs too.

For scale, ``hogwild quality`` reports the drift of the weight formats (``q8_0`` rounds the
activations to 8 bits per block of 32, ``docs/results/quant/``).

Usage::

    python bench/amx_drift.py --model smollm2-135m --tokens 1024 --out docs/results/bench-cpu/amx
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
try:
    from hogwild import kernels
except ImportError:  # not installed: run from a checkout
    sys.path.insert(0, str(ROOT / "src"))
    from hogwild import kernels

from hogwild.bench import quality
from hogwild.loader import load_model
from hogwild.quant.superweights import calibration_text


def pinned(isa: int, fn):
    """``fn`` with the kernels pinned to instruction set ``isa`` for each call."""

    def call(*args):
        lib = kernels.library()
        assert lib.hw_isa(isa) == isa
        try:
            return fn(*args)
        finally:
            lib.hw_isa(0)

    return call


class Pinned:
    """The loaded model with the kernels pinned to one instruction set for each call."""

    def __init__(self, loaded, isa: int):
        self.loaded, self.isa, self.config = loaded, isa, loaded.config

    def model(self, ids, plan):
        return pinned(self.isa, self.loaded.model)(ids, plan)


class PinnedStore(Pinned):
    """The same, reading through the engine's KV store (the native attention kernel runs)."""

    def reader(self):
        return pinned(self.isa, quality.ThroughStore(self.loaded, "auto").reader())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--out", type=Path, default=None, help="directory for amx-drift-<model>.json")
    args = ap.parse_args()
    lib = kernels.library()
    if lib is None or lib.hw_isa(3) != 3:
        sys.exit("this CPU (or OS) has no AMX for the kernels: nothing to compare")
    lib.hw_isa(0)
    loaded = load_model(args.model, weights="bf16")
    ids = torch.tensor(loaded.tokenizer(calibration_text())["input_ids"][: args.tokens], dtype=torch.long)
    quality.CHUNK = kernels.MAX_ROWS
    doc = {"model": args.model, "weights": "bf16", "reference": "avx512 (fp32 activations)",
           "candidate": "amx (bf16 activations)", "text": "hogwild/quant/data/coriolanus.txt"}
    for name, side in (("linear", Pinned), ("engine", PinnedStore)):
        numbers = quality.compare(side(loaded, 2), side(loaded, 3), ids)
        # the reference's own perplexity, for the two side by side
        numbers["perplexity_reference"] = quality.compare(side(loaded, 3), side(loaded, 2), ids)["perplexity"]
        doc[name] = numbers
    print(json.dumps(doc, indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"amx-drift-{args.model}.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
