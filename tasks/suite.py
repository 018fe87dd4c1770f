"""The built-in model's task suite: prompt forms, reference answers, held-out split, grading.

The prompt forms are a public contract. The training corpus, the repository's
evaluation and any outside check all use fresh numbers in exactly these forms:

- ``add``  (chat): ``What is A + B?``  (0 <= A, B <= 999). The reply is a worked
  trace inside ``<think>``...``</think>`` (column arithmetic over three columns, least
  significant first, each step ``x+y+carry_in=`` and a two-digit column sum, steps
  written back to back), then the bare result.
- ``sub``  (chat): ``What is A - B?``  (0 <= B <= A <= 999). Same, each step
  ``<borrow_out><x>-y-borrow_in=`` and the result digit.
- ``sort`` (chat): ``Sort: x1 x2 ... xn`` (2 <= n <= 8, 0 <= xi <= 99, repeats
  allowed). The reply is the numbers in ascending order separated by single spaces.
- ``mc``   (chat): ``Question: What is A + B?`` then lines ``A. v1`` .. ``D. v4``
  (one correct value, three near misses). The reply works inside ``<think>``...``</think>``:
  the addition trace, then one line per option comparing it with the sum digit by digit
  (``option_check``); then it gives the letter alone: the answer is the letter. (A corpus
  can also train the older ``sum`` reply form, the trace alone: ``MC_REPLIES``. The
  question is the same.)
- ``complete`` (plain completion, no chat template): prompt ``A + B =``; the
  continuation is a space and the result, then the end of text.

A reply's answer is the text after the last ``</think>`` (the whole reply when
there is none), stripped. The held-out split is by problem: an arithmetic pair
(A, B) is held out for every form that uses it, a sort list by its multiset.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

THINK_START, THINK_END = "<think>", "</think>"
TASKS = ("add", "sub", "sort", "mc", "complete")
CHAT_TASKS = frozenset({"add", "sub", "sort", "mc"})
HELD_OUT_PERCENT = 10  # share of problems (by key hash) reserved for evaluation
MC_LETTERS = "ABCD"


@dataclass(frozen=True)
class Problem:
    task: str
    prompt: str  # the user message (chat tasks) or the raw completion prompt
    answer: str  # the reference answer, as grading compares it
    response: str  # the full training target (trace included)

    @property
    def chat(self) -> bool:
        return self.task in CHAT_TASKS


def extract_answer(reply: str) -> str:
    """The text after the last `</think>` (the whole reply when there is none), stripped."""
    cut = reply.rfind(THINK_END)
    return (reply[cut + len(THINK_END):] if cut >= 0 else reply).strip()


def is_correct(problem: Problem, reply: str) -> bool:
    return extract_answer(reply) == problem.answer


# --- the split ------------------------------------------------------------------------------


def problem_key(task: str, *numbers: int) -> str:
    """Arithmetic forms share one key per (A, B) pair so no form leaks another's held-out answer."""
    if task in ("add", "mc", "complete"):
        return f"add:{numbers[0]}:{numbers[1]}"
    if task == "sub":
        return f"sub:{numbers[0]}:{numbers[1]}"
    return "sort:" + ",".join(str(x) for x in sorted(numbers))


def is_held_out(key: str) -> bool:
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:4], "little") % 100 < HELD_OUT_PERCENT


# --- worked traces --------------------------------------------------------------------------


COLUMNS = 3  # every operand is at most 999: traces always have three columns


def _columns(a: int, b: int) -> list[tuple[int, int]]:
    """Digit pairs, least significant first, both operands zero-padded to `COLUMNS` digits."""
    da, db = str(a).zfill(COLUMNS), str(b).zfill(COLUMNS)
    return [(int(x), int(y)) for x, y in zip(reversed(da), reversed(db), strict=True)]


# Fixed-width steps: every column of every problem has the same tokens in the same places, so
# the carry a step reads (the previous step's tens digit) sits at a fixed distance from it.
# With the v3 format (`7+5=12 4+8+1=13 3+2+1=6`, as many columns as the longer operand) the
# wrong additions were wrong column sums (`0+1=2`, `9+3=11`), not wrong copies of the trace
# into the answer. Steps are written back to back, without a space: with spaces the add, sub
# and mc replies came to 32-35 tokens, one past the 32-token block, so a second block of EOS
# padding followed (a third more corpus tokens), and a side-by-side run with spaces trained
# worse in the same time (model card, "What was tried").


def addition_trace(a: int, b: int) -> str:
    """`7+5+0=124+8+1=133+2+1=06` for 347 + 285: `x+y+carry_in=` and a two-digit column sum."""
    steps, carry = [], 0
    for x, y in _columns(a, b):
        total = x + y + carry
        steps.append(f"{x}+{y}+{carry}={total:02d}")
        carry = total // 10
    return "".join(steps)


def subtraction_trace(a: int, b: int) -> str:
    """`12-8-0=413-7-1=505-1-1=3` for 532 - 178: `<borrow_out><x>-y-borrow_in=` and the digit."""
    steps, borrow = [], 0
    for x, y in _columns(a, b):
        diff = x - y - borrow
        borrow_out = 1 if diff < 0 else 0
        steps.append(f"{borrow_out}{x}-{y}-{borrow}={diff % 10}")
        borrow = borrow_out
    return "".join(steps)


def _think(trace: str, answer: str) -> str:
    return f"{THINK_START}{trace}{THINK_END}{answer}"


# --- problem constructors (one per form) ------------------------------------------------------


