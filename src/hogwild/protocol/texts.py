"""Every piece of text the workers read, in one place.

Texts are tokenized block by block, so each block is written to read well on its own and
when concatenated: every step starts at the beginning of a line and ends with a blank line;
section headers end with a blank line; the unfinished marker starts with a space (it
follows text cut mid-sentence) and ends with a blank line.

Step headers end right after the colon, with no trailing space ("**Bob [4]:**"): with a
trailing space, BPE tokenizers produce a lone " " token and the model would then have to
continue with a space-less word token, which it rarely sees in training. Without it, the
model writes " Let me ..." with its usual tokens. Decoded text reads the same.

"{...}" fields are filled by :func:`fill` (not str.format, so LaTeX braces need no escaping).

Nothing to copy: no text here shows a filled box or a placeholder a model could paste into
its box. The examples state their results in words ("the change is 23 dollars"), and the
format lines say where the answer goes (``\\boxed{}``, empty) without showing one
(tests/test_protocol.py checks every text).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

DEFAULT_NAMES: tuple[str, ...] = (
    "Alice", "Bob", "Carol", "Dave", "Eve", "Frank", "Grace", "Heidi",
    "Ivan", "Judy", "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil",
)

OTHERS_TITLE = "Unfinished steps of the others, still being written"
OWN_TITLE = "Your own current step"
OTHERS_HEADER_TEXT = "### " + OTHERS_TITLE + "\n\n"
OWN_HEADER_TEXT = "### " + OWN_TITLE + "\n\n"
UNFINISHED_TEXT = " ...(unfinished)\n\n"
UNFINISHED_WORD = "(unfinished)"

STEP_HEADER = "**{name} [{step}]:**"
CHECK_IN_TEXT = " Quick check: am I doing redundant work? (yes/no):"
CHECK_IN_TEXT_SOLO = " Quick check: am I repeating earlier work? (yes/no):"

SYSTEM_TEAM = """\
You are one of {count} copies of the same assistant, called {names}. All of you work on the \
same problem at the same time, and every one of you sees what the others write, as they \
write it. The step you are writing now carries your name, so you know which one you are.

Your work is written in steps. A step is one short paragraph: one idea, one calculation or \
one check. It starts with a bold header that gives its author's name and, in square brackets, \
the step's number (written for you), and it ends with an empty line.

{view}

How to work together:
- Early on, make a plan and split the work: give each worker a different part, such as a \
sub-question, a case, another method, or checking a result.
- Say what you are about to do before you do it, so that the others can choose something else.
- Read what the others write and react to it: use their results, point out mistakes, answer \
their questions.
- Do not repeat work that someone else is already doing or has done. If you notice that you \
are duplicating someone, say so in one sentence and switch to a part nobody has taken.
- From time to time a step starts with a quick check whether you are doing redundant work. \
Answer it honestly, and change course if the answer is yes.
- Before finishing, agree on one final answer. Write it once, within \\boxed{}."""

#: How the system prompt describes each layout's view, by layout name (see
#: :data:`hogwild.core.layouts.LAYOUTS`). A layout without an entry gets :data:`VIEW_OTHER`.
VIEW_DESCRIPTIONS: dict[str, str] = {
    "combined": """\
What you see, from top to bottom:
- First, the finished steps of all workers, in the order they were finished.
- Then, under "{others_title}": the step each other worker is writing right now. It stops in \
mid-sentence and is marked "{unfinished}". Do not finish it for them; react to it if it helps.
- Last, under "{own_title}": the step you are writing now. Continue it from where it stops.""",
    "interleaved": """\
What you see: the finished steps of all workers, in the order they were finished, and then \
the step you are writing now. Continue your step from where it stops. The others' steps \
appear when they finish them.""",
    "contiguous": """\
What you see: first everything each other worker has written so far, each ending with the \
mark "{unfinished}" because they are still writing; then all of your own work. Continue \
your own work from where it stops.""",
}

VIEW_OTHER = """\
What you see: the steps written so far by all workers; text marked "{unfinished}" is still \
being written. Continue your own step from where it stops."""

SYSTEM_SOLO = """\
You are {me}, solving a problem step by step.

Your work is written in steps. A step is one short paragraph: one idea, one calculation or \
one check. It starts with a bold header that gives your name and, in square brackets, the \
step's number (written for you), and it ends with an empty line. You see your finished \
steps first and then the step you are writing now; continue it from where it stops.

From time to time a step starts with a quick check whether you are repeating earlier work. \
Answer it honestly, and change course if the answer is yes. Check your results before you \
finish. Write the final answer once, within \\boxed{}."""

