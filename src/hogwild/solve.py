"""The high-level API: one problem in, a stream of events and a final result out.

problem -> protocol (text, ids) -> driver (engine passes, stop rule, forced answer) ->
events -> :class:`SolveResult`. Used by the CLI; it does no I/O itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

from .answers import AnswerAgreement, extract_boxed
from .core.events import Event, RunStats, Snapshot
from .core.layouts import get_layout
from .core.sampling import Sampling
from .driver import Driver
from .errors import InvalidRequestError
from .models.loading import LoadedModel
from .protocol import Protocol


@dataclass
class SolveSettings:
    workers: int = 2
    layout: str = "combined"
    max_passes: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    check_in_every: int = 1024
    few_shot: bool | None = None  # None: on when the model's context allows
    redirect_loops: bool = True  # a worker whose step repeats an earlier one is redirected
    stop: str = "first"  # "first" boxed answer, "agree" (k workers agree), or "none"
    agree_k: int = 2
    forced_answer: bool = True
    forced_tokens: int = 48
    names: Sequence[str] | None = None

    def validate(self) -> None:
        if self.workers < 1:
            raise InvalidRequestError(f"need at least one worker (got {self.workers})")
        if self.max_passes < 1:
            raise InvalidRequestError(f"max_passes must be >= 1 (got {self.max_passes})")
        if self.stop not in ("first", "agree", "none"):
            raise InvalidRequestError(f"stop must be first, agree or none (got {self.stop!r})")
        get_layout(self.layout)

    @property
    def sampling(self) -> Sampling:
        return Sampling(self.temperature, self.top_p, self.seed)


@dataclass
class SolveResult:
    problem: str
    model: str
    settings: dict
    names: list[str]
    answer: str | None
    forced: bool
    passes: int
    stop_reason: str
    workers: list[str]  # each worker's whole text
    history: list[tuple[int, str]]  # finished steps (worker, text) in completion order
    forced_text: str | None = None
    generated_tokens: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    unfinished: list[tuple[int, str]] = field(default_factory=list)  # (worker, unfinished step)
    views: list[str] = field(default_factory=list)  # what each worker saw at the end, decoded
    prompt: str = ""  # the shared prompt as the workers read it (for the copy guard)
    history_tokens: list[int] = field(default_factory=list)  # tokens of each finished step
    unfinished_tokens: list[int] = field(default_factory=list)  # tokens of each unfinished step

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ResultEvent:
    """The last event of :func:`solve_stream`."""

    result: SolveResult


def make_protocol(settings: SolveSettings) -> Protocol:
    return Protocol(
        num_workers=settings.workers,
        names=list(settings.names) if settings.names else None,
        check_in_every=settings.check_in_every,
        few_shot=settings.few_shot,
        layout=settings.layout,
        redirect_loops=settings.redirect_loops,
    )


class AgreementStop:
    """The stop rule of ``solve``: the first boxed answer, or ``k`` workers agreeing."""

    def __init__(self, settings: SolveSettings):
        mode = "agree" if settings.stop == "agree" else "first"
        self.agreement = AnswerAgreement(mode=mode, k=settings.agree_k)
        self.enabled = settings.stop != "none"

    @property
    def answer(self) -> str | None:
        return self.agreement.answer

    def observe(self, worker: int, text: str) -> None:
        if self.enabled:
            self.agreement.update(worker, text)

    def done(self, stats: RunStats) -> bool:
        return self.answer is not None


def solve_stream(
    loaded: LoadedModel, problem: str, settings: SolveSettings | None = None,
    snapshot_at: Sequence[int] = (),
) -> Iterator[Event | ResultEvent]:
    """Run the workers on ``problem``; yield engine events, then one :class:`ResultEvent`."""
    settings = settings or SolveSettings()
    settings.validate()
    protocol = make_protocol(settings)
    script = protocol.script(problem, loaded.tokenizer, loaded.context_length)
    driver = Driver(loaded, settings.layout, settings.sampling, settings.forced_tokens)
    stop = AgreementStop(settings)

    def forced(snap: Snapshot) -> list[int | None]:
        unanswered = stop.answer is None and last_answer(snap) is None
        return [None] if settings.forced_answer and unanswered else []

    handle = driver.submit(script, settings.max_passes, stop, snapshot_at=snapshot_at, forced=forced,
                           keep_views=True)
    yield from handle.events()
    outcome = handle.result()
    snap = outcome.final
    answer = stop.answer or last_answer(snap)
    forced_answer = outcome.forced_at(snap) if answer is None else None
    if forced_answer is not None:
        answer = forced_answer.answer
    t = outcome.timings
    yield ResultEvent(
        SolveResult(
            problem=problem,
            model=loaded.name,
            settings=asdict(settings),
            names=list(protocol.worker_names),
            answer=answer,
            forced=forced_answer is not None,
            passes=outcome.passes,
            stop_reason=outcome.stop_reason,
            workers=snap.workers,
            history=snap.history,
            forced_text=forced_answer.text if forced_answer is not None else None,
            generated_tokens=snap.generated_tokens,
            unfinished=snap.current,
            views=outcome.views,
            prompt=outcome.prompt_text,
            history_tokens=snap.history_tokens,
            unfinished_tokens=snap.current_tokens,
            timings={
                **t,
                "total_s": sum(t.values()),
                "passes_per_s": outcome.passes / t["decode_s"] if t["decode_s"] > 0 else 0.0,
            },
        )
    )


def solve(loaded: LoadedModel, problem: str, settings: SolveSettings | None = None) -> SolveResult:
    result = None
    for ev in solve_stream(loaded, problem, settings):
        if isinstance(ev, ResultEvent):
            result = ev.result
    assert result is not None
    return result


def last_answer(snapshot: Snapshot) -> str | None:
    """The answer the workers have given so far: the last boxed answer in completion order."""
    texts = [t for _, t in snapshot.history] + [t for _, t in snapshot.current]
    for text in reversed(texts):
        found = extract_boxed(text)
        if found is not None:
            return found
    return None
