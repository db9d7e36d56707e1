"""The ``reclaim`` exercise: what reclaim does to each page (swap, drop, write back, stays,
none). Its answer is checked against a replay of the question's own text on a fresh machine
(pagemap swapped bits, swap slots, the file's contents on disk), and ``check()`` names the
classic mistakes."""

import os
import re
import subprocess
import sys

import pytest

import vmwidgets as vw
from vmwidgets.views import narrate_step
from vmwidgets.scenarios.exercises.reclaim import OUTCOMES, Reclaim

P = vw.PAGE_SIZE
RW = vw.PROT_READ | vw.PROT_WRITE
ARENA = 0x10000000


def find(want, seeds=range(400)):
    """The first (exercise, 0-based item index) for which ``want(ex, i)`` holds."""
    for seed in seeds:
        ex = Reclaim(seed)
        for i in range(len(ex.items)):
            if want(ex, i):
                return ex, i
    raise AssertionError("no reclaim exercise has the property wanted")


def answer_with(ex, index, word):
    words = list(ex.answer["outcomes"])
    words[index] = word
    return ", ".join(f"{i} {w}" for i, w in enumerate(words, 1))


def outcome(ex, i):
    return ex.answer["outcomes"][i]


# -- determinism -----------------------------------------------------------------------------------

def test_same_seed_same_exercise():
    for seed in range(10):
        a, b = Reclaim(seed), Reclaim(seed)
        assert a == b and a.text(answer=True) == b.text(answer=True)
    assert len({Reclaim(s).question for s in range(10)}) == 10


# -- the answer, by another route: replay the question's text ----------------------------------------

def replay(question):
    """Run what the question says on a fresh machine (with history) and classify each item
    from pagemap and the file on disk: ``(outcomes, slots)``."""
    nf = int(re.search(r"The file /data has (\d+) pages", question).group(1))
    na = int(re.search(r"A: (\d+) pages at 0x10000000, private anonymous", question).group(1))
    shared = "MAP_SHARED" in question
    m = vw.Machine(ram="64M", swap="4M")
    m.create_file("/data", b"".join(bytes([97 + j]) * P for j in range(nf)))
    p = m.spawn()
    p.mmap(ARENA, na * P, RW, vw.MAP_PRIVATE | vw.MAP_ANONYMOUS | vw.MAP_FIXED)
    fd = p.open("/data", os.O_RDWR)
    p.mmap(ARENA + 16 * P, nf * P, RW, (vw.MAP_SHARED if shared else vw.MAP_PRIVATE)
           | vw.MAP_FIXED, fd, 0)
    procs = {"p": p}

    def addr(page):
        return ARENA + (int(page[1:]) + (16 if page[0] == "F" else 0)) * P

    for who, verb, what in re.findall(r"^  \d+\. (\w+) (forks|writes page|reads page) (\w+)$",
                                      question, re.M):
        if verb == "forks":
            procs[what] = procs[who].fork()
        elif verb == "writes page":
            procs[who].write(addr(what), b"Z")
        else:
            procs[who].read(addr(what), 1)
    items = re.findall(r"^  \d+\. (\w+) ([AF]\d)$", question, re.M)
    before = {item: procs[item[0]].pagemap(addr(item[1])) for item in items}
    disk = bytes(m.files["/data"].data)          # the file on disk, not the page cache
    m.reclaim(1000)
    vw.validate(m)
    assert "Reclaim freed" in narrate_step(m)
    outcomes, slots = [], []
    for who, page in items:
        after = procs[who].pagemap(addr(page))
        slot = None
        if after.swapped:
            word, slot = "swap", after.pfn >> 5
        elif after.present:
            word = "stays"
        elif not before[(who, page)].present:
            word = "none"
        else:
            j = int(page[1:])
            assert page[0] == "F"
            word = ("writeback" if m.files["/data"].data[j * P:(j + 1) * P] != disk[j * P:(j + 1) * P]
                    else "drop")
        outcomes.append(word)
        slots.append(slot)
    # a swapped page reads back its data (swap-in on the next access)
    for (who, page), word in zip(items, outcomes):
        if word == "swap":
            data = procs[who].read(addr(page), 1)
            assert data != b"\0" or page[0] == "A"
    return outcomes, slots, [f"{w} {p}" for w, p in items]


@pytest.mark.parametrize("seed", range(0, 200, 2))
def test_answer_agrees_with_a_replay_of_the_question(seed):
    ex = Reclaim(seed)
    outcomes, slots, items = replay(ex.question)
    assert items == ex.answer["items"]
    assert outcomes == ex.answer["outcomes"]
    # the same slots, up to their numbering: items share a slot exactly when the model's do
    pairs = {(a, b) for a in range(len(items)) for b in range(len(items))
             if slots[a] is not None and slots[a] == slots[b]}
    theirs = ex.answer["slots"]
    assert pairs == {(a, b) for a in range(len(items)) for b in range(len(items))
                     if theirs[a] is not None and theirs[a] == theirs[b]}


def test_every_outcome_occurs_with_both_kinds_of_file_mapping():
    seen = set()
    for seed in range(80):
        ex = Reclaim(seed)
        for (who, page), word in zip(ex.items, ex.answer["outcomes"]):
            seen.add((word, page[0], ex.shared))
    for want in [("swap", "A", True), ("swap", "A", False), ("stays", "A", True),
                 ("none", "A", False), ("writeback", "F", True), ("drop", "F", True),
                 ("drop", "F", False), ("swap", "F", False)]:
        assert want in seen, want
    assert not any(w == "writeback" and not shared for w, _, shared in seen)
    assert not any(w == "swap" and page == "F" and shared for w, page, shared in seen)


