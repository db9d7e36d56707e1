"""The ``pte`` exercise: deterministic, its answer decoded again by hand (literal x86-64 bit
positions, from the value printed in the question) and compared with /proc/PID/pagemap,
the worked answer accepted, and typical mistakes named."""

import random
import re
import subprocess
import sys

import pytest

import vmwidgets as vw
from vmwidgets.scenarios.exercises import KINDS
from vmwidgets.scenarios.exercises.pte import Pte

SEEDS = range(200)
#: x86-64 PTE bits written out by hand (Intel SDM, Table 4-19; bits 9 and 58 are software
#: bits, Linux's arch/x86/include/asm/pgtable_types.h: _PAGE_BIT_SPECIAL = _PAGE_BIT_SOFTW1,
#: _PAGE_BIT_SAVED_DIRTY = _PAGE_BIT_SOFTW5), not taken from the package.
BITS_BY_HAND = {0: "P", 1: "RW", 2: "U", 3: "PWT", 4: "PCD", 5: "A", 6: "D", 7: "PSE", 8: "G",
                9: "SPECIAL", 58: "SAVED_DIRTY", 63: "NX"}


def find(want, seeds=range(600)):
    for seed in seeds:
        ex = Pte(seed)
        if want(ex):
            return ex
    raise AssertionError("no pte exercise has the property wanted")


def from_question(question):
    """(virtual address, PTE value) read back from the question text."""
    va = int(re.search(r"for the virtual address (0x[0-9a-f]+) ends", question).group(1), 16)
    pte = int(re.search(r"^\s+(0x[0-9a-f]{16})$", question, re.M).group(1), 16)
    return va, pte


def decode_by_hand(va, pte):
    if not pte & 1:
        return {"present": False}
    pfn = (pte >> 12) & ((1 << 40) - 1)                   # bits 51..12
    return {"present": True, "flags": [n for b, n in sorted(BITS_BY_HAND.items()) if pte >> b & 1],
            "pfn": pfn, "phys": pfn << 12 | va & 0xFFF}


# -- determinism ---------------------------------------------------------------------------------

def test_registered():
    assert KINDS["pte"] is Pte and isinstance(vw.exercise("pte", 1), Pte)


def test_same_seed_same_exercise_and_seeds_differ():
    questions = set()
    for seed in range(12):
        a, b = Pte(seed), Pte(seed)
        assert a == b and a.text(answer=True) == b.text(answer=True)
        questions.add(a.question)
    assert len(questions) == 12


def test_the_question_gives_the_format_and_not_the_answer():
    ex = Pte(4)
    assert ex.text().splitlines()[:2] == ["ARG kind pte", "ARG seed 4"]
    assert "'flags: P RW U A D NX; pfn: 0x1a2; phys: 0x1a2345', or 'not present'" in ex.question
    assert ex.answer_text() not in ex.question


# -- the answer by other routes ------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_answer_agrees_with_a_decoding_by_hand_and_with_pagemap(seed):
    ex = Pte(seed)
    a = ex.answer
    va, pte = from_question(ex.question)
    assert (va, pte) == (a["va"], a["pte"])
    hand = decode_by_hand(va, pte)
    assert a["present"] == hand["present"]
    entry = ex.process.pagemap(va)
    if hand["present"]:
        assert (a["flags"], a["pfn"], a["phys"]) == (hand["flags"], hand["pfn"], hand["phys"])
        assert entry.present and entry.pfn == hand["pfn"]
        zero = bool(ex.machine.kpageflags(entry.pfn) >> 24 & 1)           # KPF_ZERO_PAGE
        assert zero == ("SPECIAL" in hand["flags"]) == a["zero"]
        assert entry.exclusive == (ex.machine.kpagecount(entry.pfn) == 1)
        vma = ex.process.mm.vma_lookup(va)
        assert ("NX" in hand["flags"]) == ("x" not in vma.perms())
        if "RW" in hand["flags"]:
            assert "w" in vma.perms()
        else:                                   # 6.6+: never Write=0,Dirty=1 (shadow stack)
            assert "D" not in hand["flags"]
        if "SAVED_DIRTY" in hand["flags"]:
            assert "RW" not in hand["flags"] and pte >> 58 & 1 and not pte >> 6 & 1
    else:
        assert a["pfn"] is None and a["phys"] is None and not entry.present
        assert entry.swapped == (pte != 0) == (a["entry"] == "swap")


