"""Next-token choice for all workers at once: greedy, or temperature + top-p with a seed."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import kernels
from ..errors import InvalidRequestError


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise InvalidRequestError(f"temperature must be >= 0 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            raise InvalidRequestError(f"top_p must be in (0, 1] (got {self.top_p})")


def greedy_ids(logits: torch.Tensor) -> list[int]:
    """Each row's most likely token (the first of ties, as ``argmax``; a row with a NaN picks
    its first NaN, as torch does). fp32 logits on the CPU go through the native kernel
    (:func:`hogwild.kernels.argmax_rows`): torch's reduction runs row by row on one thread,
    0.35-0.45 ms for the 16 x 49k logits of a 16-worker SmolLM2 pass (about 2 % of it), the
    kernel about 0.07 ms. Elsewhere ``max`` (on the CPU 0.19 ms against ``argmax``'s 0.62 ms
    there): the same indices."""
    if (logits.device.type == "cpu" and logits.dtype == torch.float32 and logits.dim() == 2 and logits.shape[-1] > 0
            and kernels.available()):
        return kernels.argmax_rows(logits)
    return logits.max(-1).indices.tolist()


class Sampler:
    """One random stream per worker, so a worker's samples do not depend on how many others run."""

    def __init__(self, settings: Sampling, num_workers: int, device: torch.device):
        self.settings = settings
        self.generators = []
        if settings.temperature > 0:
            base = settings.seed if settings.seed is not None else int(torch.seed() % (2**31))
            for w in range(num_workers):
                g = torch.Generator(device=device)
                g.manual_seed(base * 1009 + w)
                self.generators.append(g)

    def sample(self, logits: torch.Tensor, workers: list[int], greedy: list[int] | None = None) -> list[int]:
        """``logits`` [rows, vocab] fp32, one row per entry of ``workers``. ``greedy``: the
        rows' argmax when the caller has it already (one device read per model call)."""
        if self.settings.temperature == 0:
            return list(greedy) if greedy is not None else greedy_ids(logits)
        probs = torch.softmax(logits / self.settings.temperature, dim=-1)
        if self.settings.top_p < 1:
            probs = top_p_probs(probs, self.settings.top_p)
        return [draw(row, self.generators[w]) for row, w in zip(probs, workers)]


def draw(p: torch.Tensor, generator: torch.Generator) -> int:
    """One token from the weights ``p`` [vocab] (non-negative, zeros never drawn): the first
    whose cumulative weight exceeds one uniform draw from ``generator`` times the total
    (inverse CDF). ``torch.multinomial`` draws an exponential for every token instead: 3 ms a
    row of Qwen2.5's 152k tokens against 0.25, a sixth of an evaluation's time."""
    c = p.cumsum(0)
    u = torch.rand(1, generator=generator, device=p.device) * c[-1]
    i = int(torch.searchsorted(c, u, right=True))
    if i >= p.numel():  # the product rounded up to the total: the last token with weight
        i = int((p > 0).nonzero()[-1])
    return i


#: Tokens :func:`top_p_probs` looks at first; the nucleus of a sampled step is nearly always
#: far smaller.
TOP_P_FIRST = 1024


def top_p_probs(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """``probs`` [rows, vocab] with every token outside each row's nucleus set to 0: the
    highest-probability tokens whose sum before them is under ``top_p`` (the top token always
    stays). The nucleus comes from the largest :data:`TOP_P_FIRST` probabilities
    (``topk``), and from a sort of the whole row only where those do not reach ``top_p``:
    sorting 152k probabilities per row took 2 ms of each sampled step of Qwen2.5, about a
    sixth of an evaluation's time. The same tokens kept as the whole sort keeps (the same
    values in the same order, summed the same way), short of ties at the nucleus' edge."""
    k = min(TOP_P_FIRST, probs.shape[-1])
    top, order = probs.topk(k, dim=-1)
    keep = top.cumsum(-1) - top < top_p
    if k < probs.shape[-1] and bool(keep[:, -1].any()):  # a row's nucleus may go on past k
        top, order = probs.sort(-1, descending=True)
        keep = top.cumsum(-1) - top < top_p
    return torch.zeros_like(probs).scatter_(-1, order, top * keep)
