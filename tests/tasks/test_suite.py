"""The task suite is a public contract: prompt forms, answers, the held-out split and grading."""

from __future__ import annotations

import random
import re

import pytest
from diffuserve.tasks.suite import (
    MC_LETTERS,
    TASKS,
    Problem,
    add_problem,
    addition_trace,
    extract_answer,
    held_out_problems,
    is_correct,
    is_held_out,
    mc_problem,
    option_check,
    problem_key,
    sample_problem,
    sort_problem,
    sub_problem,
    subtraction_trace,
)
from diffuserve.training.corpus import training_problems

FORMS = {
    "add": re.compile(r"What is (\d+) \+ (\d+)\?"),
    "sub": re.compile(r"What is (\d+) - (\d+)\?"),
    "sort": re.compile(r"Sort: \d+( \d+)+"),
    "mc": re.compile(r"Question: What is (\d+) \+ (\d+)\?\nA\. \d+\nB\. \d+\nC\. \d+\nD\. \d+"),
    "complete": re.compile(r"(\d+) \+ (\d+) ="),
}


def test_worked_traces_follow_column_arithmetic():
    assert addition_trace(347, 285) == "7+5+0=124+8+1=133+2+1=06"
    assert subtraction_trace(532, 178) == "12-8-0=413-7-1=505-1-1=3"
    assert add_problem(347, 285).response == "<think>7+5+0=124+8+1=133+2+1=06</think>632"
    # Short operands are zero-padded to three columns, and the answer has no leading zeros.
    assert add_problem(12, 30).response == "<think>2+0+0=021+3+0=040+0+0=00</think>42"
    assert sub_problem(100, 99).response == "<think>10-9-0=110-9-1=001-0-1=0</think>1"
    assert sub_problem(500, 498).answer == "2"
    assert add_problem(999, 1).response.endswith("</think>1000")
    with pytest.raises(ValueError):
        sub_problem(3, 4)


@pytest.mark.parametrize("a,b", [(0, 0), (5, 123), (999, 999), (100, 99), (7, 7), (1000 - 1, 0)])
def test_traces_evaluate_to_the_result(a, b):
    # Each column step is true arithmetic, and the answer digits are the columns' last digits.
    # Every step has the same shape (fixed width), and the carry / borrow a step reads is the
    # one the previous step wrote.
    assert len(addition_trace(a, b)) == 3 * 8
    carry, sums = 0, []
    for step in re.findall(r".{8}", addition_trace(a, b)):
        assert re.fullmatch(r"\d\+\d\+[01]=\d\d", step), step
        lhs, rhs = step.split("=")
        x, y, c = (int(v) for v in lhs.split("+"))
        assert c == carry and x + y + c == int(rhs)
        carry, sums = int(rhs) // 10, [*sums, rhs]
    assert int(sums[-1] + "".join(s[1] for s in reversed(sums[:-1]))) == a + b
    if b <= a:
        assert len(subtraction_trace(a, b)) == 3 * 8
        digits, borrow = [], 0
        for step in re.findall(r".{8}", subtraction_trace(a, b)):
            assert re.fullmatch(r"[01]\d-\d-[01]=\d", step), step
            lhs, rhs = step.split("=")
            first, y, b_in = lhs.split("-")
            assert int(b_in) == borrow and int(first) - int(y) - int(b_in) == int(rhs)
            borrow = int(first[0])
            digits.append(rhs)
        assert borrow == 0
        assert int("".join(reversed(digits))) == a - b


def test_every_form_matches_the_contract():
    rng = random.Random(1)
    for task in TASKS:
        for _ in range(200):
            p, _ = sample_problem(task, rng)
            m = FORMS[task].fullmatch(p.prompt)
            assert m, (task, p.prompt)
            if task in ("add", "mc", "complete", "sub"):
                a, b = int(m.group(1)), int(m.group(2))
                assert 0 <= a <= 999 and 0 <= b <= 999
                if task == "sub":
                    assert b <= a and p.answer == str(a - b)
                else:
                    shown = p.prompt.split(f"\n{p.answer}. ")[1].split("\n")[0] if task == "mc" else p.answer
                    assert shown == str(a + b)
            if task == "sort":
                xs = [int(x) for x in p.prompt[len("Sort: "):].split()]
                assert 2 <= len(xs) <= 8 and all(0 <= x <= 99 for x in xs)
                assert p.answer == " ".join(map(str, sorted(xs))) and p.response == p.answer
            if task == "complete":
                assert p.response == " " + p.answer and not p.chat
            else:
                assert p.chat


def test_multiple_choice_has_one_correct_option_and_three_near_misses():
    rng = random.Random(0)
    for _ in range(300):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        p = mc_problem(a, b, rng, reply="sum")
        values = [int(line[3:]) for line in p.prompt.split("\n")[1:]]
        assert len(set(values)) == 4 and values.count(a + b) == 1
        assert MC_LETTERS[values.index(a + b)] == p.answer
        assert all(abs(v - (a + b)) in (1, 10, 100) for v in values if v != a + b)
        # The "sum" reply works the sum out (the addition trace), then names the letter.
        assert p.response == f"<think>{addition_trace(a, b)}</think>{p.answer}"


