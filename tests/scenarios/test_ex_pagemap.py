"""The ``pagemap`` exercise: deterministic, its answer read again by an independent route
(the question's operations replayed on a fresh machine and on the live kernel, then
/proc/PID/pagemap, /proc/kpagecount and /proc/kpageflags read), the worked answer accepted,
and typical mistakes named."""

import random
import re
import subprocess
import sys

import pytest

import vmwidgets as vw
from vmwidgets.core import flags as F, pgtable
from vmwidgets.scenarios.exercises import KINDS
from vmwidgets.scenarios.exercises.pagemap import Pagemap

P = vw.PAGE_SIZE
ARENA = 0x10000000
SEEDS = range(200)


def find(want, seeds=range(600)):
    """The first pagemap exercise for which ``want(ex)`` holds."""
    for seed in seeds:
        ex = Pagemap(seed)
        if want(ex):
            return ex
    raise AssertionError("no pagemap exercise has the property wanted")


def states(ex):
    return [(s["present"], s["exclusive"], s["zero"]) for s in ex.answer]


def text_for(states_):
    """Answer text for a list of (present, exclusive, zero) states."""
    def one(s):
        if not s[0] and not s[1]:
            return "-"
        return ("P" if s[0] else "") + ("E" if s[1] else "") + (" zero" if s[2] else "")
    return "\n".join(f"page {i}: {one(s)}" for i, s in enumerate(states_))


def with_page(ex, page, state):
    out = states(ex)
    out[page] = state
    return text_for(out)


# -- reading the question back -------------------------------------------------------------------

def parse_question(question):
    """(number of pages, [(who, op, page)], asked process) from the question text alone."""
    npages = int(re.search(r"Process p maps (\d+) pages at 0x10000000", question).group(1))
    ops = []
    for line in question.splitlines():
        match = re.match(r"\s+\d+\. (p|child) (reads page|writes page|forks|exits)\s*(\S*)$", line)
        if match:
            who, verb, arg = match.groups()
            op = {"reads page": "read", "writes page": "write", "forks": "fork",
                  "exits": "exit"}[verb]
            ops.append((who, op, int(arg) if op in ("read", "write") else None))
    asked = re.search(r"/proc/PID/pagemap of (p|child) show", question).group(1)
    return npages, ops, asked


def replay(npages, ops):
    """The question's operations on a fresh machine; returns the processes by name."""
    m = vw.Machine(ram="64M")
    procs = {"p": m.spawn()}
    procs["p"].mmap(ARENA, npages * P, vw.PROT_READ | vw.PROT_WRITE,
                    vw.MAP_PRIVATE | vw.MAP_ANONYMOUS | vw.MAP_FIXED)
    for who, op, page in ops:
        if op == "fork":
            procs["child"] = procs[who].fork()
        elif op == "exit":
            procs.pop(who).exit()
        elif op == "read":
            procs[who].read(ARENA + page * P, 1)
        else:
            procs[who].write(ARENA + page * P, b"w")
    vw.validate(m)
    return m, procs


def procfs_states(m, proc, npages):
    """(present, exclusive, zero) per page from pagemap, kpagecount and kpageflags."""
    out = []
    for i in range(npages):
        raw = int(proc.pagemap(ARENA + i * P))
        present, exclusive = bool(raw >> 63 & 1), bool(raw >> 56 & 1)
        pfn = raw & ((1 << 55) - 1)
        zero = present and bool(m.kpageflags(pfn) >> 24 & 1)      # KPF_ZERO_PAGE is bit 24
        if present and not zero:
            # exclusively mapped = the only mapping: kpagecount 1
            assert exclusive == (m.kpagecount(pfn) == 1)
        if zero:
            assert m.kpagecount(pfn) == 0 and not exclusive
        out.append((present, exclusive, zero))
    return out


# -- determinism ---------------------------------------------------------------------------------

def test_registered_and_listed():
    assert KINDS["pagemap"] is Pagemap
    assert isinstance(vw.exercise("pagemap", 4), Pagemap)


def test_same_seed_same_exercise_and_seeds_differ():
    questions = set()
    for seed in range(12):
        a, b = Pagemap(seed), Pagemap(seed)
        assert a == b and a.text(answer=True) == b.text(answer=True)
        questions.add(a.question)
    assert len(questions) >= 10


def test_parameters_first_and_no_answer_in_the_question():
    ex = Pagemap(8)
    lines = ex.text().splitlines()
    assert lines[:2] == ["ARG kind pagemap", "ARG seed 8"]
    assert "ANSWER" not in ex.text() and ex.answer_text() not in ex.question
    assert "page 0: PE; page 1: P zero; page 2: -" in ex.question     # the format, shown


# -- the answer by other routes ------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_answer_agrees_with_a_replay_read_through_procfs(seed):
    ex = Pagemap(seed)
    npages, ops, asked = parse_question(ex.question)
    assert npages == ex.npages and len(ops) == len(ex.events) and asked == ex.who
    m, procs = replay(npages, ops)
    assert procfs_states(m, procs[asked], npages) == states(ex)


