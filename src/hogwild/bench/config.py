"""What one benchmark run depends on: :class:`BenchConfig`, checked before anything is timed.

The settings are stored verbatim in the JSON (``settings``), so a result file says how it was
made. Kept apart from the measuring code so that every other module of the bench can read it
without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.batch import MIN_PREFIX
from ..core.cache import check_kv
from ..errors import InvalidRequestError
from ..models.loading import parse_dtype
from ..models.shapes import SHAPES

#: marks a JSON file written by ``hogwild bench``, and the version of its layout
FORMAT = "hogwild-bench"
VERSION = 2  # 2: the runs axis (``runs``, ``rows_per_pass``, shared prefix)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def bench_dtype(name: str) -> torch.dtype:
    """A dtype given on the command line (surrounding spaces allowed)."""
    return parse_dtype(name.strip())


def bench_weights(name: str) -> tuple[str, torch.dtype]:
    """One entry of ``--weights`` (``--dtypes`` is its old name): the label its rows carry
    and the dtype activations and the transformers baseline use.

    Float entries keep their dtype names (``float32``, ``bfloat16``: result files stay
    comparable); a quantized one (``native``, ``q4_k``, ...) is labelled by its name and
    computes in fp32 (the transformers baseline reads the same file's fp32 weights)."""
    from ..quant.plan import FLOAT_WEIGHTS, parse_weights

    setting = parse_weights(name.strip())
    if setting in FLOAT_WEIGHTS:
        return dtype_name(FLOAT_WEIGHTS[setting]), FLOAT_WEIGHTS[setting]
    if setting == "auto":
        raise InvalidRequestError("--weights: name each format (auto is not a bench setting)")
    return setting, torch.float32


def log(console: Any, text: str) -> None:
    """A progress line (dim) on ``console``; nothing without one (library use, tests)."""
    if console is not None:
        console.print(text, style="dim", highlight=False)


@dataclass
class BenchConfig:
    """Everything one benchmark run depends on (stored in the JSON as ``settings``)."""

    model: str = "smollm2-135m"
    random_weights: bool = False
    shape: str | None = None  # a key of SHAPES; with random_weights
    workers: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    runs: list[int] = field(default_factory=lambda: [1])  # R independent runs in one batch
    shared_prefix: int = 0  # leading prompt tokens every run shares (declared shared_prefix)
    unique_suffix: int = 0  # instead: every run shares all but its last T prompt tokens
    attention: str = "auto"  # the engine's attention path (auto, torch, triton)
    kv: str = "auto"  # how our engine's KV cache keeps keys and values (hogwild.core.cache.KV_MODES)
    graphs: bool = True  # CUDA graphs for decode passes (on a CUDA device)
    contexts: list[int] = field(default_factory=lambda: [256, 1024, 4096])
    #: the weight settings timed, one group each (``--weights``; ``--dtypes`` is its old name):
    #: float dtypes or quantized formats (``native``, ``q8_0``, ``q4_k``, ``mxfp4``, ``nvfp4``)
    dtypes: list[str] = field(default_factory=lambda: ["float32", "bfloat16"])
    passes: int = 8  # timed passes per variant per round
    rounds: int = 3  # round-robin repeats
    warmup: int = 3  # untimed passes per variant before the first round
    threads: int = 2
    device: str = "cpu"
    transformers: bool = True  # time the transformers baseline
    transformers_max_rows: int = 0  # ... only for R x N up to this (0: any)
    transformers_max_context: int = 0  # ... only for contexts up to this (0: any)
    bandwidth_mb: int = 512  # size of the tensor copied to measure memory bandwidth
    matmul_size: int = 2048  # n of the n x n x n matmul that measures the compute rate
    profile: bool = True  # profile a few passes of one engine variant
    profile_workers: int = 4
    profile_runs: int = 1
    profile_context: int = 1024
    seed: int = 0
    #: a folder with llama-batched-bench: llama.cpp timed on the model's GGUF in the same run
    llama_cpp: str | None = None
    llama_tg: int = 32  # tokens llama.cpp generates per sequence

    def validate(self) -> None:
        if not self.workers or min(self.workers) < 1:
            raise InvalidRequestError("--workers: give worker counts >= 1, e.g. 1,2,4,8")
        if not self.runs or min(self.runs) < 1:
            raise InvalidRequestError("--runs: give run counts >= 1, e.g. 1,8")
        if not self.contexts or min(self.contexts) < 2:
            raise InvalidRequestError("--contexts: give context lengths >= 2 tokens, e.g. 256,1024,4096")
        if self.shared_prefix and not MIN_PREFIX <= self.shared_prefix < min(self.contexts):
            raise InvalidRequestError(
                f"--shared-prefix: 0, or from {MIN_PREFIX} tokens (shorter prefixes are not shared) "
                f"to one less than the shortest context ({min(self.contexts)}); got {self.shared_prefix}"
            )
        if self.unique_suffix and self.shared_prefix:
            raise InvalidRequestError("--shared-prefix and --unique-suffix exclude each other")
        if self.unique_suffix and not 1 <= self.unique_suffix <= min(self.contexts) - MIN_PREFIX:
            raise InvalidRequestError(
                f"--unique-suffix: from 1 to the shortest context less {MIN_PREFIX} "
                f"({min(self.contexts) - MIN_PREFIX}); got {self.unique_suffix}")
        check_kv(self.kv)
        if self.attention not in ("auto", "torch", "triton"):
            raise InvalidRequestError(f"--attention: auto, torch or triton (got {self.attention!r})")
        if self.passes < 1 or self.rounds < 1 or self.warmup < 0:
            raise InvalidRequestError("--passes and --rounds must be >= 1, --warmup >= 0")
        if self.threads < 1:
            raise InvalidRequestError(f"--threads must be at least 1 (got {self.threads})")
        for d in self.dtypes:
            label, _ = bench_weights(d)
            if label not in ("float32", "bfloat16", "float16") and (self.random_weights or self.device != "cpu"):
                raise InvalidRequestError(f"--weights {label}: quantized weights need a real model on the CPU")
        if self.random_weights and (self.shape or self.model) not in SHAPES:
            raise InvalidRequestError(
                f"--config {self.shape!r}: unknown shape; choose one of {', '.join(SHAPES)}"
            )
        if self.llama_cpp is not None and (self.random_weights or self.device != "cpu"):
            raise InvalidRequestError("--llama-cpp: llama.cpp is timed on the CPU on a real model's GGUF")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise InvalidRequestError("--device cuda: no CUDA device is available on this machine")

    def shared_for(self, context: int) -> int:
        """The shared prompt prefix of runs at this context."""
        return context - self.unique_suffix if self.unique_suffix else self.shared_prefix
