"""Whole decode passes of one engine on two kernel builds, interleaved: this checkout's against
another revision's.

On a shared machine two ``hogwild bench`` runs of the same code differ by more than most
kernel changes (10-30 % between runs minutes apart). Here one engine (a bench variant: R runs
of N workers, prompts of C tokens, the combined layout) steps on the "before" library
(``--base``'s ``hogwild_cpu.c`` and ``hogwild_quant.c``, compiled into a temporary directory
with the flags of :mod:`hogwild.kernels.build`) and on this checkout's in turn, ``--passes``
passes each, ``--rounds`` times: both see the same load, the same model, the same growing
steps. With ``--restart`` every round starts each build on a fresh engine instead (3 passes
of warm-up, then ``--passes`` timed, the builds' order alternating), so the passes stay a
few tokens into the steps, where ``hogwild bench`` times them (``--passes 15``: its 3 rounds
of 5). A function the base library lacks is taken from this checkout's (an added kernel then
counts on both sides). Prints best and median ms per pass of each and their ratios.

Usage::

    python bench/pass_ab.py --base 543692a                      # SmolLM2, 1 run x 16 workers
    python bench/pass_ab.py --base 543692a --model qwen2.5-coder-0.5b --runs 8 --workers 2
    python bench/pass_ab.py --base 543692a --restart --rounds 12 --passes 15
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
try:
    from hogwild.kernels import build
except ImportError:  # not installed: run from a checkout
    sys.path.insert(0, str(ROOT / "src"))
    from hogwild.kernels import build
from hogwild.bench.config import BenchConfig  # noqa: E402
from hogwild.bench.variants import OursVariant, load_models, run_prompts  # noqa: E402


class Fallback:
    """The base library, with the functions it lacks taken from this checkout's."""

    def __init__(self, base: ctypes.CDLL, current: ctypes.CDLL):
        self._base, self._current = base, current

    def __getattr__(self, name: str):
        try:
            return getattr(self._base, name)
        except AttributeError:
            return getattr(self._current, name)


def base_library(rev: str, out_dir: Path, current: ctypes.CDLL) -> Fallback:
    compiler = build._compiler()
    if compiler is None:
        raise SystemExit("no C compiler (set CC)")
    objs = []
    for src in build.SOURCES:
        rel = src.relative_to(ROOT).as_posix()
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{rel}"], capture_output=True, text=True)
        if text.returncode != 0:
            continue  # a source the base revision did not have yet
        path = out_dir / src.name
        path.write_text(text.stdout)
        obj = out_dir / f"{src.stem}.o"
        subprocess.run([compiler, *[f for f in build.FLAGS if f != "-shared"], "-c", str(path), "-o", str(obj)],
                       check=True)
        objs.append(str(obj))
    so = out_dir / "base.so"
    subprocess.run([compiler, *build.FLAGS, *objs, "-lm", "-o", str(so)], check=True)
    lib = ctypes.CDLL(str(so))
    build._bind(lib, {k: v for k, v in build._signatures.items() if hasattr(lib, k)})
    return Fallback(lib, current)


def team_arguments(ap: argparse.ArgumentParser, rounds: int, passes: int) -> None:
    """The options of a whole-pass comparison: which team of which model, and how long."""
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--weights", default="bf16")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--passes", type=int, default=passes, help="timed passes per setting per round")


def team_config(args: argparse.Namespace) -> BenchConfig:
    return BenchConfig(model=args.model, workers=[args.workers], runs=[args.runs], contexts=[args.context],
                       transformers=False, threads=args.threads)


def fresh_engine(models, args: argparse.Namespace, prompts) -> OursVariant:
    """A bench variant of ``args``' team on ``models``, set up and 3 passes in (where ``hogwild
    bench`` starts timing)."""
    v = OursVariant(models, args.workers, args.context, prompts, torch.device("cpu"), shared_prefix=0)
    v.setup()
    for _ in range(3):
        v.step()
    return v


def save_comparison(args: argparse.Namespace, name: str, result: dict, ratio_best: float, ratio_median: float,
                    load: float, **meta_extra) -> Path:
    """``args.out``/``name``: the settings (``args`` but ``out`` and ``plot``, the load average
    before and after, ``meta_extra``), each side's passes and the two ratios."""
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("out", "plot")}
    meta.update(meta_extra, load_average=[load, os.getloadavg()[0]])
    path = args.out / name
    path.write_text(json.dumps({"meta": meta, "results": result, "ratio_best": ratio_best,
                                "ratio_median": ratio_median}, indent=1))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="HEAD", help="git revision of the before kernels")
    team_arguments(ap, rounds=10, passes=5)
    ap.add_argument("--restart", action="store_true",
                    help="a fresh engine per build and round: passes as early in the steps as the bench's")
    ap.add_argument("--out", type=Path, help="folder to write pass_ab.json into")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    current = build.library()
    if current is None:
        raise SystemExit(f"native kernels unavailable: {build.status()}")
    cfg = team_config(args)
    with tempfile.TemporaryDirectory() as tmp:
        libs = {"before": base_library(args.base, Path(tmp), current), "after": current}
        models = load_models(cfg, torch.bfloat16, torch.device("cpu"), weights=args.weights)
        prompts = run_prompts(models.config.vocab_size, args.context, args.runs, 0, 1)
        variant = None if args.restart else fresh_engine(models, args, prompts)
        stack = getattr(models.ours, "stack", None)  # the NativeDecoder, which holds its library
        times: dict[str, list[float]] = {name: [] for name in libs}
        load = os.getloadavg()[0]
        try:
            for r in range(args.rounds):
                order = list(libs.items())
                for name, lib in order if not args.restart or r % 2 == 0 else order[::-1]:
                    build._lib = lib
                    if stack is not None and hasattr(stack, "lib"):
                        stack.lib = lib
                    if args.restart:
                        if variant is not None:
                            variant.close()
                        variant = fresh_engine(models, args, prompts)
                    else:
                        variant.step()  # the switch's first pass is not timed
                    for _ in range(args.passes):
                        start = time.perf_counter()
                        variant.step()
                        times[name].append(time.perf_counter() - start)
        finally:
            build._lib = current
            if stack is not None and hasattr(stack, "lib"):
                stack.lib = current
    result = {name: dict(best_ms=min(t) * 1e3, median_ms=statistics.median(t) * 1e3, passes=len(t))
              for name, t in times.items()}
    for name, r in result.items():
        print(f"{name:>6}: best {r['best_ms']:.2f} ms  median {r['median_ms']:.2f} ms  ({r['passes']} passes)")
    ratio_best = result["before"]["best_ms"] / result["after"]["best_ms"]
    ratio_median = result["before"]["median_ms"] / result["after"]["median_ms"]
    print(f"{args.model} {args.runs} x {args.workers}, context {args.context}, {args.threads} threads, base "
          f"{args.base}: before / after {ratio_best:.3f} (best), {ratio_median:.3f} (median); load average {load:.2f}")
    if args.out:
        name = f"pass_ab-{args.model}-{args.runs}x{args.workers}{'-restart' if args.restart else ''}.json"
        print(f"wrote {save_comparison(args, name, result, ratio_best, ratio_median, load, flags=build.FLAGS)}")


if __name__ == "__main__":
    main()
