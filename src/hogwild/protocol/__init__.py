"""The collaboration protocol: every text the workers read, and the rules about text.

* :mod:`.texts`: all wording (system prompts, few-shot examples, step headers, section
  headers, the "unfinished" marker, check-in question, openings, forced-answer lines, the
  plain chain-of-thought instruction, one view description per layout name).
* :mod:`.step_end`: when a worker's step is finished.
* :mod:`.loops`: whether a step repeats an earlier one (pure text functions).
* :mod:`.examples`: the few-shot examples (off by default, and why) rendered with a
  protocol's names and headers.
* :mod:`.chat`: chat-template glue (rendering, BOS, end-of-turn ids).
* :mod:`.team`: :class:`Protocol`, N named workers, rendered into a
  :class:`hogwild.core.script.Script`.
* :mod:`.plain`: :class:`PlainProtocol`, the plain chain-of-thought baseline.
"""

from .chat import render_chat, stop_ids
from .plain import PlainProtocol
from .step_end import LIST_STEP_CHARS, is_step_end
from .loops import RepeatTracker, loop_rate, step_body
from .examples import DEFAULT_FEW_SHOT, FEW_SHOT_MIN_CONTEXT
from .team import DEFAULT_NO_REPEAT_NGRAM, PATTERNS, Protocol
from .texts import (
    CHECK_IN_TEXT,
    DEFAULT_NAMES,
    FORCED_ANSWER_LEAD,
    OTHERS_HEADER_TEXT,
    OWN_HEADER_TEXT,
    UNFINISHED_TEXT,
)

__all__ = [
    "CHECK_IN_TEXT", "DEFAULT_FEW_SHOT", "DEFAULT_NAMES", "DEFAULT_NO_REPEAT_NGRAM", "FEW_SHOT_MIN_CONTEXT", "FORCED_ANSWER_LEAD",
    "LIST_STEP_CHARS", "OTHERS_HEADER_TEXT", "OWN_HEADER_TEXT", "PATTERNS", "PlainProtocol", "Protocol",
    "RepeatTracker", "UNFINISHED_TEXT", "is_step_end", "loop_rate", "render_chat", "step_body", "stop_ids",
]
