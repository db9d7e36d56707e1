"""The ``unmapped_area`` exercise: deterministic, its answer right by two routes of its own
(the question's calls replayed on a fresh machine; a top-down search done by hand on the
printed maps lines), and ``check()`` names the mistakes."""

import re
import subprocess
import sys

import pytest

import vmwidgets as vw
from vmwidgets.scenarios.exercises import KINDS
from vmwidgets.scenarios.exercises.unmapped_area import UnmappedArea

P = vw.PAGE_SIZE
SEEDS = range(200)
_MAPS = re.compile(r"^  ([0-9a-f]+)-([0-9a-f]+) ([-r][-w][-x][ps]) [0-9a-f]+ [0-9a-f:]+ \d+ *(\S*)$", re.M)
_CALL = re.compile(r"^  \d+\. mmap\((NULL|\(void \*\)0x[0-9a-f]+), (\d+) \* P, ([A-Z_|]+), "
                   r"MAP_PRIVATE\|MAP_ANONYMOUS, -1, 0\)$", re.M)
_BASE = re.compile(r"mmap_base is (0x[0-9a-f]+)")
GUARD = 256 * P                    # stack_guard_gap
TASK_SIZE = (1 << 47) - P


def _printed(question):
    """The question's maps lines as (start, end, perms, name) and its calls as
    (hint, pages, prot)."""
    lines = [(int(a, 16), int(b, 16), perms, name) for a, b, perms, name in _MAPS.findall(question)]
    prot = {"PROT_READ": vw.PROT_READ, "PROT_READ|PROT_WRITE": vw.PROT_READ | vw.PROT_WRITE}
    calls = [(0 if h == "NULL" else int(h[len("(void *)"):], 16), int(n), prot[pr])
             for h, n, pr in _CALL.findall(question)]
    return lines, calls


def _by_hand(vmas, base, hint, length):
    """x86-64's choice, written from the rules with no model code: a free hint (the range
    ends at or below the next VMA's start, or 1 MiB below a stack's), else the top end of
    the highest gap below mmap_base that is long enough."""
    def start_gap(v):
        return v[0] - GUARD if v[3] == "[stack]" else v[0]
    vmas = sorted(v for v in vmas if v[0] < TASK_SIZE)
    if hint:
        above = [v for v in vmas if v[1] > hint]
        if not above or hint + length <= start_gap(above[0]):
            return hint
    top = base
    for v in reversed(vmas):
        if v[1] > base:
            top = min(top, start_gap(v))
            continue
        if top - v[1] >= length:
            return top - length
        top = min(top, start_gap(v))
    raise AssertionError("no gap")


def _answer_text(answers):
    return "\n".join(f"{i}. {a:#x}" for i, a in enumerate(answers, 1))


def find(want, seeds=range(400)):
    for seed in seeds:
        ex = UnmappedArea(seed)
        if want(ex):
            return ex
    raise AssertionError("no unmapped_area exercise has the property wanted")


def test_registered():
    assert KINDS["unmapped_area"] is UnmappedArea
    assert vw.exercise("unmapped_area", 2) == UnmappedArea(2)


def test_same_seed_same_exercise():
    for seed in range(10):
        assert UnmappedArea(seed) == UnmappedArea(seed)
        assert UnmappedArea(seed).text(answer=True) == UnmappedArea(seed).text(answer=True)
    assert len({UnmappedArea(s).question for s in range(10)}) == 10


@pytest.mark.parametrize("seed", SEEDS)
def test_answer_agrees_with_a_replay_and_a_search_by_hand(seed):
    ex = UnmappedArea(seed)
    lines, calls = _printed(ex.question)
    assert len(calls) == len(ex.answer) and 1 <= len(calls) <= 2
    base = int(_BASE.search(ex.question).group(1), 16)
    # Route 1: a fresh machine, the unnamed lines mapped MAP_FIXED, then the calls.
    m = vw.Machine(ram="64M")
    p = m.spawn()
    prots = {"r--p": vw.PROT_READ, "rw-p": vw.PROT_READ | vw.PROT_WRITE,
             "r-xp": vw.PROT_READ | vw.PROT_EXEC}
    for start, end, perms, name in lines:
        if not name:
            p.mmap(start, end - start, prots[perms],
                   vw.MAP_PRIVATE | vw.MAP_ANONYMOUS | vw.MAP_FIXED)
    assert p.mm.mmap_base == base
    assert [p.mmap(h, n * P, pr, vw.MAP_PRIVATE | vw.MAP_ANONYMOUS) for h, n, pr in calls] == ex.answer
    # Route 2: the rules by hand on the printed lines.
    vmas = list(lines)
    for (hint, pages, _), got in zip(calls, ex.answer):
        assert _by_hand(vmas, base, hint, pages * P) == got
        vmas.append((got, got + pages * P, "", ""))
    assert ex.check(_answer_text(ex.answer)).correct
    assert ex.check(list(ex.answer)).correct and ex.check(ex.answer).correct
    assert ex.check([hex(a) for a in ex.answer]).correct