USER_TEXT = "Problem: {problem}"

FEW_SHOT_INTRO = "Two short examples of good teamwork, on other problems:"

# Marks a few-shot step that opens with the check-in question.
CHECK_IN = "<check-in>"

# Each example is a problem and a list of (worker role, step body); roles 0, 1, 2 (written
# {w0}, {w1}, {w2} in the bodies) become the caller's worker names. There are versions for
# two workers and for three or more.
EXAMPLE_SHOP_PROBLEM = (
    "Pens cost 3 dollars each and notebooks cost 5 dollars each. Mia buys 4 pens and "
    "3 notebooks and pays with 50 dollars. How much change does she get?"
)
EXAMPLE_SHOP_2 = [
    (0, "Plan: the pens and the notebooks can be priced separately. I take the pens, "
        "{w1} takes the notebooks, then we subtract the total from 50."),
    (1, "Agreed, I take the notebooks: 3 * 5 = 15 dollars."),
    (0, "Pens: 4 * 3 = 12 dollars. With {w1}'s 15 dollars the total is 27 dollars."),
    (1, "Checking {w0}'s total: 12 + 15 = 27, correct. The change is 50 - 27 = 23 dollars."),
    (0, "I agree with {w1}: Mia gets 23 dollars in change. That is our final answer."),
]
EXAMPLE_SHOP_3 = [
    (0, "Plan: the pens and the notebooks can be priced separately. I take the pens, "
        "{w1} takes the notebooks, and {w2} checks both and finds the change."),
    (1, "I take the notebooks: 3 * 5 = 15 dollars."),
    (2, "I will wait for both costs, then check them and subtract from 50."),
    (0, "Pens: 4 * 3 = 12 dollars."),
    (2, "Checking: 4 * 3 = 12 and 3 * 5 = 15, both correct. The total is 27, so the change "
        "is 50 - 27 = 23 dollars."),
    (1, "I agree with {w2}: the change is 23 dollars, and that is our final answer."),
]
EXAMPLE_MOD_PROBLEM = "What is the remainder when 2^10 + 3^5 is divided by 7?"
EXAMPLE_MOD_2 = [
    (0, "I will find the remainder of 2^10."),
    (1, "I will start with 2^10 = 1024."),
    (1, CHECK_IN + " yes, {w0} is already doing 2^10. I switch to 3^5: 3^5 = 243 = 7 * 34 + 5, "
        "so its remainder is 5."),
    (0, "2^3 = 8 leaves 1, so 2^10 = (2^3)^3 * 2 leaves 2. With {w1}'s 5 the sum leaves "
        "2 + 5 = 7, which leaves remainder 0."),
    (1, "Check: 1024 + 243 = 1267 = 7 * 181, remainder 0. So our final answer is that the "
        "remainder is 0."),
]
EXAMPLE_MOD_3 = [
    (0, "I will find the remainder of 2^10."),
    (1, "I will start with 2^10 = 1024."),
    (2, "I take 3^5: 3^5 = 243 = 7 * 34 + 5, so its remainder is 5."),
    (1, CHECK_IN + " yes, {w0} is already doing 2^10. I switch to checking the whole sum "
        "directly: 1024 + 243 = 1267."),
    (0, "2^3 = 8 leaves 1, so 2^10 = (2^3)^3 * 2 leaves 2. With {w2}'s 5 the sum leaves "
        "2 + 5 = 7, which leaves remainder 0."),
    (1, "Check: 1267 = 7 * 181, remainder 0, the same as {w0}'s result. Our final answer: the "
        "remainder is 0."),
]

# First steps. Worker 0 proposes a plan; the others start in different directions.
OPENING_SOLO = "Let's solve this step by step."
OPENING_LEAD = "Hi, I'm {me}. Here is how I suggest we split the work:"
OPENINGS_OTHERS = (
    "Hi, I'm {me}. While {lead} writes the plan, I will start by",
    "Hi, I'm {me}. I will try a different method from the others, so that we can compare "
    "results. My approach:",
    "Hi, I'm {me}. I will first list the facts the problem gives and what exactly it asks:",
    "Hi, I'm {me}. I will take a part nobody has claimed yet, namely",
    "Hi, I'm {me}. I will check the others' numbers as they appear, starting with",
)

# A worker whose finished step repeats an earlier step (its own or another worker's; see
# hogwild.protocol.loops) gets one of these after the header of its next step, instead of
# the usual bare header or a check-in.
REDIRECT_OWN = (" I notice that my last step repeated one of my earlier steps. Instead of "
                "writing it again, I move on to the next thing nobody has done yet:")
