"""The ``flush`` exercise: which calls flush the TLB (a range or in full) and which send a
shootdown IPI. Its answer is checked against a replay of the question's own text on a fresh
machine (with history, reading each step's ``tlb_flush`` records), and ``check()`` names
the classic mistakes."""

import re
import subprocess
import sys

import pytest

import vmwidgets as vw
from vmwidgets.scenarios.exercises.flush import Flush

P = vw.PAGE_SIZE
RW = vw.PROT_READ | vw.PROT_WRITE
FIXED = vw.MAP_PRIVATE | vw.MAP_ANONYMOUS | vw.MAP_FIXED
ARENA = 0x10000000


def find(want, seeds=range(300)):
    for seed in seeds:
        ex = Flush(seed)
        for i, call in enumerate(ex.calls, 1):
            if want(ex, call):
                return ex, i
    raise AssertionError("no flush exercise has the property wanted")


def answer_with(ex, number, flush=None, ipi=None):
    """The right answer text with call ``number`` changed."""
    lines = []
    for i, c in enumerate(ex.answer["calls"], 1):
        f, p = c["flush"], c["ipi"]
        if i == number:
            f = f if flush is None else flush
            p = p if ipi is None else ipi
        lines.append(f"{i}: {'none' if f is None else f}" + (" ipi" if p else ""))
    return "\n".join(lines)


# -- determinism -----------------------------------------------------------------------------------

def test_same_seed_same_exercise():
    for seed in range(10):
        a, b = Flush(seed), Flush(seed)
        assert a == b and a.text(answer=True) == b.text(answer=True)
    assert len({Flush(s).question for s in range(10)}) == 10


# -- the answer, by another route: replay the question's text ----------------------------------------

_REGION = re.compile(r"^  ([A-G]): (?:pages (\d+)-(\d+)|page (\d+)) \((0x[0-9a-f]+), (\d+) pages?\): "
                     r"(.*)$")
_CALL = re.compile(r"^  (\d+)\. ([pt]): (?:munmap\(region ([A-G])\)|mprotect\(region ([A-G]), "
                   r"PROT_READ\)|madvise\(region ([A-G]), MADV_DONTNEED\)|writes to page (\d+)"
                   r"|(fork)\(\))$")


def replay(question):
    """Run what the question says on a fresh machine with history; for each numbered call
    return ``(flush, ipi)`` read from its step's tlb_flush records."""
    m = vw.Machine(ram="64M", cpus=2)
    p = m.spawn()
    p.mmap(ARENA, 3 * P, RW, FIXED)
    for i in range(3):
        p.write(ARENA + i * P, b"x")
    p.fork()
    regions = {}
    for line in question.splitlines():
        r = _REGION.match(line)
        if r:
            first = int(r.group(2) or r.group(4))
            n = int(r.group(6))
            assert int(r.group(5), 16) == ARENA + first * P
            what = r.group(7)
            if what in ("all written", "written"):
                touched = range(first, first + n)
            elif what == "never touched":
                touched = []
            else:
                touched = [int(x) for x in re.findall(r"\d+", what)]
            regions[r.group(1)] = (first, n)
            p.mmap(ARENA + first * P, n * P, RW, FIXED)
            for page in touched:
                p.touch(ARENA + page * P, True)
    tasks = {"p": p}
    if "runs there from now on" in question or "then blocks" in question:
        tasks["t"] = p.clone_thread(cpu=1)
        tasks["t"].read(ARENA, 1)
        if "then blocks" in question:
            m.switch_to(1, None)
    else:
        assert "CPU 1 keeps running c." in question
    out = []
    for line in question.splitlines():
        c = _CALL.match(line)
        if not c:
            continue
        task = tasks[c.group(2)]
        if c.group(3):
            first, n = regions[c.group(3)]
            task.munmap(ARENA + first * P, n * P)
        elif c.group(4):
            first, n = regions[c.group(4)]
            task.mprotect(ARENA + first * P, n * P, vw.PROT_READ)
        elif c.group(5):
            first, n = regions[c.group(5)]
            task.madvise(ARENA + first * P, n * P, vw.MADV_DONTNEED)
        elif c.group(6):
            task.write(ARENA + int(c.group(6)) * P, b"W")
        else:
            task.fork()
        records = m.last_step.tlb_flushes
        local = [f.pages for f in records if f.cpu == task.cpu and f.reason in
                 ("TLB_LOCAL_MM_SHOOTDOWN", "TLB_LOCAL_SHOOTDOWN")]
        other = [f for f in records if f.cpu != task.cpu]
        flush = None if not local else "full" if local[0] == -1 else local[0]
        out.append((flush, bool(other)))
        vw.validate(m)
    return out


