"""The high-level API: one problem in, a stream of events and a final result out.

problem -> protocol (text, ids) -> engine (passes) -> events -> this module's answer logic.
Used by the CLI, the server and the evaluation strategies; it does no I/O itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

from .answers import extract_boxed
from .engine import Engine, Run
from .errors import InvalidRequestError
from .events import Event, Snapshot, SnapshotEvent, StopEvent, TokenEvent
from .layouts import get_layout
from .models.loading import LoadedModel
from .protocol import AnswerAgreement, Protocol
from .sampling import Sampling
from .script import Script

FORCED_SUFFIX_OPEN = "\\boxed{"


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
    )


def solve_stream(
    loaded: LoadedModel, problem: str, settings: SolveSettings | None = None,
    snapshot_at: Sequence[int] = (),
) -> Iterator[Event | ResultEvent]:
    """Run the workers on ``problem``; yield engine events, then one :class:`ResultEvent`."""
    settings = settings or SolveSettings()
    settings.validate()
    protocol = make_protocol(settings)
    script = protocol.script(problem, loaded.tokenizer, loaded.context_length)
    decode = make_decoder(loaded)
    engine = Engine(loaded.model, settings.layout, settings.sampling, decode=decode)
    t0 = time.perf_counter()
    run = engine.start(script)
    t_prefill = time.perf_counter() - t0
    agreement = AnswerAgreement(mode="agree" if settings.stop == "agree" else "first", k=settings.agree_k)
    answer: str | None = None

    def stop_rule(run: Run, events: list[Event]) -> bool:
        nonlocal answer
        if settings.stop == "none":
            return False
        for ev in events:
            if isinstance(ev, TokenEvent) and "}" in ev.text:
                found = agreement.update(ev.worker, decode(run.workers[ev.worker].all_ids))
                if found is not None:
                    answer = found
                    return True
        return False

    stop_reason = "budget"
    for ev in run.run(settings.max_passes, stop=stop_rule, snapshot_at=snapshot_at):
        if isinstance(ev, StopEvent):
            stop_reason = ev.reason
        yield ev
    t_decode = time.perf_counter() - t0 - t_prefill
    snap = run.snapshot()
    views = [decode(run.view_token_ids(w)) for w in range(run.num_workers)]
    forced, forced_text = False, None
    if answer is None:
        answer = last_answer(snap)
    if answer is None and settings.forced_answer:
        forced_text, answer = forced_answer(loaded, protocol, script, snap, settings.forced_tokens)
        forced = True
    total = time.perf_counter() - t0
    yield ResultEvent(
        SolveResult(
            problem=problem,
            model=loaded.name,
            settings=asdict(settings),
            names=list(protocol.worker_names),
            answer=answer,
            forced=forced,
            passes=run.passes,
            stop_reason=stop_reason,
            workers=snap.workers,
            history=snap.history,
            forced_text=forced_text,
            generated_tokens=snap.generated_tokens,
            unfinished=snap.current,
            views=views,
            timings={
                "prefill_s": t_prefill,
                "decode_s": t_decode,
                "forced_s": total - t_prefill - t_decode,
                "total_s": total,
                "passes_per_s": run.passes / t_decode if t_decode > 0 else 0.0,
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


def make_decoder(loaded: LoadedModel):
    tok = loaded.tokenizer

    def decode(ids: Sequence[int]) -> str:
        return tok.decode(list(ids), skip_special_tokens=False)

    return decode


def last_answer(snapshot: Snapshot) -> str | None:
    """The answer the workers have given so far: the last boxed answer in completion order."""
    texts = [t for _, t in snapshot.history] + [t for _, t in snapshot.current]
    for text in reversed(texts):
        found = extract_boxed(text)
        if found is not None:
            return found
    return None


def forced_answer(
    loaded: LoadedModel, protocol: Protocol, script: Script, snapshot: Snapshot, max_tokens: int = 48
) -> tuple[str, str | None]:
    """Decode greedily from the transcript plus "...the final answer is \\boxed{".

    A single sequence through the same engine (one worker, no protocol text), prefilled in
    chunks; stops when the box closes, at end of sequence, or after ``max_tokens``. Oldest
    history steps are dropped if the transcript would not fit the context.
    """
    tok = loaded.tokenizer
    decode = make_decoder(loaded)
    prompt_text = decode(script.prompt_ids)
    history = list(snapshot.history)
    while True:
        text = protocol.forced_answer_text(prompt_text, history, list(snapshot.current))
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if len(ids) + max_tokens <= loaded.context_length or not history:
            break
        history = history[1:]
    ids = ids[-(loaded.context_length - max_tokens) :]
    engine = Engine(loaded.model, "independent", Sampling(), decode=decode)
    run = engine.start(Script(prompt_ids=ids, opening_ids=[[]], stop_ids=script.stop_ids))
    out = ""
    depth = 1
    for ev in run.run(max_tokens):
        if isinstance(ev, TokenEvent):
            for ch in ev.text:
                if depth == 0:
                    break
                depth += {"{": 1, "}": -1}.get(ch, 0)
                out += ch
            if depth == 0:
                break
    boxed = FORCED_SUFFIX_OPEN + out + ("" if depth == 0 else "}")
    return text + out, extract_boxed(boxed)
