"""The plain chain of thought: the baseline every collaborative strategy is measured against.

One model (or N independent samples of it) answers with the chat template and the usual
short instruction; no worker names, no step headers, no constant blocks. It exposes the same
two calls as :class:`~hogwild.protocol.team.Protocol` (``script`` and
``forced_answer_text``), so the driver treats both alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..core.script import Script
from .chat import encoder, prefix_ends, render_chat, stop_ids, with_bos
from .texts import FORCED_ANSWER_LEAD, PLAIN_FORCED_TEXT, PLAIN_SYSTEM, USER_TEXT, fill


@dataclass
class PlainProtocol:
    """``num_workers`` plain chains of thought on one prompt (independent samples)."""

    num_workers: int = 1

    def for_problem(self, problem: str) -> PlainProtocol:
        """Itself: plain workers have no names a problem could share."""
        return self

    def script(self, problem: str, tokenizer: Any, context_length: int | None = None) -> Script:
        """The plain prompt as ids; the engine refuses it if it does not fit the context."""
        user = fill(USER_TEXT, problem=problem.strip())
        text = render_chat(tokenizer, PLAIN_SYSTEM, user)
        encode = encoder(tokenizer)
        ids = with_bos(tokenizer, encode(text))
        suffix = encode(self.forced_suffix_text())
        return Script(prompt_ids=ids, opening_ids=[[] for _ in range(self.num_workers)],
                      stop_ids=stop_ids(tokenizer), shared_prefix=prefix_ends(tokenizer, text, ids, user),
                      forced_suffix=lambda ends_newline: suffix)

    @staticmethod
    def forced_suffix_text() -> str:
        """What follows a worker's (right-stripped) text in its forced answer."""
        return "\n\n" + PLAIN_FORCED_TEXT + "\n\n" + FORCED_ANSWER_LEAD

    def forced_answer_text(self, prompt_text: str, history: Sequence[tuple[int, str]],
                           unfinished: Sequence[tuple[int, str]]) -> str:
        """Transcript + "Time is up ... The final answer is \\boxed{"."""
        body = "".join(t for _, t in [*history, *unfinished])
        return prompt_text + body.rstrip() + self.forced_suffix_text()
