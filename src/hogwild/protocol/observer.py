"""The protocol's view of finished steps: which header opens a worker's next step.

The engine hands every finished step to the Script's ``step_observer`` (one per run; see
:class:`hogwild.core.script.Script`). Two rules of the protocol need it: a worker whose step
repeats an earlier one is redirected (:mod:`.loops`), and in the verified pattern the
checker's next step checks the last result a solver boxed.
"""

from __future__ import annotations

from typing import Any

from ..answers import extract_boxed
from .loops import RepeatTracker


def step_observer(protocol: Any, encode: Any) -> Any:
    """The Script's ``step_observer`` factory for ``protocol`` (a
    :class:`hogwild.protocol.team.Protocol`), or None when no rule needs the steps."""
    if not protocol.redirect_loops and protocol.checker is None:
        return None

    def make() -> Any:
        tracker = RepeatTracker()
        unchecked: list[int] = []  # solvers with a boxed result since the checker's last step

        def observe(worker: int, next_step: int, text: str) -> list[int] | None:
            repeat = tracker.add(worker, text)
            checker = protocol.checker
            if checker is not None and worker != checker and extract_boxed(text) is not None:
                unchecked.append(worker)
            if protocol.redirect_loops and repeat is not None:
                return encode(protocol.redirect_header(worker, next_step, repeat))
            if worker == checker and unchecked:
                solver = unchecked[-1]
                unchecked.clear()
                return encode(protocol.check_header(next_step, solver))
            return None

        return observe

    return make