def test_every_kind_of_page_and_story_comes_up():
    seen, kinds = set(), set()
    for seed in SEEDS:
        ex = Pagemap(seed)
        seen.update(states(ex))
        kinds.update(e["kind"] for e in ex.effects)
        kinds.update("fork without anon_vma" for e in ex.effects
                     if e["kind"] == "fork" and not e["anon_vma"])
        kinds.update("left alone" for e in ex.effects if e.get("alone") or e.get("alone_pages"))
    assert seen == {(False, False, False), (True, False, True), (True, False, False),
                    (True, True, False)}
    assert {"zero-fault", "new", "zero-copy", "copy", "reuse", "no-fault", "hit", "fork", "exit",
            "fork without anon_vma", "left alone"} <= kinds


@pytest.mark.live
def test_answer_agrees_with_the_live_kernel():
    """The question's operations on real processes: pagemap (and as root kpageflags) of the
    process asked about match the answer."""
    from tests.live.difftools import Twin, require_live, root_available
    require_live()
    for seed in range(40):
        ex = Pagemap(seed)
        npages, ops, asked = parse_question(ex.question)
        with Twin(arena_pages=8) as twin:
            names = ["p"]
            twin.syscall("mmap", twin.base, npages * P, vw.PROT_READ | vw.PROT_WRITE,
                         vw.MAP_PRIVATE | vw.MAP_ANONYMOUS | vw.MAP_FIXED)
            for who, op, page in ops:
                if op == "fork":
                    twin.fork(names.index(who))
                    names.append("child")
                elif op == "exit":
                    twin.exit(names.index(who))
                    names.remove(who)
                else:
                    twin.access(twin.base + page * P, op == "write", who=names.index(who))
                twin.check()
            lp = twin.pairs[names.index(asked)][1]
            addrs = [twin.base + i * P for i in range(npages)]
            kernel = []
            for raw in lp.pagemaps(addrs):
                e = vw.PagemapEntry.from_int(raw)
                zero = (e.present and root_available()
                        and bool(lp.kpageflags(e.pfn) >> vw.KPF_ZERO_PAGE & 1))
                kernel.append((e.present, e.exclusive, zero))
            want = states(ex)
            if not root_available():        # without root no PFN, so no kpageflags
                want = [(s[0], s[1], False) for s in want]
            assert kernel == want, (seed, ex.question)


# -- checking answers ----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_the_worked_answer_is_correct(seed):
    ex = Pagemap(seed)
    assert ex.check(ex.answer_text()).correct and ex.check(ex.answer).correct
    last = ex.worked_answer.splitlines()[-1]
    assert last.startswith("Answer: ") and ex.check(last[len("Answer: "):]).correct


def test_structured_and_loose_forms():
    ex = find(lambda e: len(set(states(e))) >= 3)
    assert ex.check(ex.answer).correct                            # list of dicts
    assert ex.check({i: s for i, s in enumerate(ex.answer)}).correct
    words = [{(False, False, False): "not present", (True, True, False): "P E",
              (True, False, True): "present zero page",
              (True, False, False): "present, shared"}[st] for st in states(ex)]
    assert ex.check(words).correct                                # list of strings
    assert ex.check({f"page {i}": w for i, w in enumerate(words)}).correct
    one_line = ", ".join(f"page {i}: {w}" for i, w in enumerate(words))
    assert ex.check(one_line).correct                             # commas between pages


def test_bad_text_never_raises_and_says_what_could_not_be_read():
    ex = Pagemap(2)
    for bad, said in [("", "no answer found"), ("hello", "no answer found"),
                      ("page 0: PX", "could not read 'px'"), ("page 0: - P", "'-' means not present"),
                      ("page 0:", "page 0: no answer"), ("page 0: P\npage 0: P", "given twice"),
                      ("oops page 0: P", "could not read 'oops'"), (None, "could not read"),
                      (3.5, "could not read"), ({"x": "P"}, "could not read 'x'"),
                      ({0: {"present": True, "weird": 1}}, "unknown key")]:
        fb = ex.check(bad)
        assert not fb.correct and said in fb.mistakes[0], (bad, fb.mistakes)
    rng = random.Random(7)
    alphabet = "pagePEzero-:;,\n 0123456789xyz"
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(40)))
        assert isinstance(ex.check(text).correct, bool)


def test_missing_and_extra_pages():
    ex = Pagemap(5)
    words = ex.answer_text().split("; ")
    fb = ex.check("; ".join(words[1:]))
    assert fb.mistakes == ["page 0: no answer"]
    fb = ex.check(ex.answer_text() + f"; page {ex.npages}: -")
    assert fb.mistakes == [f"there is no page {ex.npages}: the arena has pages 0-{ex.npages - 1}"]


