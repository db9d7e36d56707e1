"""The ``find_vma`` exercise: deterministic, its answer right by a route of its own (the maps
lines printed in the question, searched by hand), and ``check()`` names the mistakes."""

import re
import subprocess
import sys

import pytest

import vmwidgets as vw
from vmwidgets.scenarios.exercises import KINDS
from vmwidgets.scenarios.exercises.find_vma import FindVma

P = vw.PAGE_SIZE
SEEDS = range(200)
_MAPS = re.compile(r"^  ([0-9a-f]+)-([0-9a-f]+) ", re.M)
_ADDR = re.compile(r"^  \d+\. (0x[0-9a-f]+)$", re.M)


def _text(ex, answers=None):
    rows = []
    for i, (addr, vma, inside) in enumerate(answers or ex.answer, 1):
        where = "none" if vma is None else f"{vma[0]:x}-{vma[1]:x} " + ("inside" if inside else "outside")
        rows.append(f"{i}. {where}")
    return "\n".join(rows)


def _by_hand(question, addr):
    """find_vma on the maps lines of the question: a plain scan, no model code. [vsyscall]
    is not a VMA (the gate area lies above user space), so it is left out."""
    ranges = sorted((int(a, 16), int(b, 16)) for a, b in _MAPS.findall(question)
                    if int(a, 16) < vw.core.flags.TASK_SIZE)
    for start, end in ranges:
        if end > addr:
            return (start, end), start <= addr
    return None, False


def find(want, seeds=range(400)):
    for seed in seeds:
        ex = FindVma(seed)
        if want(ex):
            return ex
    raise AssertionError("no find_vma exercise has the property wanted")


def test_registered():
    assert KINDS["find_vma"] is FindVma and vw.exercise("find_vma", 2) == FindVma(2)


def test_same_seed_same_exercise():
    for seed in range(10):
        assert FindVma(seed) == FindVma(seed)
        assert FindVma(seed).text(answer=True) == FindVma(seed).text(answer=True)
    assert len({FindVma(s).question for s in range(10)}) == 10


@pytest.mark.parametrize("seed", SEEDS)
def test_answer_agrees_with_the_printed_maps_and_check_accepts_it(seed):
    ex = FindVma(seed)
    printed = [int(a, 16) for a in _ADDR.findall(ex.question)]
    assert printed == [a for a, _, _ in ex.answer] and 3 <= len(printed) <= 4
    for addr, vma, inside in ex.answer:
        assert _by_hand(ex.question, addr) == (vma, inside)
    assert ex.check(_text(ex)).correct
    assert ex.check(ex.answer).correct
    assert ex.check([(v, i) for _, v, i in ex.answer]).correct
    assert ex.check({a: (v, i) for a, v, i in ex.answer}).correct


@pytest.mark.parametrize("seed", range(40))
def test_a_read_faults_exactly_where_the_answer_says_outside(seed):
    ex = FindVma(seed)
    for addr, vma, inside in ex.answer:
        if addr >= vw.core.flags.TASK_SIZE:
            continue
        m = vw.Machine(ram="64M")
        p = m.spawn()
        for page, length, prot in ex.calls:
            p.mmap(0x10000000 + page * P, length * P,
                   {"rw": 3, "r": 1, "rx": 5, "none": 0}[prot],
                   vw.MAP_PRIVATE | vw.MAP_ANONYMOUS | vw.MAP_FIXED)
        assert p.proc_maps() == ex.process.proc_maps()
        try:
            p.read(addr, 1)
            faulted = None
        except vw.SegmentationFault as exc:
            faulted = exc.si_code
        if inside:
            assert faulted in (None, vw.SEGV_ACCERR)   # a PROT_NONE VMA refuses the read
        else:
            assert faulted == vw.SEGV_MAPERR


def test_every_kind_of_address_comes_up():
    kinds, outcomes = set(), set()
    for seed in range(60):
        ex = FindVma(seed)
        kinds |= set(ex.kinds)
        outcomes |= {(v is None, inside) for _, v, inside in ex.answer}
    assert kinds == {"start", "last", "end", "gap", "above the arena", "above every VMA"}
    assert outcomes == {(True, False), (False, True), (False, False)}


