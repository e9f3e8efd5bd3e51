"""The few-shot examples of collaboration: when they are shown, and how they are rendered.

Two worked team transcripts (a shop bill, a remainder), written in :mod:`.texts` with
placeholders for the workers' names, rendered with the protocol's own step headers so they
look exactly like the steps the workers will write. They are off by default
(:data:`DEFAULT_FEW_SHOT`, and why); :class:`hogwild.protocol.Protocol` decides per prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .texts import (
    CHECK_IN, EXAMPLE_MOD_2, EXAMPLE_MOD_3, EXAMPLE_MOD_PROBLEM, EXAMPLE_SHOP_2, EXAMPLE_SHOP_3,
    EXAMPLE_SHOP_PROBLEM, FEW_SHOT_INTRO, fill,
)

#: few_shot=None (auto) uses the examples only when the model's context is at least this
#: long and the prompt with examples takes at most half of it.
FEW_SHOT_MIN_CONTEXT = 4096

#: The default of :attr:`Protocol.few_shot` (and of every setting that feeds it): off. With
#: the examples, Qwen2.5-Coder-1.5B teams pasted the examples' results into their answers (12 %
#: of the answers in the 8-task screen, 0 % without) and looped more (steps repeating an
#: earlier step: 85 % vs 62 % in the screen; 25 % vs 12 % with no repeated 10-grams in the
#: probes), at equal accuracy (docs/results/collaboration/README.md).
DEFAULT_FEW_SHOT: bool | None = False


def few_shot_examples(names: Sequence[str], step_header: Callable[..., str]) -> str:
    """The examples for a team called ``names`` (two or more), each step opened by
    ``step_header(worker, step, check_in=...)``; three-worker versions from three workers on."""
    n = list(names[:3])
    three = len(names) >= 3
    examples = [
        (EXAMPLE_SHOP_PROBLEM, EXAMPLE_SHOP_3 if three else EXAMPLE_SHOP_2),
        (EXAMPLE_MOD_PROBLEM, EXAMPLE_MOD_3 if three else EXAMPLE_MOD_2),
    ]
    parts = [FEW_SHOT_INTRO]
    for index, (problem, steps) in enumerate(examples, 1):
        lines = [f"Example {index}. Problem: {problem}"]
        counts: dict[int, int] = {}
        for role, body in steps:
            counts[role] = counts.get(role, 0) + 1
            # A body starting with CHECK_IN shows a check-in exactly as workers see it.
            check_in = body.startswith(CHECK_IN)
            if check_in:
                body = body[len(CHECK_IN):]
            filled = fill(body, **{f"w{i}": name for i, name in enumerate(n)})
            header = step_header(role, counts[role], check_in=check_in)
            lines.append(f"{header}{filled}" if check_in else f"{header} {filled}")
        parts.append("\n\n".join(lines))
    return "\n\n".join(parts)