def _page(ex, state, history_kind=None):
    """A page of ``ex`` in ``state`` whose deciding event is ``history_kind``, or None."""
    for i, s in enumerate(states(ex)):
        if s == state:
            hist = ex._history(ex.who, i)
            if history_kind is None or (hist and hist[-1][1] == history_kind):
                return i
    return None


def test_shared_after_fork_is_not_exclusive():
    ex = find(lambda e: _page(e, (True, False, False)) is not None)
    i = _page(ex, (True, False, False))
    fb = ex.check(with_page(ex, i, (True, True, False)))
    assert fb.mistakes[0].startswith(f"page {i}: after fork both processes map the frame")
    assert "no longer exclusively mapped until a write copies it" in fb.mistakes[0]


def test_zero_page_is_present_but_not_exclusive():
    ex = find(lambda e: _page(e, (True, False, True), "zero-fault") is not None)
    i = _page(ex, (True, False, True), "zero-fault")
    fb = ex.check(with_page(ex, i, (True, True, True)))
    assert ("a read of a never-written anonymous page maps the shared zero page: present but "
            "not exclusive") in fb.mistakes[0]
    fb = ex.check(with_page(ex, i, (False, False, False)))
    assert "the read fault mapped the zero page, so it is present" in fb.mistakes[0]
    fb = ex.check(with_page(ex, i, (True, False, False)))
    assert "so it still maps the shared zero page (KPF_ZERO_PAGE)" in fb.mistakes[0]


def test_the_writer_gets_a_new_exclusive_copy():
    ex = find(lambda e: _page(e, (True, True, False), "copy") is not None)
    i = _page(ex, (True, True, False), "copy")
    fb = ex.check(with_page(ex, i, (True, False, False)))
    assert "the writer gets a new exclusive copy (wp_page_copy)" in fb.mistakes[0]


def test_the_other_process_left_alone_is_exclusive_again():
    """6.18 (and the model): once the other process copied, the one left mapping the old
    frame has mapcount 1, so pagemap shows it exclusive though its PTE is still read-only."""
    ex = find(lambda e: _page(e, (True, True, False), "other-copy") is not None)
    i = _page(ex, (True, True, False), "other-copy")
    pfn = ex.procs[ex.who].pagemap(ARENA + i * P).pfn
    assert ex.machine.kpagecount(pfn) == 1
    assert not pgtable.get_pte(ex.procs[ex.who].mm, ARENA + i * P) & F._PAGE_RW
    fb = ex.check(with_page(ex, i, (True, False, False)))
    assert "is now the only process that maps the old frame (mapcount 1)" in fb.mistakes[0]
    assert "exclusive again" in fb.mistakes[0]


def test_fork_of_a_vma_without_anon_vma_copies_no_pte():
    ex = find(lambda e: _page(e, (False, False, False), "fork-skip") is not None)
    i = _page(ex, (False, False, False), "fork-skip")
    fb = ex.check(with_page(ex, i, (True, False, True)))
    assert "no anon_vma and copy_page_range() copied none of its PTEs" in fb.mistakes[0]


def test_exit_of_the_other_leaves_the_frame_exclusive():
    ex = find(lambda e: _page(e, (True, True, False), "other-exit") is not None)
    i = _page(ex, (True, True, False), "other-exit")
    fb = ex.check(with_page(ex, i, (True, False, False)))
    assert "its PTEs are gone" in fb.mistakes[0] and "exclusive" in fb.mistakes[0]


def test_a_written_page_is_not_the_zero_page_and_e_needs_p():
    ex = find(lambda e: _page(e, (True, True, False), "zero-copy") is not None)
    i = _page(ex, (True, True, False), "zero-copy")
    fb = ex.check(with_page(ex, i, (True, True, True)))
    assert "gave it a real page of its own" in fb.mistakes[0]
    fb = ex.check(with_page(ex, i, (False, True, False)))
    assert "E without P cannot be" in fb.mistakes[0]


# -- command line and widget ---------------------------------------------------------------------

def test_command_line():
    out = subprocess.run([sys.executable, "-m", "vmwidgets", "exercise", "pagemap", "--seed",
                          "3", "-c"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("ARG kind pagemap\nARG seed 3\n")
    assert "ANSWER" in out and Pagemap(3).answer_text() in out
    listed = subprocess.run([sys.executable, "-m", "vmwidgets", "exercise", "--list"],
                            capture_output=True, text=True, check=True).stdout
    assert re.search(r"^pagemap\s+the pagemap bits", listed, re.M)


def test_in_the_exercise_widget():
    pytest.importorskip("ipywidgets")
    w = vw.widgets.ExerciseWidget("pagemap", 3)
    w.answer.value = Pagemap(3).answer_text().replace("; ", "\n")
    w.check_button.click()
    assert "Correct." in w.feedback.value and w.last_feedback.correct
    w.answer.value = "page 0: E"
    w.check_button.click()
    assert "Not quite." in w.feedback.value
