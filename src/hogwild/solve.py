"""The high-level API: one problem in, a stream of events and a final result out.

problem -> protocol (text, ids) -> driver (engine passes, stop rule, forced answer) ->
events -> :class:`SolveResult`. Used by the CLI and the server; it does no I/O itself.
:func:`start_solve` submits a problem and returns a :class:`Solving` at once (events,
cancel, result), for callers that run many problems through one scheduler;
:func:`solve_stream` and :func:`solve` are built on it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

from .answers import AnswerAgreement, extract_boxed
from .core.engine import Run
from .core.events import Event, RunStats, Snapshot
from .core.cache import check_kv
from .core.layouts import get_layout
from .core.sampling import Sampling
from .core.script import Script
from .driver import Driver, Handle, Scheduler, StopRule
from .errors import InvalidRequestError
from .models.loading import LoadedModel
from .protocol import DEFAULT_FEW_SHOT, DEFAULT_NO_REPEAT_NGRAM, Protocol


@dataclass
class SolveSettings:
    workers: int = 2
    layout: str = "combined"
    max_passes: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    check_in_every: int = 1024
    few_shot: bool | None = DEFAULT_FEW_SHOT  # off; None: on when the model's context allows
    redirect_loops: bool = True  # a worker whose step repeats an earlier one is redirected
    no_repeat_ngram: int = DEFAULT_NO_REPEAT_NGRAM  # no worker writes an n-gram already in a step
    stop: str = "first"  # "first" boxed answer, "agree" (k workers agree), or "none"
    agree_k: int = 2
    forced_answer: bool = True
    forced_tokens: int = 48
    names: Sequence[str] | None = None
    kv: str = "auto"  # how the KV cache keeps keys and values (hogwild.core.cache.KV_MODES)

    def validate(self) -> None:
        if self.workers < 1:
            raise InvalidRequestError(f"need at least one worker (got {self.workers})")
        if self.max_passes < 1:
            raise InvalidRequestError(f"max_passes must be >= 1 (got {self.max_passes})")
        if self.stop not in ("first", "agree", "none"):
            raise InvalidRequestError(f"stop must be first, agree or none (got {self.stop!r})")
        get_layout(self.layout)
        check_kv(self.kv)

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


def make_protocol(settings: SolveSettings, problem: str | None = None) -> Protocol:
    """The protocol of ``settings``; for ``problem`` (:meth:`Protocol.for_problem`: default
    names avoid the names the problem mentions) when it is given."""
    protocol = Protocol(
        num_workers=settings.workers,
        names=list(settings.names) if settings.names else None,
        check_in_every=settings.check_in_every,
        few_shot=settings.few_shot,
        layout=settings.layout,
        redirect_loops=settings.redirect_loops,
        no_repeat_ngram=settings.no_repeat_ngram,
    )
    return protocol if problem is None else protocol.for_problem(problem)


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


class EitherStop:
    """Stops when either of two stop rules says so (both see every observation)."""

    def __init__(self, first: StopRule, second: StopRule):
        self.first, self.second = first, second

    def observe(self, worker: int, text: str) -> None:
        self.first.observe(worker, text)
        self.second.observe(worker, text)

    def done(self, stats: RunStats) -> bool:
        return self.first.done(stats) or self.second.done(stats)


class Solving:
    """A submitted problem: follow its events, cancel it, read its :class:`SolveResult`.

    Made by :func:`start_solve`; :func:`solve_stream` is its events followed by its result.
    """

    def __init__(self, loaded: LoadedModel, problem: str, settings: SolveSettings, protocol: Protocol,
                 script: Script, stop: AgreementStop, handle: Handle):
        self.loaded, self.problem, self.settings, self.protocol = loaded, problem, settings, protocol
        self.script, self.stop, self.handle = script, stop, handle

    @property
    def run(self) -> Run:
        return self.handle.drive.run

    def events(self) -> Iterator[Event]:
        """The run's events as they happen; ends when the run and its forced answer are done."""
        return self.handle.events()

    def cancel(self) -> bool:
        """Stop the run (its blocks are freed by the next pass); False if it had already ended."""
        try:
            self.handle.cancel()
        except InvalidRequestError:
            return False
        return True

    def result(self) -> SolveResult:
        """Wait for the run to end; its result (InvalidRequestError if it was cancelled)."""
        outcome = self.handle.result()
        settings, stop = self.settings, self.stop
        snap = outcome.final
        answer = stop.answer or last_answer(snap)
        forced_answer = outcome.forced_at(snap) if answer is None else None
        if forced_answer is not None:
            answer = forced_answer.answer
        t = outcome.timings
        return SolveResult(
            problem=self.problem,
            model=self.loaded.name,
            settings=asdict(settings),
            names=list(self.protocol.worker_names),
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


def start_solve(
    loaded: LoadedModel, problem: str, settings: SolveSettings | None = None,
    snapshot_at: Sequence[int] = (), scheduler: Scheduler | None = None,
    also_stop: StopRule | None = None, keep_views: bool = True,
) -> Solving:
    """Submit ``problem`` to ``scheduler`` (default: the model's shared one) and return at
    once. ``also_stop``: a second stop rule besides the answer rule (e.g. a server's stop
    strings)."""
    settings = settings or SolveSettings()
    settings.validate()
    protocol = make_protocol(settings, problem)
    script = protocol.script(problem, loaded.tokenizer, loaded.context_length)
    driver = Driver(loaded, settings.layout, settings.sampling, settings.forced_tokens, scheduler=scheduler,
                    kv=settings.kv)
    stop = AgreementStop(settings)

    def forced(snap: Snapshot) -> list[int | None]:
        unanswered = stop.answer is None and last_answer(snap) is None
        return [None] if settings.forced_answer and unanswered else []

    rule: StopRule = stop if also_stop is None else EitherStop(stop, also_stop)
    handle = driver.submit(script, settings.max_passes, rule, snapshot_at=snapshot_at, forced=forced,
                           keep_views=keep_views)
    return Solving(loaded, problem, settings, protocol, script, stop, handle)


def solve_stream(
    loaded: LoadedModel, problem: str, settings: SolveSettings | None = None,
    snapshot_at: Sequence[int] = (),
) -> Iterator[Event | ResultEvent]:
    """Run the workers on ``problem``; yield engine events, then one :class:`ResultEvent`."""
    solving = start_solve(loaded, problem, settings, snapshot_at)
    yield from solving.events()
    yield ResultEvent(solving.result())


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
