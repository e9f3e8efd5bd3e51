"""llama.cpp as the yardstick: its speed and its quantization quality on the same GGUF.

A CPU user's alternative to hogwild is llama.cpp, so ``hogwild bench --llama-cpp DIR`` and
``hogwild quality --llama-cpp DIR`` run its tools on the same file, text and threads and
report our numbers as ratios to its. ``DIR`` holds the built binaries
(``llama-batched-bench``, ``llama-quantize``, ``llama-perplexity``; the folder
``bench/build_llama_cpp.sh`` builds and prints). Nothing here is imported by the engine.

* :func:`batched_bench`: ms per decode pass of ``llama-batched-bench -pps`` (one shared
  prompt of ``context`` tokens, N parallel sequences), T_TG / TG from its table.
* :func:`requantize`: a GGUF in another type, made by ``llama-quantize`` from the model's own
  file (``--allow-requantize``): ``BF16`` is the reference hogwild's quality report also uses
  (the file's values, rounded to bf16); ``Q8_0``, ``Q4_K`` and MXFP4 are made ``--pure`` (one
  type for every matrix): hogwild's quantize-on-load formats quantize every linear of the blocks
  and the output matrix, which the bundled models tie to the token embeddings, so llama.cpp
  quantizes that one table for both uses (its embedding lookup reads quantized rows, ours
  float ones).
* :func:`kl_divergence`: ``llama-perplexity --kl-divergence`` of a GGUF against the BF16
  reference on a text file: llama.cpp reads the text in independent windows of ``ctx``
  tokens and scores the second half of each, which ``hogwild quality --window`` reproduces.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from ..errors import InvalidRequestError

#: llama-quantize type for each hogwild weight format it also has: MXFP4 is its MoE recipe's
#: type (experts in MXFP4, the rest Q8_0), which ``--pure`` applies to every matrix; it has
#: no NVFP4 encoder
LLAMA_TYPES = {"q8_0": "Q8_0", "q4_k": "Q4_K", "mxfp4": "MXFP4_MOE"}


def model_gguf(model: str) -> Path:
    """The GGUF llama.cpp reads for ``model``: a ``.gguf`` path as given, else the file of a
    short name (:func:`hogwild.models.registry.gguf_path`)."""
    from ..models.registry import gguf_path

    return Path(model) if model.endswith(".gguf") else gguf_path(model)


def binary(bin_dir: Path, name: str) -> Path:
    """``bin_dir/name``, or a clear error naming what is missing."""
    path = Path(bin_dir).expanduser() / name
    if not path.is_file():
        raise InvalidRequestError(
            f"--llama-cpp: {path} does not exist (build llama.cpp with bench/build_llama_cpp.sh "
            "and give the folder it prints)")
    return path


def _run(cmd: list[str]) -> str:
    """stdout + stderr of a llama.cpp tool; a failure is an error that shows its last lines."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise ToolFailed(f"{Path(cmd[0]).name} failed (exit {proc.returncode}):\n{tail}", proc.returncode)
    return proc.stdout + "\n" + proc.stderr


class ToolFailed(InvalidRequestError):
    """A llama.cpp tool exited with an error; ``code`` is its exit status (negative: a signal)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


#: Exit statuses of a crash (SIGILL, SIGSEGV as the shell reports them, or as signals)
_CRASHES = {132, 139, -4, -11}


def batched_bench_cmd(bin_dir: Path, gguf: Path, workers: list[int], context: int, threads: int,
                      tg: int = 32) -> list[str]:
    return [str(binary(bin_dir, "llama-batched-bench")), "-m", str(gguf),
            "-c", str((context + tg) * max(workers) + 256), "-npp", str(context), "-ntg", str(tg),
            "-npl", ",".join(map(str, workers)), "-pps", "-t", str(threads), "-tb", str(threads)]


def parse_batched_bench(output: str) -> dict[int, float]:
    """{N: ms per decode pass} from llama-batched-bench's table (T_TG seconds over TG tokens)."""
    ms: dict[int, float] = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 8 and all(re.fullmatch(r"\d+", c) for c in cells[:3]):
            tg, b, t_tg = int(cells[1]), int(cells[2]), float(cells[6])
            ms[b] = 1e3 * t_tg / tg
    return ms