def test_digit_checks_reply_compares_every_option_digit_by_digit():
    rng = random.Random(1)
    for _ in range(300):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        state = rng.getstate()
        p = mc_problem(a, b, rng)  # the shipped reply form
        rng.setstate(state)
        assert mc_problem(a, b, rng, reply="sum").prompt == p.prompt  # the same question either way
        values = [int(line[3:]) for line in p.prompt.split("\n")[1:]]
        # The addition trace, one check line per option, then the letter that follows the only `Y`.
        trace, *checks = p.response.removeprefix("<think>").removesuffix(f"</think>{p.answer}").split("\n")
        assert trace == addition_trace(a, b) and len(checks) == 4
        for letter, value, check in zip(MC_LETTERS, values, checks, strict=True):
            pairs = re.findall(r"(\d)(\d)([=!])", check[:12])
            assert "".join(o for o, _, _ in pairs) == f"{value:04d}"
            assert "".join(w for _, w, _ in pairs) == f"{a + b:04d}"
            assert all((m == "=") == (o == w) for o, w, m in pairs)
            assert check[12:] == ("Y" if value == a + b else "N") + letter
        assert [c[-2:] for c in checks if c[-2] == "Y"] == ["Y" + p.answer]
    with pytest.raises(ValueError, match="unknown multiple-choice reply"):
        mc_problem(1, 2, rng, reply="letter")


def test_option_check_pairs_digits_and_marks_each_pair():
    assert option_check(985, "A", 995) == "00=99=98!55=NA"
    assert option_check(985, "D", 985) == "00=99=88=55=YD"
    assert option_check(1000, "B", 999) == "01!90!90!90!NB"  # a carry changes several digits


def test_corpus_is_deterministic_for_a_seed():
    assert training_problems(500, seed=3) == training_problems(500, seed=3)
    assert training_problems(500, seed=3) != training_problems(500, seed=4)
    counts = {t: 0 for t in TASKS}
    for p in training_problems(2000, seed=0):
        counts[p.task] += 1
    assert all(c > 100 for c in counts.values()), counts


def test_held_out_split_never_overlaps_training():
    train_prompts = set()
    for p in training_problems(20000, seed=0):
        assert not _held_out(p), p
        train_prompts.add(p.prompt)
    for task in TASKS:
        held = held_out_problems(task, 200, seed=0)
        assert len({p.prompt for p in held}) == 200
        assert all(_held_out(p) for p in held)
        assert not {p.prompt for p in held} & train_prompts
        assert held == held_out_problems(task, 200, seed=0)  # deterministic


def test_arithmetic_forms_share_one_split_key():
    # A pair held out for addition is held out for multiple choice and completion too.
    assert problem_key("add", 12, 34) == problem_key("mc", 12, 34) == problem_key("complete", 12, 34)
    assert problem_key("sort", 5, 1, 5) == problem_key("sort", 1, 5, 5)
    share = sum(is_held_out(problem_key("add", a, b)) for a in range(100) for b in range(100)) / 1e4
    assert 0.08 < share < 0.12


def _held_out(p: Problem) -> bool:
    m = FORMS[p.task].fullmatch(p.prompt)
    if p.task == "sort":
        nums = [int(x) for x in p.prompt[len("Sort: "):].split()]
        return is_held_out(problem_key("sort", *nums))
    return is_held_out(problem_key(p.task, int(m.group(1)), int(m.group(2))))


def test_grading_takes_the_text_after_the_last_think_end():
    p = add_problem(347, 285)
    assert extract_answer("<think>x</think> 632 \n") == "632"
    assert extract_answer("<think>a</think>1</think>632") == "632"
    assert extract_answer(" 632") == "632"
    assert is_correct(p, p.response) and is_correct(p, "632")
    # Known-wrong answers are scored wrong.
    assert not is_correct(p, "<think>7+5+0=124+8+1=133+2+1=06</think>633")
    assert not is_correct(p, "<think>632</think>")
    assert not is_correct(p, "6320")
    assert not is_correct(sort_problem([3, 1]), "3 1")
    assert is_correct(sort_problem([3, 1]), "1 3")


def test_settings_are_parsed_by_request_field_types():
    from diffuserve.tasks.evaluate import parse_setting

    s = parse_setting("threshold=0.9, block_length=16,cache=none,cache_refresh=auto,steps=none")
    assert s == {"threshold": 0.9, "block_length": 16, "cache": "none", "cache_refresh": "auto",
                 "steps": None}
    assert parse_setting("cache_refresh=2,temperature=0")["cache_refresh"] == 2
    assert parse_setting("") == {}
    with pytest.raises(ValueError, match="bad setting"):
        parse_setting("no_such_field=1")
    with pytest.raises(ValueError):
        parse_setting("block_length=abc")