def test_every_case_comes_up_and_the_cases_look_as_they_should():
    seen = {}
    for seed in SEEDS:
        ex = Pte(seed)
        seen.setdefault(ex.case, ex)
    assert set(seen) == {"write", "zero", "cow-parent", "cow-child", "rwx", "rx-zero", "mprotect",
                         "file", "swap", "swapin", "none"}
    flags = {case: set(ex.answer["flags"]) for case, ex in seen.items()}
    assert flags["write"] == {"P", "RW", "U", "A", "D", "NX"}
    assert flags["zero"] == {"P", "U", "A", "SPECIAL", "NX"}
    assert flags["rx-zero"] == {"P", "U", "A", "SPECIAL"}
    # fork write-protects both PTEs; pte_wrprotect() moves D (bit 6) to SAVED_DIRTY (bit 58)
    assert flags["cow-parent"] == {"P", "U", "A", "SAVED_DIRTY", "NX"}
    assert flags["cow-child"] == {"P", "U", "SAVED_DIRTY", "NX"}       # ... and old in the child
    assert flags["mprotect"] == {"P", "U", "A", "SAVED_DIRTY", "NX"}   # pte_modify() moves it too
    assert flags["rwx"] == {"P", "RW", "U", "A", "D"}
    assert flags["file"] == {"P", "U", "A", "NX"}
    assert flags["swapin"] == {"P", "RW", "U", "A", "NX"}              # writable, yet clean
    assert seen["none"].answer["pte"] == 0 and seen["swap"].answer["pte"] != 0


# -- checking answers ----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_the_worked_answer_is_correct(seed):
    ex = Pte(seed)
    assert ex.check(ex.answer_text()).correct and ex.check(ex.answer).correct
    last = ex.worked_answer.splitlines()[-1]
    assert last.startswith("Answer: ") and ex.check(last[len("Answer: "):]).correct


def test_structured_and_loose_forms():
    ex = find(lambda e: e.case == "write")
    a = ex.answer
    assert ex.check({"flags": a["flags"], "pfn": a["pfn"], "phys": a["phys"]}).correct
    assert ex.check({"flags": a["pte"], "pfn": hex(a["pfn"]), "phys": str(a["phys"])}).correct
    text = (f"Flags = p, r/w, u/s, accessed, dirty, xd\nframe: {a['pfn']:#x}\n"
            f"physical address: {a['phys']:#x}")
    assert ex.check(text).correct
    fb = ex.check(a["phys"])
    assert not fb.correct and fb.mistakes == ["what you gave is right; now give also the flags "
                                              "and pfn"]
    absent = find(lambda e: e.case == "swap")
    for text in ("not present", "Not present: a swap entry", {"present": False}):
        assert absent.check(text).correct


def test_bad_text_never_raises_and_says_what_could_not_be_read():
    ex = Pte(2)
    for bad, said in [("", "no answer found"), ("hello", "could not read 'hello'"),
                      ("flags: P Q", "could not read the flag 'Q'"),
                      ("pfn: zz", "could not read 'zz' as a number"), (None, "could not read"),
                      ({"colour": 1}, "unknown key 'colour'"), ([1, 2], "could not read"),
                      ("flags: P; not present", "both 'not present' and the P flag")]:
        fb = ex.check(bad)
        assert not fb.correct and said in fb.mistakes[0], (bad, fb.mistakes)
    rng = random.Random(3)
    alphabet = "flagspfnphys:;=0x123abcdef PRWUADNX-\n"
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(50)))
        assert isinstance(ex.check(text).correct, bool)