def test_every_variant_comes_up():
    seen = {UnmappedArea(s).variant for s in range(60)}
    assert seen == {None, "null", "free hint", "taken hint", "guard gap"}


def test_answer_forms():
    ex = find(lambda ex: len(ex.answer) == 2)
    a, b = ex.answer
    for text in (f"{a:#x}\n{b:#x}", f"{a:x}, {b:x}", f"2) {b:#X}\n1) {a:#x}".replace("0X", "0x"),
                 f"call 1: {a:#x}\ncall 2: {b:#x}"):
        assert ex.check(text).correct, text
    single = find(lambda ex: len(ex.answer) == 1)
    assert single.check(single.answer[0]).correct


def _says(ex, answer, text):
    fb = ex.check(answer)
    assert not fb.correct and any(text in m for m in fb.mistakes), (fb.mistakes, text)


def _gaps_above(ex, i=0):
    """Free gaps below mmap_base above call ``i``'s answer, too small for it."""
    length = ex.calls[i][1] * P
    return [(a, b) for a, b in ex._gaps(ex.snapshots[i])
            if b <= ex.process.mm.mmap_base and a > ex.answer[i] and b - a < length]


def test_too_small_gap():
    ex = find(lambda ex: _gaps_above(ex))
    a, b = _gaps_above(ex)[0]
    _says(ex, _answer_text([b - ex.calls[0][1] * P] + ex.answer[1:]), "too small for")


def test_bottom_up_and_wrong_end_of_the_gap():
    def gap_of(ex):
        return next((a, b) for a, b in ex._gaps(ex.snapshots[0]) if a <= ex.answer[0] < b)
    ex = find(lambda ex: gap_of(ex)[0] < ex.answer[0] - P)
    gap = gap_of(ex)
    _says(ex, _answer_text([0x555555579000] + ex.answer[1:]), "bottom-up")
    if gap[0] != ex.answer[0] and gap[0] != 0x555555579000:
        _says(ex, _answer_text([gap[0]] + ex.answer[1:]), "bottom-up")
    _says(ex, _answer_text([ex.answer[0] - P] + ex.answer[1:]), "top of the gap")


def test_hints():
    ex = find(lambda ex: ex.variant == "free hint")
    _says(ex, _answer_text([ex.answer[0], ex._without_hint(1)]), "a hint is honoured when the range is free")
    ex = find(lambda ex: ex.variant == "taken hint")
    _says(ex, _answer_text([ex.answer[0], ex.calls[1][0]]), "the kernel ignored the hint")
    _says(ex, _answer_text([ex.answer[0], ex.calls[1][0]]), "overlaps the VMA")
    ex = find(lambda ex: ex.variant == "guard gap")
    _says(ex, _answer_text([ex.answer[0], ex.calls[1][0]]), "stack guard gap")


def test_second_call_sees_the_first():
    ex = find(lambda ex: len(ex.answer) == 2 and not ex.calls[1][0]
              and ex._without_earlier_calls(1) != ex.answer[1])
    _says(ex, _answer_text([ex.answer[0], ex._without_earlier_calls(1)]),
          "call 2 sees the address space as call 1 left it")


def test_above_mmap_base_misaligned_and_taken():
    ex = UnmappedArea(0)
    _says(ex, _answer_text([0x7ffff8000000] + ex.answer[1:]), "below mmap_base")
    _says(ex, _answer_text([ex.answer[0] + 8] + ex.answer[1:]), "page-aligned")
    _says(ex, _answer_text([0x555555558000] + ex.answer[1:]), "already mapped")


def test_bad_text_never_raises():
    ex = find(lambda ex: len(ex.answer) == 2)
    for bad in ("", "what?", "3. 0x7ffff7000000", "1. 0x7ffff7000000", "1. hello", None, 3.5,
                ["x"], [1, 2, 3], {"a": 1}):
        fb = ex.check(bad)
        assert not fb.correct and fb.mistakes, bad
    assert "no answer" in ex.check("1. 0x1000").mistakes[-1]


def test_command_line():
    out = subprocess.run([sys.executable, "-m", "vmwidgets", "exercise", "unmapped_area", "--seed",
                          "3", "-c"], capture_output=True, text=True, check=True).stdout
    assert out == UnmappedArea(3).text(answer=True) + "\n"


def test_in_the_widget():
    pytest.importorskip("ipywidgets")
    w = vw.widgets.ExerciseWidget("unmapped_area", 3)
    w.answer.value = _answer_text(w.exercise.answer)
    w.check_button.click()
    assert "Correct." in w.feedback.value
    w.answer.value = "1. 0x1000"
    w.check_button.click()
    assert "Not quite." in w.feedback.value