@pytest.mark.parametrize("seed", range(0, 200, 4))
def test_answer_agrees_with_a_replay_of_the_question(seed):
    ex = Flush(seed)
    assert replay(ex.question) == [(c["flush"], c["ipi"]) for c in ex.answer["calls"]]


def test_the_exercises_cover_every_case():
    seen = set()
    for seed in range(120):
        ex = Flush(seed)
        for call in ex.calls:
            f = call["flush"]
            seen.add((ex.config, call["kind"], "none" if f is None else "full" if f == "full"
                      else "range", call["ipi"]))
    for want in [("thread", "munmap", "full", True), ("thread", "munmap", "range", True),
                 ("other", "munmap", "range", False), ("lazy", "munmap", "full", False),
                 ("thread", "mprotect", "range", True), ("lazy", "fork", "full", True),
                 ("other", "fork", "full", False), ("thread", "cow", "range", True),
                 ("thread", "fresh", "none", False), ("thread", "munmap", "none", False),
                 ("lazy", "dontneed", "range", False)]:
        assert want in seen, want


# -- the worked answer is right ---------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(200))
def test_worked_answer_is_correct(seed):
    ex = Flush(seed)
    assert ex.check(ex.answer_text()).correct
    assert ex.check(ex.answer).correct
    assert ex.check([(c["flush"], c["ipi"]) for c in ex.answer["calls"]]).correct
    assert ex.answer_text() in ex.worked_answer


def test_answers_in_other_words_and_forms():
    ex, _ = find(lambda ex, c: c["flush"] not in (None, "full") and c["ipi"])
    n = len(ex.calls)
    words = []
    for i, c in enumerate(ex.answer["calls"], 1):
        f = c["flush"]
        flush = "no flush" if f is None else "full flush" if f == "full" else f"{f} pages"
        words.append(f"call {i}) {flush}, " + ("IPI: yes" if c["ipi"] else "no IPI"))
    assert ex.check("\n".join(words)).correct
    assert ex.check("; ".join(words)).correct
    as_dict = {str(i): {"flush": -1 if c["flush"] == "full" else c["flush"] or 0,
                        "ipi": "yes" if c["ipi"] else "no"}
               for i, c in enumerate(ex.answer["calls"], 1)}
    assert ex.check({"calls": as_dict}).correct
    assert len(ex.answer_text().splitlines()) == n


# -- the mistakes named -----------------------------------------------------------------------------

def test_more_than_33_pages_is_a_full_flush():
    ex, i = find(lambda ex, c: c["flush"] == "full" and c["kind"] == "munmap")
    n = ex.regions[ex.calls[i - 1]["region"]]["pages"]
    fb = ex.check(answer_with(ex, i, flush=n))
    assert not fb.correct
    assert any(f"call {i}: {n} pages is more than 33: flush_tlb_mm_range() flushes the whole "
               "TLB instead" in m for m in fb.mistakes), fb.mistakes


def test_33_pages_or_fewer_is_a_range():
    ex, i = find(lambda ex, c: c["flush"] not in (None, "full") and c["flush"] > 8)
    fb = ex.check(answer_with(ex, i, flush="full"))
    assert any("within the 33-page ceiling (tlb_single_page_flush_ceiling)" in m
               for m in fb.mistakes), fb.mistakes


def test_untouched_range_has_nothing_to_flush():
    ex, i = find(lambda ex, c: c["kind"] == "munmap" and c["flush"] is None)
    n = ex.regions[ex.calls[i - 1]["region"]]["pages"]
    fb = ex.check(answer_with(ex, i, flush=n))
    assert any("was ever touched" in m and "nothing to flush" in m for m in fb.mistakes)


def test_mprotect_removing_write_still_flushes():
    ex, i = find(lambda ex, c: c["kind"] == "mprotect" and c["flush"] is not None)
    fb = ex.check(answer_with(ex, i, flush="none", ipi=False))
    assert any("mprotect that only removes write permission still flushes" in m
               for m in fb.mistakes), fb.mistakes


