"""What one run contributes to a pass: its rows, their query groups, and who reads logits.

Made by :meth:`hogwild.core.engine.Run._schedule`, carried through the batch's model call
(:meth:`hogwild.core.batch.Batch.step` splits it into the run's own rows and its branches'),
and consumed by :meth:`hogwild.core.engine.Run._complete`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .attention import QueryGroup
from .branch import Branch
from .worker import WorkerState


@dataclass
class PassBatch:
    """What one pass feeds: token ids (rows), their query groups, and who reads logits."""

    ids: list[int]
    groups: list[QueryGroup]
    readers: list[WorkerState]  # workers that get a token this pass, in worker order
    logit_rows: list[int]  # per reader, then per branch: the row whose logits it reads
    active: list[WorkerState]  # workers whose pending tokens are fed
    main: bool = True  # False: the run has stopped and only its branches (and leftovers) run
    branches: list[Branch] = field(default_factory=list)  # branches reading a row this pass
    split: tuple[int, int, int] = (0, 0, 0)  # (ids, groups, logit rows) of the run's own part