def add_problem(a: int, b: int) -> Problem:
    ans = str(a + b)
    return Problem("add", f"What is {a} + {b}?", ans, _think(addition_trace(a, b), ans))


def sub_problem(a: int, b: int) -> Problem:
    if b > a:
        raise ValueError("subtraction problems have B <= A")
    ans = str(a - b)
    return Problem("sub", f"What is {a} - {b}?", ans, _think(subtraction_trace(a, b), ans))


def sort_problem(xs: list[int]) -> Problem:
    ans = " ".join(str(x) for x in sorted(xs))
    return Problem("sort", "Sort: " + " ".join(str(x) for x in xs), ans, ans)


def near_misses(total: int, rng: random.Random) -> list[int]:
    """Three distinct wrong sums that differ from `total` in one column (±1, ±10, ±100)."""
    pool = [total + d for d in (1, -1, 10, -10, 100, -100) if total + d >= 0]
    rng.shuffle(pool)
    return pool[:3]


# Multiple-choice reply forms the corpus can train. "digit-checks" is the shipped model's: the
# addition trace, then one line per option comparing it with the sum digit by digit
# (`option_check`). "sum" (the trace alone, then the letter) is v4's: it worked the sum out but
# named option C for every question, 40% (model card, "What was tried"). Grading reads the
# letter either way.
MC_REPLIES = ("sum", "digit-checks")
SHIPPED_MC_REPLY = "digit-checks"  # the default wherever a reply form can be chosen
MC_WIDTH = 4  # every sum and option is at most 1998 + 100: four digits, zero-padded


def option_check(total: int, letter: str, value: int) -> str:
    """One option's line of a "digit-checks" reply, e.g. `00=99=98!55=NA` (995 against 985).

    Each digit of the option (zero-padded, most significant first) is written next to the sum's
    digit in the same place, then `=` or `!`; then `Y` or `N` for the whole option, then its
    letter. Every judgement reads neighbours only: a mark reads the two digits before it, the
    verdict the four marks of its line, and the final letter is the one right after the `Y`.
    The whole-number comparison (`A0995N`) was never learned: the verdict was always `N`.
    """
    have, want = f"{value:0{MC_WIDTH}d}", f"{total:0{MC_WIDTH}d}"
    pairs = "".join(f"{o}{w}{'=' if o == w else '!'}" for o, w in zip(have, want, strict=True))
    return f"{pairs}{'Y' if value == total else 'N'}{letter}"


def option_checks(total: int, options: list[int]) -> str:
    """The check lines of a "digit-checks" reply, one per option in prompt order, each after a
    newline (they follow the addition trace)."""
    return "".join("\n" + option_check(total, L, v) for L, v in zip(MC_LETTERS, options, strict=True))


def mc_problem(a: int, b: int, rng: random.Random, reply: str = SHIPPED_MC_REPLY) -> Problem:
    total = a + b
    options = near_misses(total, rng) + [total]
    rng.shuffle(options)
    letter = MC_LETTERS[options.index(total)]
    choices = [f"{L}. {v}" for L, v in zip(MC_LETTERS, options, strict=True)]
    lines = [f"Question: What is {a} + {b}?"] + choices
    # The reply works the sum out first, then names the option that shows it: picking the letter
    # without the trace asks for a three-digit addition in one step, which v3 never learned (16%).
    # Each check is local for the same reason: the letter right after the sum stayed at 40% in
    # v4 (always C), and a whole four-digit option against the sum (`A0995N`) was always N.
    work = addition_trace(a, b)
    if reply == "digit-checks":
        work += option_checks(total, options)
    elif reply != "sum":
        raise ValueError(f"unknown multiple-choice reply {reply!r}; known: {', '.join(MC_REPLIES)}")
    return Problem("mc", "\n".join(lines), letter, _think(work, letter))


def complete_problem(a: int, b: int) -> Problem:
    return Problem("complete", f"{a} + {b} =", str(a + b), f" {a + b}")


# --- sampling -----------------------------------------------------------------------------


def sample_problem(task: str, rng: random.Random, mc_reply: str = SHIPPED_MC_REPLY) -> tuple[Problem, str]:
    """One fresh problem of `task` and its split key (`mc_reply`: one of `MC_REPLIES`)."""
    if task in ("add", "mc", "complete"):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        key = problem_key(task, a, b)
        if task == "add":
            return add_problem(a, b), key
        if task == "mc":
            return mc_problem(a, b, rng, mc_reply), key
        return complete_problem(a, b), key
    if task == "sub":
        a = rng.randint(0, 999)
        b = rng.randint(0, a)
        return sub_problem(a, b), problem_key(task, a, b)
    if task == "sort":
        xs = [rng.randint(0, 99) for _ in range(rng.randint(2, 8))]
        return sort_problem(xs), problem_key(task, *xs)
    raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")


def sample_split(task: str, rng: random.Random, held_out: bool,
                 mc_reply: str = SHIPPED_MC_REPLY) -> Problem:
    """Rejection-sample a problem from one side of the split."""
    while True:
        problem, key = sample_problem(task, rng, mc_reply)
        if is_held_out(key) == held_out:
            return problem


def held_out_problems(task: str, n: int, seed: int = 0) -> list[Problem]:
    """`n` distinct held-out problems of `task` (deterministic for a seed)."""
    rng = random.Random(f"eval:{task}:{seed}")
    seen, out = set(), []
    while len(out) < n:
        p = sample_split(task, rng, held_out=True)
        if p.prompt not in seen:
            seen.add(p.prompt)
            out.append(p)
    return out