def test_answer_forms():
    ex = FindVma(5)
    lines = _text(ex).splitlines()
    assert ex.check("\n".join(l.split(". ", 1)[1] for l in lines)).correct       # unnumbered
    assert ex.check("\n".join(reversed(lines))).correct                          # numbered
    by_addr = "\n".join(f"{a:#x}: " + l.split(". ", 1)[1] for l, (a, _, _) in zip(lines, ex.answer))
    assert ex.check(by_addr).correct
    assert ex.check(_text(ex).replace("outside", "not inside").upper().replace("0X", "0x")).correct


def _says(ex, answer, text):
    fb = ex.check(answer)
    assert not fb.correct and any(text in m for m in fb.mistakes), (fb.mistakes, text)


def _replace(ex, kind, vma=None, inside=None):
    """The right answer with the one for the address of ``kind`` changed."""
    out = []
    for (addr, v, i), k in zip(ex.answer, ex.kinds):
        if k == kind:
            v = v if vma is None else vma(addr, v)
            i = i if inside is None else inside
        out.append((addr, v, i))
    return _text(ex, out)


def test_vm_end_is_exclusive():
    ex = find(lambda ex: "end" in ex.kinds)
    _says(ex, _replace(ex, "end", vma=lambda a, v: ex._below(a), inside=True),
          "addr == vm_end of")
    _says(ex, _replace(ex, "end", vma=lambda a, v: ex._below(a), inside=True),
          "vm_end is exclusive")


def test_the_vma_below_is_not_the_answer():
    ex = find(lambda ex: "gap" in ex.kinds and
              ex._below(ex.answer[ex.kinds.index("gap")][0]) is not None)
    _says(ex, _replace(ex, "gap", vma=lambda a, v: ex._below(a), inside=True),
          "find_vma returns the first VMA ending above the address, not the one below it")


def test_inside_or_not():
    ex = find(lambda ex: "start" in ex.kinds and "gap" in ex.kinds)
    _says(ex, _replace(ex, "start", inside=False), "vm_start is inclusive")
    _says(ex, _replace(ex, "gap", inside=True), "the address is in the gap below it, not inside")
    ex = find(lambda ex: "last" in ex.kinds)
    _says(ex, _replace(ex, "last", inside=False), "last byte")


def test_null_or_not():
    ex = find(lambda ex: "above the arena" in ex.kinds)
    _says(ex, _replace(ex, "above the arena", vma=lambda a, v: None),
          "find_vma does not return NULL here")
    ex = find(lambda ex: "above every VMA" in ex.kinds)
    stack = (0x7ffffffde000, 0x7ffffffff000)
    _says(ex, _replace(ex, "above every VMA", vma=lambda a, v: stack, inside=False),
          "no VMA ends above this address")


def test_not_a_vma_and_not_the_first():
    ex = find(lambda ex: "above the arena" in ex.kinds)
    _says(ex, _replace(ex, "above the arena", vma=lambda a, v: (0x12345000, 0x12347000),
                       inside=False), "is not a VMA of this process")
    heap = next((v.vm_start, v.vm_end) for v in ex.process.mm if v.vm_start == ex.process.mm.start_brk)
    _says(ex, _replace(ex, "above the arena", vma=lambda a, v: heap, inside=False),
          "is not the first VMA ending above")


def test_bad_text_never_raises():
    ex = FindVma(1)
    for bad in ("", "what?", "1. 10000000-10001000", "9. none", "1. none\n2. none\n3. none\n"
                "4. none\n5. none", "zz: none", 42, None, [("x", True)], {"q": "none"}):
        fb = ex.check(bad)
        assert not fb.correct and fb.mistakes
    fb = ex.check("1. 10000000-10001000")
    assert "say whether the address is 'inside' or 'outside'" in fb.mistakes[0]
    assert "no answer" in ex.check("1. none").mistakes[-1]


def test_command_line():
    out = subprocess.run([sys.executable, "-m", "vmwidgets", "exercise", "find_vma", "--seed", "3",
                          "-c"], capture_output=True, text=True, check=True).stdout
    assert out == FindVma(3).text(answer=True) + "\n"


def test_in_the_widget():
    pytest.importorskip("ipywidgets")
    w = vw.widgets.ExerciseWidget("find_vma", 3)
    w.answer.value = _text(w.exercise)
    w.check_button.click()
    assert "Correct." in w.feedback.value
    w.answer.value = "1. none"
    w.check_button.click()
    assert "Not quite." in w.feedback.value
