"""Quality of a weight format: next-token KL divergence and perplexity against the bf16 model.

On the shipped public-domain text (:func:`~hogwild.quant.superweights.calibration_text`),
both models read the same tokens; per position we compare the next-token distributions
(``KL(bf16 || format)``, in nats) and score the text (perplexity). The text goes through in
chunks (one plain causal cache per model, :class:`~hogwild.models.sequence.SequencePlan`) so
that no full ``[tokens, vocab]`` table is ever held: the reference is recomputed alongside
each candidate rather than stored.

RTN formats are measured with and without the super-weight guard (``q4_k`` and
``q4_k-noguard``), which is how the guard's effect is reported.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..models.sequence import SequencePlan
from ..quant.superweights import calibration_text

#: tokens per model call: bounds the logits held at once ([chunk, vocab] fp32)
CHUNK = 256


@dataclass
class QualityRow:
    """One weight format's numbers on the text."""

    weights: str
    guard: bool
    tokens: int
    mean_kl: float
    max_kl: float
    perplexity: float
    #: top-1 agreement with the reference's next token
    same_top1: float
    super_weights: int
    load_s: float
    note: str


def _chunks(ids: torch.Tensor):
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


@torch.inference_mode()
def compare(reference, candidate, ids: torch.Tensor) -> dict[str, float]:
    """Mean and max KL(reference || candidate), candidate perplexity and top-1 agreement on ``ids``."""
    ref_plan = SequencePlan(reference.config, capacity=len(ids))
    cand_plan = SequencePlan(candidate.config, capacity=len(ids))
    kl_sum, kl_max, nll_sum, agree, count = 0.0, 0.0, 0.0, 0, 0
    position = 0
    for chunk in _chunks(ids):
        p = reference.model(chunk, ref_plan).log_softmax(-1)
        q = candidate.model(chunk, cand_plan).log_softmax(-1)
        kl = (p.exp() * (p - q)).sum(-1)
        targets = ids[position + 1 : position + 1 + len(chunk)]
        scored = len(targets)  # the last position of the text has no next token
        kl_sum += float(kl[:scored].sum())
        kl_max = max(kl_max, float(kl[:scored].max())) if scored else kl_max
        nll_sum -= float(q[torch.arange(scored), targets].sum())
        agree += int((p[:scored].argmax(-1) == q[:scored].argmax(-1)).sum())
        count += scored
        position += len(chunk)
    return {"mean_kl": kl_sum / count, "max_kl": kl_max, "perplexity": math.exp(nll_sum / count),
            "same_top1": agree / count, "tokens": count}


def measure(model: str, formats: list[str], tokens: int = 2048, guard: str = "both",
            log=print) -> dict[str, Any]:
    """Load the bf16 reference and each format of ``model`` and compare them on the text.

    ``guard``: ``both`` measures RTN formats with and without the super-weight guard,
    ``on``/``off`` one of the two."""
    from ..loader import load_model
    from ..quant.encode import ENCODABLE

    started = time.perf_counter()
    reference = load_model(model, weights="bf16")
    ids = torch.tensor(reference.tokenizer(calibration_text())["input_ids"][:tokens], dtype=torch.long)
    log(f"reference bf16 loaded in {time.perf_counter() - started:.1f} s; {len(ids)} tokens of text")
    rows: list[QualityRow] = []
    for fmt in formats:
        guards = [True, False] if fmt in ENCODABLE and guard == "both" else [guard != "off"]
        for on in guards:
            t0 = time.perf_counter()
            candidate = load_model(model, weights=fmt, guard=on)
            load_s = time.perf_counter() - t0
            numbers = compare(reference, candidate, ids)
            row = QualityRow(weights=candidate.weights + ("" if on or fmt not in ENCODABLE else "-noguard"),
                             guard=on and fmt in ENCODABLE, tokens=int(numbers["tokens"]),
                             mean_kl=numbers["mean_kl"], max_kl=numbers["max_kl"],
                             perplexity=numbers["perplexity"], same_top1=numbers["same_top1"],
                             super_weights=len(candidate.super_weights), load_s=load_s,
                             note=candidate.weights_note)
            rows.append(row)
            log(f"{row.weights:>14}: mean KL {row.mean_kl:.5f}  ppl {row.perplexity:.3f}  "
                f"top-1 {row.same_top1:.3f}  ({row.note})")
            del candidate
    return {"format": "hogwild-quality", "version": 1, "model": model, "reference": "bf16",
            "text": "hogwild/quant/data/coriolanus.txt", "tokens": len(ids),
            "results": [asdict(r) for r in rows]}


def write(doc: dict[str, Any], out: Path) -> Path:
    """``quality-<model>.json`` plus a Markdown table of it in ``out``; returns the JSON path."""
    out.mkdir(parents=True, exist_ok=True)
    stem = f"quality-{doc['model']}"
    path = out / f"{stem}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    lines = [f"| weights | guard | mean KL vs bf16 | max KL | perplexity | top-1 same | super weights | load s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in doc["results"]:
        lines.append(f"| {r['weights']} | {'yes' if r['guard'] else 'no'} | {r['mean_kl']:.5f} | {r['max_kl']:.3f} | "
                     f"{r['perplexity']:.3f} | {r['same_top1']:.3f} | {r['super_weights']} | {r['load_s']:.1f} |")
    (out / f"{stem}.md").write_text(
        f"# {doc['model']}: quality per weight format\n\n{doc['tokens']} tokens of `{doc['text']}`, "
        f"reference: the {doc['reference']} model of the same file.\n\n" + "\n".join(lines) + "\n")
    return path
