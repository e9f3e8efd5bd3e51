"""Layouts: small declarative functions from the run's state to every worker's view.

A view is the ordered list of block ids a worker attends to (docs/architecture.md, "Layouts").
A layout never touches tensors; the engine turns views into attention plans. A layout is one
object: its name, its view function, whether work is cut into steps, and the constant blocks
it places in views. :data:`LAYOUTS` is the one registry that strategies and the CLI read.
To add a layout, write a function ``(state, worker) -> list[int]``, wrap it in
:class:`Layout` and :func:`register` it; the protocol's texts hold one paragraph per layout
name describing the view to the workers (a layout without one gets a generic description).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import InvalidRequestError

#: Names of the constant blocks the built-in layouts place in views (the protocol supplies
#: their texts; a Script carries their ids under these names).
OTHERS_HEADER = "others_header"
OWN_HEADER = "own_header"
UNFINISHED = "unfinished"


@dataclass(frozen=True)
class LayoutState:
    """What a layout may look at: block ids only."""

    prompt: int
    history: Sequence[int]  # finished steps, in completion order (usually one merged block)
    current: Sequence[int]  # per worker: the block it is writing now
    constants: dict[str, int]
    done: Sequence[bool] = ()  # per worker: finished (end of sequence); empty = none finished

    @property
    def num_workers(self) -> int:
        return len(self.current)

    def others(self, worker: int) -> list[int]:
        return [o for o in range(self.num_workers) if o != worker]

    def is_done(self, worker: int) -> bool:
        return bool(self.done) and self.done[worker]


@dataclass(frozen=True)
class Layout:
    """``steps``: whether workers' text is cut into steps that move into shared history."""

    name: str
    build: Callable[[LayoutState, int], list[int]]
    steps: bool
    constants: tuple[str, ...] = ()
    description: str = ""
    collaborative: bool = True  # workers see each other (False: the independent baseline)

    def views(self, state: LayoutState) -> list[list[int]]:
        return [self.build(state, w) for w in range(state.num_workers)]


def _contiguous(s: LayoutState, w: int) -> list[int]:
    view = [s.prompt]
    for o in s.others(w):
        view += [s.current[o]] if s.is_done(o) else [s.current[o], s.constants[UNFINISHED]]
    return view + [s.current[w]]


def _interleaved(s: LayoutState, w: int) -> list[int]:
    return [s.prompt, *s.history, s.current[w]]


def _combined(s: LayoutState, w: int) -> list[int]:
    view = [s.prompt, *s.history]
    # a finished worker's last step is already in history; with no one else, no section
    # (built with comprehensions: every pass builds every worker's view)
    done, current, unfinished = s.done, s.current, s.constants[UNFINISHED]
    others = [o for o in range(len(current)) if o != w and not (done and done[o])]
    if others:
        view.append(s.constants[OTHERS_HEADER])
        view += [b for o in others for b in (current[o], unfinished)]
    return view + [s.constants[OWN_HEADER], current[w]]


def _independent(s: LayoutState, w: int) -> list[int]:
    return [s.prompt, s.current[w]]


CONTIGUOUS = Layout(
    "contiguous", _contiguous, steps=False, constants=(UNFINISHED,),
    description="each worker writes one block; sees every other worker's whole block",
)
INTERLEAVED = Layout(
    "interleaved", _interleaved, steps=True,
    description="finished steps join a shared history; others' unfinished steps are invisible",
)
COMBINED = Layout(
    "combined", _combined, steps=True, constants=(OTHERS_HEADER, UNFINISHED, OWN_HEADER),
    description="shared history plus everyone's work in progress (the default)",
)
INDEPENDENT = Layout(
    "independent", _independent, steps=False,
    description="no cross-visibility: N separate answers decoded in the same passes (baseline)",
    collaborative=False,
)

LAYOUTS: dict[str, Layout] = {l.name: l for l in (COMBINED, INTERLEAVED, CONTIGUOUS, INDEPENDENT)}


def register(layout: Layout) -> Layout:
    """Add a layout to :data:`LAYOUTS` (so strategies and the CLI offer it by name)."""
    if layout.name in LAYOUTS and LAYOUTS[layout.name] is not layout:
        raise InvalidRequestError(f"a different layout is already registered as {layout.name!r}")
    LAYOUTS[layout.name] = layout
    return layout


def collaborative_layouts() -> list[str]:
    """Names of the registered layouts in which workers see each other."""
    return [name for name, layout in LAYOUTS.items() if layout.collaborative]


def get_layout(layout: str | Layout) -> Layout:
    if isinstance(layout, Layout):
        return layout
    try:
        return LAYOUTS[layout]
    except KeyError:
        raise InvalidRequestError(
            f"unknown layout {layout!r}; choose one of: {', '.join(LAYOUTS)}"
        ) from None