def batched_bench(bin_dir: Path, gguf: Path, workers: list[int], context: int, threads: int,
                  tg: int = 32) -> dict:
    """llama.cpp's ms per pass for each N of ``workers`` (wall clock, one run).

    On this project's CPU machine the build's repacked (AMX int8) weights crashed llama.cpp
    (SIGSEGV/SIGILL) on quantized files; a crashed run is timed again with ``--no-repack``,
    and the result says so (``note``), since that path is slower."""
    cmd = batched_bench_cmd(bin_dir, gguf, workers, context, threads, tg)
    note = ""
    try:
        output = _run(cmd)
    except ToolFailed as crash:
        if crash.code not in _CRASHES:
            raise
        cmd, note = cmd + ["--no-repack"], f"the default run crashed (exit {crash.code}); timed with --no-repack"
        output = _run(cmd)
    ms = parse_batched_bench(output)
    missing = [n for n in workers if n not in ms]
    if missing:
        raise InvalidRequestError(f"llama-batched-bench printed no row for N = {missing}")
    return {"cmd": " ".join(cmd), "ms": {n: ms[n] for n in workers}, "note": note}


def requantize(bin_dir: Path, source: Path, dest: Path, llama_type: str, threads: int) -> Path:
    """``dest``, ``source`` re-encoded as ``llama_type`` (made once; kept for the next call)."""
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(binary(bin_dir, "llama-quantize")), "--allow-requantize"]
    if llama_type != "BF16":
        cmd.append("--pure")
    partial = dest.with_suffix(".partial")
    _run(cmd + [str(source), str(partial), llama_type, str(threads)])
    partial.replace(dest)
    return dest


_FLOAT = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"


def parse_kl(output: str) -> dict[str, float]:
    """Mean KL divergence, perplexity and top-1 agreement from llama-perplexity's KL report."""
    found = {}
    for key, pattern in (("mean_kl", rf"Mean\s+KLD:\s+{_FLOAT}"), ("perplexity", rf"Mean PPL\(Q\)\s+:\s+{_FLOAT}"),
                         ("same_top1", rf"Same top p:\s+{_FLOAT}\s*±")):
        m = re.search(pattern, output)
        if m:
            found[key] = float(m.group(1))
    if "mean_kl" not in found:
        raise InvalidRequestError("llama-perplexity printed no 'Mean    KLD' line")
    if "same_top1" in found:
        found["same_top1"] /= 100.0  # printed in percent
    return found


def kl_divergence(bin_dir: Path, reference: Path, gguf: Path, text: Path, ctx: int, chunks: int,
                  threads: int, work: Path) -> dict:
    """llama.cpp's KL(reference || gguf) on ``chunks`` windows of ``ctx`` tokens of ``text``."""
    perplexity = str(binary(bin_dir, "llama-perplexity"))
    base = work / f"{reference.stem}-c{ctx}-n{chunks}.kld"
    # --no-repack: with its repacked (AMX int8) weights, this build crashed on every quantized
    # file in llama-perplexity on this machine; the repacking changes speed, not what is computed
    common = ["-f", str(text), "-c", str(ctx), "--chunks", str(chunks), "-t", str(threads), "-b", str(ctx),
              "--no-repack"]
    if not base.is_file():
        _run([perplexity, "-m", str(reference), *common, "--kl-divergence-base", str(base)])
    cmd = [perplexity, "-m", str(gguf), *common, "--kl-divergence-base", str(base), "--kl-divergence"]
    return {"cmd": " ".join(cmd), **parse_kl(_run(cmd))}