# -- the worked answer is right ---------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(200))
def test_worked_answer_is_correct(seed):
    ex = Reclaim(seed)
    assert ex.check(ex.answer_text()).correct
    assert ex.check(ex.answer).correct
    assert ex.check(ex.answer["outcomes"]).correct
    assert ex.answer_text() in ex.worked_answer


def test_answers_in_other_words_and_forms():
    ex = Reclaim(11)
    words = {"swap": "swapped", "drop": "dropped", "writeback": "written back",
             "stays": "present", "none": "nothing"}
    text = "\n".join(f"{i}) {words[w]}" for i, w in enumerate(ex.answer["outcomes"], 1))
    assert ex.check(text).correct
    assert ex.check(" ".join(ex.answer["outcomes"])).correct          # in order, no numbers
    by_name = {name: w for name, w in zip(ex.answer["items"], ex.answer["outcomes"])}
    assert ex.check(by_name).correct
    assert ex.check({str(i): w.upper() for i, w in enumerate(ex.answer["outcomes"], 1)}).correct
    for word in OUTCOMES:
        assert f"  {word}" in ex.question


# -- the mistakes named -----------------------------------------------------------------------------

def test_a_shared_anonymous_page_is_unmapped_from_both():
    ex, i = find(lambda ex, i: outcome(ex, i) == "swap" and ex.items[i][1][0] == "A"
                 and len(ex.before[ex.items[i]]["sharers"]) == 2 and ex.items[i][0] == "c")
    fb = ex.check(answer_with(ex, i, "stays"))
    assert any("an anonymous page mapped by two processes is unmapped from both (try_to_unmap "
               "walks the anon_vma chain)" in m for m in fb.mistakes), fb.mistakes


def test_a_clean_file_page_is_dropped():
    ex, i = find(lambda ex, i: outcome(ex, i) == "drop")
    fb = ex.check(answer_with(ex, i, "writeback"))
    assert any("a clean file page is simply dropped: the file still has the data" in m
               for m in fb.mistakes)
    fb = ex.check(answer_with(ex, i, "swap"))
    assert any("never goes to swap" in m for m in fb.mistakes)


def test_a_dirty_shared_file_page_is_written_back():
    ex, i = find(lambda ex, i: outcome(ex, i) == "writeback")
    fb = ex.check(answer_with(ex, i, "drop"))
    assert any("pageout() writes it back to the file" in m for m in fb.mistakes)
    fb = ex.check(answer_with(ex, i, "swap"))
    assert any("goes back to its file, not to swap" in m for m in fb.mistakes)


def test_a_written_private_file_page_goes_to_swap():
    ex, i = find(lambda ex, i: outcome(ex, i) == "swap" and ex.items[i][1][0] == "F")
    fb = ex.check(answer_with(ex, i, "writeback"))
    assert any("a private file page that was written is anonymous now (COW) and goes to swap"
               in m for m in fb.mistakes), fb.mistakes
    ex, i = find(lambda ex, i: outcome(ex, i) == "swap" and ex.items[i][1][0] == "F"
                 and ex.items[i][0] == "c" and "write" not in
                 {k for w, k, pg in ex.events if w == "c" and pg == ex.items[i][1]})
    assert "inherited it at the fork" in ex._why(i)


def test_zero_page_stays_and_untouched_is_none():
    ex, i = find(lambda ex, i: outcome(ex, i) == "stays")
    fb = ex.check(answer_with(ex, i, "swap"))
    assert any("zero page" in m and "present" in m for m in fb.mistakes)
    ex, i = find(lambda ex, i: outcome(ex, i) == "none")
    fb = ex.check(answer_with(ex, i, "swap"))
    assert any("nothing to reclaim" in m for m in fb.mistakes)


@pytest.mark.parametrize("bad", ["", "hello", "1 maybe", "99 swap", "1 swap, 1 drop", "0 none",
                                 None, 3.5, 7, [], {}, {"outcomes": 5}, ["swap"], {"x y": "swap"},
                                 [object()], {"1": None}, "swap"])
def test_unreadable_answers_get_feedback_not_exceptions(bad):
    fb = Reclaim(4).check(bad)
    assert not fb.correct and fb.mistakes and all(isinstance(m, str) for m in fb.mistakes)


def test_missing_items_are_named():
    ex = Reclaim(4)
    fb = ex.check(", ".join(ex.answer_text().split(", ")[1:]))
    assert fb.mistakes == ["give an answer for every item; missing: 1"]


# -- the command line and the widget ------------------------------------------------------------------

def test_command_line():
    out = subprocess.run([sys.executable, "-m", "vmwidgets", "exercise", "reclaim", "--seed",
                          "3", "-c"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == Reclaim(3).text(answer=True) + "\n"
    out = subprocess.run([sys.executable, "-m", "vmwidgets", "exercise", "reclaim", "-s", "3",
                          "--check", "-"], input=Reclaim(3).answer_text(), capture_output=True,
                         text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, "reclaim seed 3: Correct.\n"), out.stderr


def test_widget():
    pytest.importorskip("ipywidgets")
    w = vw.widgets.ExerciseWidget("reclaim", 3)
    w.answer.value = Reclaim(3).answer_text()
    w.check_button.click()
    assert "Correct." in w.feedback.value
    w.answer.value = "1 none"
    w.check_button.click()
    assert "Not quite." in w.feedback.value