def _wrong(ex, **change):
    a = dict(ex.answer)
    a.update(change)
    flags = " ".join(a["flags"])
    return f"flags: {flags}; pfn: {a['pfn']:#x}; phys: {a['phys']:#x}"


def test_the_pfn_is_bits_12_to_51_not_the_whole_value_shifted():
    ex = find(lambda e: e.answer["present"] and "NX" in e.answer["flags"])
    fb = ex.check(_wrong(ex, pfn=ex.answer["pte"] >> 12))
    assert fb.mistakes[0].startswith("the PFN is bits 12-51, not the whole value shifted")
    fb = ex.check(_wrong(ex, pfn=ex.answer["pfn"] << 12))
    assert "shifted right by 12" in fb.mistakes[0]


def test_rw_clear_is_read_only_because_of_cow():
    for case in ("cow-parent", "cow-child"):
        ex = find(lambda e, case=case: e.case == case)
        fb = ex.check(_wrong(ex, flags=ex.answer["flags"] + ["RW"]))
        assert fb.mistakes[0].startswith("bit 1 is RW: this page is read-only (COW after fork")
    ex = find(lambda e: e.case == "zero")
    fb = ex.check(_wrong(ex, flags=ex.answer["flags"] + ["RW"]))
    assert "the zero page is always mapped read-only" in fb.mistakes[0]


def test_nx_is_bit_63():
    ex = find(lambda e: e.case == "write")
    fb = ex.check(_wrong(ex, flags=[f for f in ex.answer["flags"] if f != "NX"]))
    assert fb.mistakes[0].startswith("NX is bit 63")
    ex = find(lambda e: e.case == "rwx")
    fb = ex.check(_wrong(ex, flags=ex.answer["flags"] + ["NX"]))
    assert fb.mistakes[0].startswith("NX is bit 63: it is clear here")


def test_accessed_dirty_and_special():
    ex = find(lambda e: e.case == "cow-child")
    fb = ex.check(_wrong(ex, flags=ex.answer["flags"] + ["A"]))
    assert "fork makes the child's copies old (pte_mkold)" in fb.mistakes[0]
    ex = find(lambda e: e.case == "swapin")
    fb = ex.check(_wrong(ex, flags=ex.answer["flags"] + ["D"]))
    assert "it came back from swap on a read" in fb.mistakes[0]
    ex = find(lambda e: e.case == "zero")
    fb = ex.check(_wrong(ex, flags=[f for f in ex.answer["flags"] if f != "SPECIAL"]))
    assert "Linux sets it on PTEs of the zero page" in fb.mistakes[0]


SAVED_DIRTY_MISTAKE = ("bit 58 is SAVED_DIRTY: a read-only PTE never has D (bit 6) set on "
                       "x86-64 since 6.6; pte_wrprotect() moved it")


@pytest.mark.parametrize("case", ["cow-parent", "cow-child", "mprotect"])
def test_saved_dirty_is_bit_58_and_d_for_it_is_a_named_mistake(case):
    ex = find(lambda e: e.case == case)
    a = ex.answer
    assert "SAVED_DIRTY" in a["flags"] and "D" not in a["flags"]
    assert a["pte"] >> 58 & 1 and not a["pte"] >> 6 & 1 and not a["pte"] >> 1 & 1
    assert "bit 58  SAVED_DIRTY a software bit: the dirty bit of a write-protected PTE" in \
        ex.question
    assert "bit 58 SAVED_DIRTY set" in ex.worked_answer
    assert "SAVED_DIRTY (bit 58)" in ex.worked_answer.split("Answer:")[0].split("Where")[1]
    assert "The model keeps D" not in ex.text(answer=True)
    others = [f for f in a["flags"] if f != "SAVED_DIRTY"]
    for flags in (others + ["D"], others):                        # D instead of bit 58, or missed
        fb = ex.check(_wrong(ex, flags=flags))
        assert not fb.correct and fb.mistakes[0].startswith(SAVED_DIRTY_MISTAKE), fb.mistakes
        assert len(fb.mistakes) == 1, fb.mistakes                 # said once, not per bit
    fb = ex.check(_wrong(ex, flags=a["flags"] + ["D"]))          # both: D is still wrong
    assert fb.mistakes[0].startswith(SAVED_DIRTY_MISTAKE)
    for name in ("saved dirty", "saved-dirty", "_PAGE_SAVED_DIRTY", "SD", "softw5"):
        assert ex.check(_wrong(ex, flags=others + [name])).correct, name


