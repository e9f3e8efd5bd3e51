"""Logit drift of the bf16-activation paths (AMX tiles, AVX-512 BF16 dot products) against fp32 activations.

On CPUs with AMX, the bf16-weight linear runs on the tile unit, which reads x as bf16
(``amx_linear`` in ``hogwild_cpu.c``), and so does the attention over a bf16 store, which
reads the rotated queries and the softmax weights as bf16 (``tile_group``); the AVX-512
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

``--isa avx512bf16`` compares the AVX-512 BF16 dot path instead (``pairs_linear``: the linear
reads x as bf16 as on AMX; ``tile_group``'s dot path: the attention reads queries and
weights as bf16 as on AMX), on CPUs with AVX512_BF16; the
file is then ``avx512bf16-drift-<model>.json``.

For scale, ``hogwild quality`` reports the drift of the weight formats (``q8_0`` rounds the
activations to 8 bits per block of 32, ``docs/results/quant/``).

Usage::

    python bench/amx_drift.py --model smollm2-135m --tokens 1024 --out docs/results/bench-cpu/amx
    python bench/amx_drift.py --isa avx512bf16 --out docs/results/bench-cpu/dot-tiles
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


# hw_isa of each compared set, and what it reads as bf16
CANDIDATES = {"amx": (4, "bf16 activations in the linears and attention"),
              "avx512bf16": (3, "bf16 activations in the linears and attention")}


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
    ap.add_argument("--isa", default="amx", choices=list(CANDIDATES), help="the bf16-activation set to compare")
    args = ap.parse_args()
    isa, what = CANDIDATES[args.isa]
    lib = kernels.library()
    if lib is None or lib.hw_isa(isa) != isa:
        sys.exit(f"this CPU (or OS) has no {args.isa} for the kernels: nothing to compare")
    # load on AVX-512 so the linears keep plain bf16 weights, which both sets compute (the
    # AVX512_BF16 set reorders them per call into the dot pairs a model loaded on it keeps,
    # same bits); a model loaded on AVX512_BF16 keeps only the pairs, which AVX-512 refuses
    assert lib.hw_isa(2) == 2
    try:
        loaded = load_model(args.model, weights="bf16")
    finally:
        lib.hw_isa(0)
    ids = torch.tensor(loaded.tokenizer(calibration_text())["input_ids"][: args.tokens], dtype=torch.long)
    quality.CHUNK = kernels.MAX_ROWS
    doc = {"model": args.model, "weights": "bf16", "reference": "avx512 (fp32 activations)",
           "candidate": f"{args.isa} ({what})", "text": "hogwild/quant/data/coriolanus.txt"}
    for name, side in (("linear", Pinned), ("engine", PinnedStore)):
        numbers = quality.compare(side(loaded, 2), side(loaded, isa), ids)
        # the reference's own perplexity, for the two side by side
        numbers["perplexity_reference"] = quality.compare(side(loaded, isa), side(loaded, 2), ids)["perplexity"]
        doc[name] = numbers
    print(json.dumps(doc, indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.isa}-drift-{args.model}.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