def test_the_range_spans_first_to_last_cleared_pte():
    ex, i = find(lambda ex, c: c["kind"] in ("munmap", "dontneed") and c["flush"] not in (None, "full")
                 and 0 < len(ex.regions[c["region"]]["touched"]) < ex.regions[c["region"]]["pages"])
    touched = ex.regions[ex.calls[i - 1]["region"]]["touched"]
    fb = ex.check(answer_with(ex, i, flush=len(touched)))
    assert any("from the first to the last PTE cleared" in m for m in fb.mistakes), fb.mistakes


def test_a_thread_on_the_other_cpu_needs_an_ipi():
    ex, i = find(lambda ex, c: ex.config == "thread" and c["who"] == "p" and c["ipi"])
    fb = ex.check(answer_with(ex, i, ipi=False))
    assert any("CPU 1 runs t, a thread of the same address space, so flush_tlb_mm_range() "
               "sends it an IPI" in m for m in fb.mistakes), fb.mistakes
    ex, i = find(lambda ex, c: ex.config == "thread" and c["who"] == "t" and c["ipi"])
    fb = ex.check(answer_with(ex, i, ipi=False))
    assert any("CPU 0 runs p" in m for m in fb.mistakes), fb.mistakes


def test_lazy_and_other_cpus_get_no_ipi_but_fork_reaches_lazy_ones():
    ex, i = find(lambda ex, c: ex.config == "lazy" and c["flush"] is not None and not c["ipi"])
    fb = ex.check(answer_with(ex, i, ipi=True))
    assert any("lazy TLB mode: should_flush_tlb() skips it" in m for m in fb.mistakes)
    ex, i = find(lambda ex, c: ex.config == "lazy" and c["kind"] == "fork")
    assert ex.answer["calls"][i - 1] == {"flush": "full", "ipi": True}
    fb = ex.check(answer_with(ex, i, ipi=False))
    assert any("freed_tables=true" in m and "init_mm" in m for m in fb.mistakes)
    ex, i = find(lambda ex, c: ex.config == "other" and c["flush"] is not None)
    fb = ex.check(answer_with(ex, i, ipi=True))
    assert any("not in p's mm_cpumask" in m for m in fb.mistakes)


def test_cow_fresh_write_and_fork():
    ex, i = find(lambda ex, c: c["kind"] == "cow")
    fb = ex.check(answer_with(ex, i, flush="none", ipi=False))
    assert any("wp_page_copy()" in m and "ptep_clear_flush()" in m for m in fb.mistakes)
    ex, i = find(lambda ex, c: c["kind"] == "fresh")
    fb = ex.check(answer_with(ex, i, flush=1))
    assert any("fills an empty PTE" in m for m in fb.mistakes)
    ex, i = find(lambda ex, c: c["kind"] == "fork")
    fb = ex.check(answer_with(ex, i, flush=5))
    assert any("flush_tlb_mm()" in m and "full" in m for m in fb.mistakes)


@pytest.mark.parametrize("bad", ["", "hello", "1: maybe", "9: full", "1: 3\n1: 4", "0: none",
                                 "1 full 2 none", None, 3.5, 7, [], {}, {"calls": "x"},
                                 [("full", "perhaps")], {"x": 1}, [object()], "1: -5",
                                 {"calls": {"1": None}}, "1:\n2:"])
def test_unreadable_answers_get_feedback_not_exceptions(bad):
    fb = Flush(4).check(bad)
    assert not fb.correct and fb.mistakes and all(isinstance(m, str) for m in fb.mistakes)


def test_missing_lines_are_named():
    ex = Flush(4)
    fb = ex.check("\n".join(ex.answer_text().splitlines()[1:]))
    assert fb.mistakes == ["give an answer for every call; missing: 1"]


# -- the command line and the widget ------------------------------------------------------------------

def test_command_line():
    out = subprocess.run([sys.executable, "-m", "vmwidgets", "exercise", "flush", "--seed", "3",
                          "-c"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == Flush(3).text(answer=True) + "\n"
    out = subprocess.run([sys.executable, "-m", "vmwidgets", "exercise", "flush", "-s", "3",
                          "--check", "-"], input=Flush(3).answer_text(), capture_output=True,
                         text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, "flush seed 3: Correct.\n"), out.stderr


def test_widget():
    pytest.importorskip("ipywidgets")
    w = vw.widgets.ExerciseWidget("flush", 3)
    w.answer.value = Flush(3).answer_text()
    w.check_button.click()
    assert "Correct." in w.feedback.value
    w.answer.value = "1: full ipi"
    w.check_button.click()
    assert "Not quite." in w.feedback.value