REDIRECT_OTHER = (" I notice that my last step repeated what {other} had already written. "
                  "Instead of repeating it, I take a part nobody has done yet:")
REDIRECT_SOLO = (" I notice that my last step repeated an earlier one. Instead of writing it "
                 "again, the next new thing to do is:")

# Agent patterns on the shared cache (strategies hogwild-orchestrated and hogwild-verified).
# Each adds one paragraph to the team's system prompt and changes some openings and headers.
#
# Orchestrator-workers: the first worker writes the assignment, the others follow it.
PATTERN_ORCHESTRATED = """\
Roles in this team: {lead} is the coordinator. In the first step, {lead} writes the \
assignment: one line for each worker, starting with the worker's name and a colon, followed by \
that worker's part (a sub-question, a case, one of the listed problems, or checking). Everyone \
else follows {lead}'s assignment: work on your own part and do not start a part that is \
assigned to someone else. When your part is done, say so and help where it is needed."""
OPENING_ORCHESTRATOR = "Hi, I'm {me}. Here is the assignment, one line for each of us:"
OPENING_ORCHESTRATED = ("Hi, I'm {me}. While {lead} writes the assignment, I list the facts "
                        "the problem gives:")
# Opens the second step of every worker but the coordinator.
FOLLOW_ASSIGNMENT = " Now I work on my part, as {lead} assigned it:"

# Evaluator-optimizer: one worker checks the others' results; only it writes the final answer.
PATTERN_VERIFIED = """\
Roles in this team: {checker} is the checker; {solvers} solve the problem. Each time a solver \
states a result, {checker} checks it by redoing the calculation in another way, and then \
says either that the result is confirmed or what the correct value is. The final answer needs \
{checker}'s check: only {checker} writes it within \\boxed{}, after confirming or correcting \
the solvers' result."""
OPENING_CHECKER = ("Hi, I'm {me}, the checker. I will check every result the others state. "
                   "While they start, I work out what the problem asks and how to check it:")
OPENING_SOLVER = ("Hi, I'm {me}. I work out the solution and {checker} checks my results. "
                  "First, what the problem asks:")
# Opens the checker's next step after a solver has written a boxed result.
CHECK_RESULT = " {solver} has stated a result. I check it by redoing the calculation:"
FORCED_ANSWER_TEXT_VERIFIED = ("Time is up: we must stop here. {checker} gives the final "
                               "answer now, confirmed or corrected.")

FORCED_ANSWER_TEXT = "Time is up: we must stop here and give one answer now."
FORCED_ANSWER_TEXT_SOLO = "Time is up: I must stop here and give my answer now."
FORCED_ANSWER_LEAD = "The final answer is \\boxed{"

# The plain chain of thought (one model, no worker names, no step headers): the usual
# instruction of math-tuned chat models (Qwen2.5-Math's), and its forced-answer line.
PLAIN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
PLAIN_FORCED_TEXT = "Time is up: I must stop here and give my final answer now."


def fill(template: str, **fields: str) -> str:
    """Replace ``{name}`` fields without str.format, so LaTeX braces need no escaping."""
    return re.sub(r"\{(\w+)\}", lambda m: fields.get(m.group(1), m.group(0)), template)


def default_names(count: int, problem: str = "") -> list[str]:
    """The first ``count`` names of :data:`DEFAULT_NAMES` that ``problem`` does not mention
    as a word (any case), then "Worker 17", "Worker 18", ... when the list runs out."""
    mentioned = {word.lower() for word in re.findall(r"[A-Za-z]+", problem)}
    free = [name for name in DEFAULT_NAMES if name.lower() not in mentioned]
    return (free + [f"Worker {i + 1}" for i in range(len(free), count)])[:count]


def join_names(names: Sequence[str]) -> str:
    """"Alice", "Alice and Bob", "Alice, Bob and Carol"."""
    names = list(names)
    if len(names) == 1:
        return names[0]
    if len(names) == 2:
        return f"{names[0]} and {names[1]}"
    return ", ".join(names[:-1]) + f" and {names[-1]}"


_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
         "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(n: int) -> str:
    """``n`` in words below 100 ("two", "sixteen", "thirty-two"), else in digits: the team's
    size is the one count the system text states, and a digit there would be a number of the
    prompt's own that a model could paste (the copy guard counts it)."""
    if not 0 <= n < 100:
        return str(n)
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")
