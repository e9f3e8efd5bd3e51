"""Quality of a weight format: next-token KL divergence and perplexity against the bf16 model.

On the shipped public-domain text (:func:`~hogwild.quant.superweights.calibration_text`),
both models read the same tokens; per position we compare the next-token distributions
(``KL(bf16 || format)``, in nats) and score the text (perplexity). The text goes through in
chunks (one plain causal cache per model, :class:`~hogwild.models.sequence.SequencePlan`) so
that no full ``[tokens, vocab]`` table is ever held: the reference is recomputed alongside
each candidate rather than stored.

RTN formats are measured with and without the super-weight guard (``q4_k`` and
``q4_k-noguard``), which is how the guard's effect is reported.

KV settings (``kv``, e.g. ``int8``) are measured on the bf16 model through the engine's own
store (:class:`ThroughStore`), against the same model and store keeping keys and values in
bf16: the logit drift of the compact cache alone.

``window``: score as ``llama-perplexity`` does (independent windows of ``window`` tokens, the
second half of each scored), so that ``llama_cpp`` (a folder with llama.cpp's tools,
:mod:`hogwild.bench.llama_cpp`) can put llama.cpp's KL divergence for the same format, text
and windows next to ours.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from collections.abc import Callable, Sequence
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
    #: llama.cpp's numbers for the same format and windows (``--llama-cpp``), and ours over its KL
    llama_kl: float | None = None
    llama_perplexity: float | None = None
    vs_llama_kl: float | None = None
    kv: str = "auto"  # the KV setting (rows of other settings compare with "auto", same weights)


def _segments(ids: torch.Tensor, window: int | None) -> list[tuple[torch.Tensor, int]]:
    """(tokens read from an empty cache, first position scored): the whole text from its
    start, or llama-perplexity's whole windows with the second half of each scored."""
    if window is None:
        return [(ids, 0)]
    return [(ids[s : s + window], window // 2) for s in range(0, len(ids) - window + 1, window)]


@torch.inference_mode()
def compare(reference, candidate, ids: torch.Tensor, window: int | None = None) -> dict[str, float]:
    """Mean and max KL(reference || candidate), candidate perplexity and top-1 agreement on ``ids``
    (every position, or per ``window`` as llama-perplexity scores)."""
    kl_sum, kl_max, nll_sum, agree, count = 0.0, 0.0, 0.0, 0, 0
    for segment, first in _segments(ids, window):
        ref_feed, cand_feed = _feed(reference, len(segment)), _feed(candidate, len(segment))
        for start in range(0, len(segment), CHUNK):
            chunk = segment[start : start + CHUNK]
            p = ref_feed(chunk).float().log_softmax(-1)
            q = cand_feed(chunk).float().log_softmax(-1)
            # positions of this chunk that predict a token of the segment, from ``first`` on
            lo, hi = max(0, first - start), min(len(chunk), len(segment) - 1 - start)
            if hi <= lo:
                continue
            p, q = p[lo:hi], q[lo:hi]
            targets = segment[start + lo + 1 : start + hi + 1]
            kl = (p.exp() * (p - q)).sum(-1)
            kl_sum += float(kl.sum())
            kl_max = max(kl_max, float(kl.max()))
            nll_sum -= float(q[torch.arange(hi - lo), targets].sum())
            agree += int((p.argmax(-1) == q.argmax(-1)).sum())
            count += hi - lo
    if count == 0:
        raise ValueError(f"nothing to score: {len(ids)} tokens, window {window}")
    return {"mean_kl": kl_sum / count, "max_kl": kl_max, "perplexity": math.exp(nll_sum / count),
            "same_top1": agree / count, "tokens": count}


def _feed(side: Any, length: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """chunk -> logits of one segment read from an empty cache: the side's own reader
    (:class:`ThroughStore`) or a plain causal cache of the side's model."""
    if hasattr(side, "reader"):
        return side.reader()
    plan = SequencePlan(side.config, capacity=length)
    return lambda chunk: side.model(chunk, plan)


class ThroughStore:
    """A loaded model reading text through the engine's KV store under setting ``kv``: what
    came before is one finished block (int8 under ``kv="int8"``), the next ``step`` tokens a
    block being written (in the model's dtype), folded into the finished one after them, as
    the engine folds a step into history. So two settings differ only in how finished tokens
    are stored."""

    def __init__(self, loaded: Any, kv: str, step: int = 64):
        self.loaded, self.kv, self.step = loaded, kv, step
        self.config = loaded.config

    def reader(self) -> Callable[[torch.Tensor], torch.Tensor]:
        from ..core.attention import QueryGroup
        from ..core.batch import Batch

        batch = Batch(self.loaded.model, kv=self.kv)
        store = batch.store
        done = store.new_block(256, compact=True)

        def feed(chunk: torch.Tensor) -> torch.Tensor:
            out = []
            for s in range(0, len(chunk), self.step):
                part = chunk[s : s + self.step].tolist()
                n = len(part)
                current = store.new_block(n)
                store.reserve(current, n)
                group = QueryGroup([done, current], [current] * n, list(range(n)))
                out.append(batch.forward(part, [group], list(range(n))))
                store.append_block(done, current, batch.rope)
            return torch.cat(out)

        return feed


def measure(model: str, formats: list[str], tokens: int = 2048, guard: str = "both",
            log=print, window: int | None = None, llama_cpp: Path | None = None,
            threads: int | None = None, kv: Sequence[str] = ()) -> dict[str, Any]:
    """Load the bf16 reference and each format of ``model`` and compare them on the text.

    ``guard``: ``both`` measures RTN formats with and without the super-weight guard,
    ``on``/``off`` one of the two. ``kv``: KV settings to compare, each on the bf16 model
    against the same model keeping its cache in bf16 (:class:`ThroughStore`)."""
    from ..loader import load_model
    from ..quant.encode import ENCODABLE

    started = time.perf_counter()
    reference = load_model(model, weights="bf16")
    ids = torch.tensor(reference.tokenizer(calibration_text())["input_ids"][:tokens], dtype=torch.long)
    log(f"reference bf16 loaded in {time.perf_counter() - started:.1f} s; {len(ids)} tokens of text")
    llama = _LlamaSide(llama_cpp, model, window, len(ids), threads or torch.get_num_threads(), log) if llama_cpp else None
    rows: list[QualityRow] = []
    for fmt in formats:
        guards = [True, False] if fmt in ENCODABLE and guard == "both" else [guard != "off"]
        for on in guards:
            t0 = time.perf_counter()
            candidate = load_model(model, weights=fmt, guard=on)
            load_s = time.perf_counter() - t0
            numbers = compare(reference, candidate, ids, window)
            row = QualityRow(weights=candidate.weights + ("" if on or fmt not in ENCODABLE else "-noguard"),
                             guard=on and fmt in ENCODABLE, tokens=int(numbers["tokens"]),
                             mean_kl=numbers["mean_kl"], max_kl=numbers["max_kl"],
                             perplexity=numbers["perplexity"], same_top1=numbers["same_top1"],
                             super_weights=len(candidate.super_weights), load_s=load_s,
                             note=candidate.weights_note)
            theirs = llama.numbers(fmt) if llama else None
            if theirs:
                row.llama_kl, row.llama_perplexity = theirs["mean_kl"], theirs.get("perplexity")
                row.vs_llama_kl = row.mean_kl / row.llama_kl if row.llama_kl > 0 else None
            rows.append(row)
            log(f"{row.weights:>14}: mean KL {row.mean_kl:.5f}  ppl {row.perplexity:.3f}  "
                f"top-1 {row.same_top1:.3f}  ({row.note})"
                + (f"; llama.cpp KL {row.llama_kl:.5f}" if row.llama_kl is not None else ""))
            del candidate
    for mode in kv:
        t0 = time.perf_counter()
        numbers = compare(ThroughStore(reference, "auto"), ThroughStore(reference, mode), ids, window)
        row = QualityRow(weights=reference.weights, guard=False, tokens=int(numbers["tokens"]),
                         mean_kl=numbers["mean_kl"], max_kl=numbers["max_kl"], perplexity=numbers["perplexity"],
                         same_top1=numbers["same_top1"], super_weights=0, load_s=0.0, kv=mode,
                         note=f"KV {mode} vs KV bf16 through the engine's store ({time.perf_counter() - t0:.0f} s)")
        rows.append(row)
        log(f"{'kv ' + mode:>14}: mean KL {row.mean_kl:.5f}  ppl {row.perplexity:.3f}  top-1 {row.same_top1:.3f}")
    return {"format": "hogwild-quality", "version": 1, "model": model, "reference": "bf16",
            "text": "hogwild/quant/data/coriolanus.txt", "tokens": len(ids), "window": window,
            "llama_cpp": llama.commands if llama else None, "results": [asdict(r) for r in rows]}


class _LlamaSide:
    """llama.cpp's KL divergence for each format it also has, on the same text and windows:
    the reference is the model's GGUF re-encoded as BF16, the formats are made from it
    (:func:`hogwild.bench.llama_cpp.requantize`), and ``native`` is the GGUF itself."""

    def __init__(self, bin_dir: Path, model: str, window: int | None, tokens: int, threads: int, log):
        from ..paths import cache_dir
        from .llama_cpp import model_gguf, requantize

        if window is None:
            raise ValueError("--llama-cpp needs --window (llama-perplexity scores windows)")
        self.bin_dir, self.window, self.chunks, self.threads, self.log = bin_dir, window, tokens // window, threads, log
        self.source = model_gguf(model)
        self.work = cache_dir() / "llama-cpp" / self.source.stem
        self.work.mkdir(parents=True, exist_ok=True)
        self.text = self.work / "text.txt"
        self.text.write_text(calibration_text(), encoding="utf-8")
        self.reference = requantize(bin_dir, self.source, self.work / "reference-bf16.gguf", "BF16", threads)
        self.commands: dict[str, str] = {}
        self._done: dict[str, dict] = {}

    def numbers(self, fmt: str) -> dict | None:
        from .llama_cpp import LLAMA_TYPES, kl_divergence, requantize

        if fmt not in LLAMA_TYPES and fmt != "native":
            return None
        if fmt not in self._done:
            gguf = self.source if fmt == "native" else requantize(
                self.bin_dir, self.reference, self.work / f"{fmt}-pure.gguf", LLAMA_TYPES[fmt], self.threads)
            self.log(f"llama.cpp: KL of {gguf.name} on {self.chunks} windows of {self.window} tokens")
            result = kl_divergence(self.bin_dir, self.reference, gguf, self.text, self.window, self.chunks,
                                   self.threads, self.work)
            self.commands[fmt] = result.pop("cmd")
            self._done[fmt] = result
        return self._done[fmt]


def write(doc: dict[str, Any], out: Path) -> Path:
    """``quality-<model>.json`` plus a Markdown table of it in ``out``; returns the JSON path."""
    out.mkdir(parents=True, exist_ok=True)
    stem = f"quality-{doc['model']}"
    path = out / f"{stem}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    llama = any(r.get("llama_kl") is not None for r in doc["results"])
    extra = " llama.cpp KL | ours / llama.cpp | llama.cpp ppl |" if llama else ""
    lines = ["| weights | KV | guard | mean KL vs bf16 | max KL | perplexity | top-1 same | super weights | load s |" + extra,
             "|---|---|---|---|---|---|---|---|---|" + ("---|---|---|" if llama else "")]
    for r in doc["results"]:
        line = (f"| {r['weights']} | {r.get('kv', 'auto')} | {'yes' if r['guard'] else 'no'} | {r['mean_kl']:.5f} | {r['max_kl']:.3f} | "
                f"{r['perplexity']:.3f} | {r['same_top1']:.3f} | {r['super_weights']} | {r['load_s']:.1f} |")
        if llama:
            theirs = r.get("llama_kl")
            line += (f" {theirs:.5f} | {r['vs_llama_kl']:.2f} x | {r['llama_perplexity']:.3f} |" if theirs is not None
                     else " - | - | - |")
        lines.append(line)
    window = doc.get("window")
    scored = (f"windows of {window} tokens read from an empty cache, the second half of each scored "
              "(as llama-perplexity does)" if window else "one sequence, every position scored")
    (out / f"{stem}.md").write_text(
        f"# {doc['model']}: quality per weight format\n\n{doc['tokens']} tokens of `{doc['text']}`, {scored}; "
        f"reference: the {doc['reference']} model of the same file.\n\n" + "\n".join(lines) + "\n")
    plot(doc, out / f"{stem}.png")
    return path


def plot(doc: dict[str, Any], path: Path) -> Path:
    """Mean KL per weight setting on a log scale, llama.cpp's beside ours where measured:
    the formats span three orders of magnitude (native 0.003 to MXFP4 0.9 on SmolLM2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc["results"]
    labels = [r["weights"] + ("" if r.get("kv", "auto") == "auto" else f" kv {r['kv']}") for r in rows]
    ours = [max(r["mean_kl"], 1e-6) for r in rows]
    theirs = [r.get("llama_kl") for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(rows) + 1.5), 3.6))
    width = 0.38 if any(t is not None for t in theirs) else 0.7
    ax.bar([i - (width / 2 if width < 0.5 else 0) for i in x], ours, width, label="hogwild", color="#3b6ea8")
    if width < 0.5:
        ax.bar([i + width / 2 for i in x], [t if t is not None else 0 for t in theirs], width,
               label="llama.cpp (same format, text, windows)", color="#d08a2c")
    ax.set_yscale("log")
    ax.set_xticks(list(x), labels, rotation=30, ha="right")
    ax.set_ylabel("mean KL vs bf16 (log)")
    ax.set_title(f"{doc['model']}: quality per weight format ({doc['tokens']} tokens)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