def test_a_writable_dirty_pte_keeps_d_and_not_bit_58():
    ex = find(lambda e: e.case == "write")
    assert "SAVED_DIRTY" not in ex.answer["flags"] and not ex.answer["pte"] >> 58 & 1
    assert "SAVED_DIRTY (bit 58) is a software bit" not in ex.worked_answer
    fb = ex.check(_wrong(ex, flags=[f for f in ex.answer["flags"] if f != "D"] + ["SAVED_DIRTY"]))
    assert fb.mistakes[0].startswith("bit 6 (D, dirty) is set")
    assert fb.mistakes[1].startswith("bit 58 (SAVED_DIRTY) is clear: this PTE is writable")
    zero = find(lambda e: e.case == "zero")
    fb = zero.check(_wrong(zero, flags=zero.answer["flags"] + ["SAVED_DIRTY"]))
    assert fb.mistakes[0].startswith("bit 58 (SAVED_DIRTY) is clear: the page is not dirty")


def test_physical_address_mistakes():
    ex = find(lambda e: e.answer["present"] and e.answer["va"] & 0xFFF)
    a = ex.answer
    off = a["va"] & 0xFFF
    cases = {a["pfn"]: "that is the PFN, not the physical address",
             a["pfn"] << 12: "you left out the offset",
             (a["pte"] & ~0xFFF) | off: "you kept flag bits of the PTE",
             a["va"]: "that is the virtual address"}
    for phys, said in cases.items():
        fb = ex.check(_wrong(ex, phys=phys))
        assert fb.mistakes[0].startswith(said), (phys, fb.mistakes)


def test_present_or_not():
    ex = find(lambda e: e.case == "swap")
    fb = ex.check("flags: P RW U A D NX; pfn: 0x10; phys: 0x10000")
    assert fb.mistakes[0].startswith("bit 0 (P) is clear: the entry is not present")
    assert "swap entry" in fb.mistakes[0]
    assert ex.check("not present (empty)").mistakes[0].startswith("the entry is not 0")
    none = find(lambda e: e.case == "none")
    assert none.check("not present, swap entry").mistakes[0].startswith("the entry is 0 (empty)")
    present = find(lambda e: e.case == "write")
    assert present.check("not present").mistakes[0].startswith("bit 0 (P) is set")


# -- command line and widget ---------------------------------------------------------------------

def test_command_line():
    out = subprocess.run([sys.executable, "-m", "vmwidgets", "exercise", "pte", "--seed", "3",
                          "-c"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("ARG kind pte\nARG seed 3\n")
    assert "ANSWER" in out and Pte(3).answer_text() in out


def test_in_the_exercise_widget():
    pytest.importorskip("ipywidgets")
    w = vw.widgets.ExerciseWidget("pte", 3)
    w.answer.value = Pte(3).answer_text().replace("; ", "\n")
    w.check_button.click()
    assert "Correct." in w.feedback.value and w.last_feedback.correct
    w.answer.value = "flags: P; pfn: 0x1; phys: 0x1000"
    w.check_button.click()
    assert "Not quite." in w.feedback.value
