"""Logit drift of the AMX linear: bf16 activations on the tile unit against fp32 activations.

On CPUs with AMX, the bf16-weight linear runs on the tile unit, which reads x as bf16
(``amx_linear`` in ``hogwild_cpu.c``); the AVX-512 kernel keeps x in fp32. Both use the same
bf16 weights, so the difference is the rounding of the activations alone. This script scores
the shipped text (:func:`hogwild.quant.superweights.calibration_text`) with one loaded model
through the native kernels, each chunk twice (instruction set pinned to AVX-512, then to
AMX), and reports ``KL(avx512 || amx)`` per next-token distribution, both perplexities and
top-1 agreement (:func:`hogwild.bench.quality.compare`). Chunks are at most
``hogwild.kernels.MAX_ROWS`` tokens so every linear is a native kernel call.

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


class Pinned:
    """The loaded model with the kernels pinned to one instruction set for each call."""

    def __init__(self, loaded, isa: int):
        self.loaded, self.isa, self.config = loaded, isa, loaded.config

    def model(self, ids, plan):
        lib = kernels.library()
        assert lib.hw_isa(self.isa) == self.isa
        try:
            return self.loaded.model(ids, plan)
        finally:
            lib.hw_isa(0)


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
    numbers = quality.compare(Pinned(loaded, 2), Pinned(loaded, 3), ids)
    doc = {"model": args.model, "weights": "bf16", "reference": "avx512 (fp32 activations)",
           "candidate": "amx (bf16 activations)", "text": "hogwild/quant/data/coriolanus.txt", **numbers}
    # the reference's own perplexity, for the two side by side
    doc["perplexity_reference"] = quality.compare(Pinned(loaded, 3), Pinned(loaded, 2), ids)["perplexity"]
    print(json.dumps(doc, indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"amx-drift-{args.model}.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
