"""The ``merge`` exercise: deterministic, its answer right by routes of its own (the
question's calls replayed on a fresh machine; the merge read off the maps lines; the reason
worked out from the calls with the rules written down here), and ``check()`` names the
mistakes."""

import re
import subprocess
import sys

import pytest

import vmwidgets as vw
from vmwidgets.scenarios.exercises import KINDS
from vmwidgets.scenarios.exercises.merge import Merge, REASONS

P = vw.PAGE_SIZE
SEEDS = range(200)
ARENA = 0x10000000
_PROT = {"PROT_READ": 1, "PROT_READ|PROT_WRITE": 3, "PROT_READ|PROT_EXEC": 5, "PROT_NONE": 0}
_CALL = re.compile(r"^  (\d+)\. (.*)$", re.M)


def _answer_text(ex, lines=None, merge=None, reasons=None):
    a = ex.answer
    out = ["%08x-%08x %s" % l for l in (a["lines"] if lines is None else lines)]
    out.append("merge: " + (a["merge"] if merge is None else merge))
    out += [f"{s}: {r}" for s, r in (a["reasons"] if reasons is None else reasons).items()]
    return "\n".join(out)


def _replay(question):
    """Run the calls the question lists on a fresh machine; return (process, the state by
    hand of every VMA made: start -> dict, the last call)."""
    m = vw.Machine(ram="64M")
    p = m.spawn()
    data = bytes(range(256)) * (16 * P // 256)
    m.create_file("/data", data)
    m.create_file("/other", data)
    fds = {}
    calls = _CALL.findall(question)
    for number, text in calls:
        if text.startswith("fd_"):
            name, path = re.match(r'(fd_\w+) = open\("(/\w+)"', text).groups()
            fds[name] = p.open(path)
        elif text.startswith("mmap("):
            addr, n, prot, flags, fd, off = re.match(
                r"mmap\((0x[0-9a-f]+), (\d+) \* P, ([A-Z_|]+), ([A-Z_|]+), (-1|fd_\w+), (\d+)(?: \* P)?\)",
                text).groups()
            fl = 0
            for name in flags.split("|"):
                fl |= getattr(vw, name)
            p.mmap(int(addr, 16), int(n) * P, _PROT[prot], fl, -1 if fd == "-1" else fds[fd],
                   int(off) * P)
        elif text.startswith("mprotect("):
            addr, n, prot = re.match(r"mprotect\((0x[0-9a-f]+), (\d+) \* P, ([A-Z_|]+)\)", text).groups()
            p.mprotect(int(addr, 16), int(n) * P, _PROT[prot])
        elif text.startswith("*(char *)"):
            p.write(int(re.search(r"0x[0-9a-f]+", text).group(), 16), b"x")
        elif text.startswith("c = *(char *)"):
            p.read(int(re.search(r"0x[0-9a-f]+", text).group(), 16), 1)
        else:
            raise AssertionError(f"unknown call {text!r}")
    return p, calls


def _arena(p):
    return [(v.vm_start, v.vm_end, v.perms()) for v in p.mm.vmas_in(ARENA, ARENA + 16 * P)]


def _touching_lines(ex):
    """The neighbours' maps lines as printed before the last call."""
    return {s: nb for s, nb in ex.touching.items() if nb is not None}


def find(want, seeds=range(600)):
    for seed in seeds:
        ex = Merge(seed)
        if want(ex):
            return ex
    raise AssertionError("no merge exercise has the property wanted")


def test_registered():
    assert KINDS["merge"] is Merge and vw.exercise("merge", 2) == Merge(2)


def test_same_seed_same_exercise():
    for seed in range(10):
        assert Merge(seed) == Merge(seed)
        assert Merge(seed).text(answer=True) == Merge(seed).text(answer=True)
    assert len({Merge(s).question for s in range(10)}) == 10


class _Hand:
    """The hidden state of each VMA, followed by hand from the question's calls with the
    rules written down here in the kernel's words (no model code): VM_ACCOUNT for private
    writable mappings without MAP_NORESERVE (mprotect adds it when a VMA becomes writable,
    and drops it on the way to read-only only while no page was written); a first write
    gives a VMA an anon_vma, reusing a touching neighbour's if their flags differ at most
    in VM_READ/WRITE/EXEC (find_mergeable_anon_vma: next first, then prev)."""

    def __init__(self, question):
        self.vmas = []
        self.anon_ids = 0
        fdfile = {}
        for _, text in _CALL.findall(question):
            if text.startswith("fd_"):
                name, path = re.match(r'(fd_\w+) = open\("(/\w+)"', text).groups()
                fdfile[name] = path
            elif text.startswith("mmap("):
                addr, n, prot, flags, fd, off = re.match(
                    r"mmap\((0x[0-9a-f]+), (\d+) \* P, ([A-Z_|]+), ([A-Z_|]+), (-1|fd_\w+), (\d+)",
                    text).groups()
                start, end = int(addr, 16), int(addr, 16) + int(n) * P
                writable = "PROT_WRITE" in prot
                self.vmas.append(dict(start=start, end=end, read="READ" in prot, write=writable,
                                      exec="EXEC" in prot,
                                      file=fdfile.get(fd), noreserve="NORESERVE" in flags,
                                      account=writable and "NORESERVE" not in flags, anon=None))
            elif text.startswith("mprotect("):
                addr, n, prot = re.match(r"mprotect\((0x[0-9a-f]+), (\d+) \* P, ([A-Z_|]+)\)",
                                         text).groups()
                v = self.at(int(addr, 16))
                v["read"], v["write"], v["exec"] = "READ" in prot, "WRITE" in prot, "EXEC" in prot
                if v["write"] and not v["noreserve"]:
                    v["account"] = True
                elif not v["write"] and v["anon"] is None:
                    v["account"] = False
            elif text.startswith("*(char *)"):
                v = self.at(int(re.search(r"0x[0-9a-f]+", text).group(), 16))
                if v["anon"] is None:
                    v["anon"] = self.reusable(v)
                    if v["anon"] is None:
                        self.anon_ids += 1
                        v["anon"] = self.anon_ids

    def at(self, addr):
        return next(v for v in reversed(self.vmas) if v["start"] <= addr < v["end"])

    def reusable(self, v):
        for nb in [n for n in self.vmas if n["start"] == v["end"]] + \
                  [n for n in self.vmas if n["end"] == v["start"]]:
            if (nb["anon"] is not None and nb["file"] == v["file"]
                    and (nb["account"], nb["noreserve"]) == (v["account"], v["noreserve"])):
                return nb["anon"]
        return None


def _expected_reason(ex, side):
    """flags, file, anon_vma or pgoff for a refusing neighbour, by hand, in the order
    mm/vma.c checks them. The range's anon_vma is its own (mprotect) or that of the
    neighbour it merged with on the other side (mmap)."""
    hand = _Hand(ex.question)
    nb = hand.at(ex.touching[side][0])
    rng = hand.at(ARENA + ex.op[1] * P)
    keys = ("read", "write", "exec", "account", "noreserve")
    if [nb[k] for k in keys] != [rng[k] for k in keys]:
        return "flags"
    if nb["file"] != rng["file"]:
        return "file"
    other = "next" if side == "prev" else "prev"
    anon = rng["anon"] if ex.op[0] == "mprotect" else None
    if ex.answer["merge"] == other:
        anon = anon or hand.at(ex.touching[other][0])["anon"]
    if nb["anon"] is not None and anon is not None and nb["anon"] != anon:
        return "anon_vma"
    return "pgoff"


@pytest.mark.parametrize("seed", SEEDS)
def test_answer_agrees_with_a_replay_and_the_rules_by_hand(seed):
    ex = Merge(seed)
    p, _ = _replay(ex.question)
    assert _arena(p) == ex.answer["lines"]
    # The merge, read off the lines: the range's line reaches over a neighbour's old line.
    start, end = ARENA + ex.op[1] * P, ARENA + (ex.op[1] + ex.op[2]) * P
    line = next(l for l in ex.answer["lines"] if l[0] <= start < l[1])
    before = re.findall(r"^  ([0-9a-f]{8})-([0-9a-f]{8}) (\S+)$",
                        ex.question.split("maps lines are now:")[1].split("Then")[0], re.M)
    before = [(int(a, 16), int(b, 16), c) for a, b, c in before]
    prev = next((b for b in before if b[1] == start and (ex.op[0] == "mmap" or b[1] <= start)), None)
    if ex.op[0] == "mprotect":
        middle = next(b for b in before if b[0] <= start < b[1])
        prev = next((b for b in before if b[1] == start), None) if middle[0] == start else None
        nxt = next((b for b in before if b[0] == end), None) if middle[1] == end else None
    else:
        nxt = next((b for b in before if b[0] == end), None)
    with_prev = prev is not None and line[0] <= prev[0]
    with_next = nxt is not None and line[1] >= nxt[1]
    assert ex.answer["merge"] == ("both" if with_prev and with_next else "prev" if with_prev
                                  else "next" if with_next else "none")
    assert {s for s, nb in (("prev", prev), ("next", nxt)) if nb is not None} == set(_touching_lines(ex))
    # The model's own words for the outcome agree.
    said = "; ".join(ex.outcome)
    assert ("both" in said) == (ex.answer["merge"] == "both")
    if ex.answer["merge"] in ("prev", "next"):
        assert ("previous" if ex.answer["merge"] == "prev" else "next VMA") in said
    # Every refusal has a reason a student can name, and it is the one worked out by hand.
    assert set(ex.answer["reasons"]) == {s for s in ("prev", "next") if s in _touching_lines(ex)
                                         and not (with_prev if s == "prev" else with_next)}
    for side, reason in ex.answer["reasons"].items():
        assert reason in REASONS
        assert reason == _expected_reason(ex, side), (side, ex.answer["why"][side])
    assert ex.check(_answer_text(ex)).correct and ex.check(ex.answer).correct
    assert ex.check({"lines": ex.answer["lines"], "merge": ex.answer["merge"],
                     "reasons": ex.answer["reasons"]}).correct


def test_every_outcome_and_reason_comes_up():
    merges, reasons, families, hidden = set(), set(), set(), False
    for seed in SEEDS:
        ex = Merge(seed)
        merges.add(ex.answer["merge"])
        reasons |= set(ex.answer["reasons"].values())
        families.add(ex.family)
        hidden |= any("other flags" in w for w in ex.answer["why"].values())
    assert merges == {"prev", "next", "both", "none"}
    assert reasons == set(REASONS) and hidden
    assert families == {"new", "file", "mprotect"}


def _says(ex, answer, text):
    fb = ex.check(answer)
    assert not fb.correct and any(text in m for m in fb.mistakes), (fb.mistakes, text)


def test_wrong_merge_side():
    ex = find(lambda ex: ex.answer["merge"] == "prev" and "next" in ex.answer["reasons"])
    _says(ex, _answer_text(ex, merge="both", reasons={}), "it did not merge with next")
    _says(ex, _answer_text(ex, merge="none", reasons={"next": ex.answer["reasons"]["next"],
                                                       "prev": "flags"}), "it did merge with prev")
    ex = find(lambda ex: ex.touching["prev"] is None and ex.answer["merge"] == "next")
    _says(ex, _answer_text(ex, merge="both"), "no VMA touches the range on the prev side")


def test_wrong_or_missing_reason():
    ex = find(lambda ex: ex.answer["reasons"].get("next") == "anon_vma")
    _says(ex, _answer_text(ex, reasons={"next": "flags"}),
          "did not refuse because of flags: the flags match")
    _says(ex, _answer_text(ex, reasons={}), "say why it did not merge with next")
    ex = find(lambda ex: "flags" in ex.answer["reasons"].values())
    side = next(s for s, r in ex.answer["reasons"].items() if r == "flags")
    _says(ex, _answer_text(ex, reasons={**ex.answer["reasons"], side: "pgoff"}),
          "did not refuse because of pgoff")
    ex = find(lambda ex: ex.family == "file" and "pgoff" in ex.answer["reasons"].values())
    side = next(s for s, r in ex.answer["reasons"].items() if r == "pgoff")
    _says(ex, _answer_text(ex, reasons={**ex.answer["reasons"], side: "file"}),
          "both map the same thing (/data)")


def test_hidden_flags_count_as_flags():
    ex = find(lambda ex: any("VM_ACCOUNT" in w for w in ex.answer["why"].values()))
    assert ex.check(_answer_text(ex).replace(": flags", ": hidden VM_ACCOUNT")).correct
    side = next(s for s, w in ex.answer["why"].items() if "VM_ACCOUNT" in w)
    _says(ex, _answer_text(ex, reasons={**ex.answer["reasons"], side: "anon_vma"}),
          f"{side} (")


def test_wrong_lines():
    ex = find(lambda ex: ex.answer["merge"] == "none" and len(ex.answer["lines"]) >= 2)
    a, b = ex.answer["lines"][:2]
    if a[1] == b[0]:
        joined = [(a[0], b[1], a[2])] + ex.answer["lines"][2:]
        _says(ex, _answer_text(ex, lines=joined), "stay apart")
    ex = find(lambda ex: ex.answer["merge"] == "both")
    whole = ex.answer["lines"]
    line = next(l for l in whole if l[1] - l[0] >= 2 * P)
    split = [l for l in whole if l != line] + [(line[0], line[0] + P, line[2]), (line[0] + P, line[1], line[2])]
    _says(ex, _answer_text(ex, lines=sorted(split)), "is only part of the VMA")
    _says(ex, _answer_text(ex, lines=whole[1:]) if len(whole) > 1 else _answer_text(ex, lines=[]),
          "missing the line" if len(whole) > 1 else "list the arena's maps lines")


def test_answer_forms_and_bad_text():
    ex = find(lambda ex: ex.answer["reasons"])
    text = _answer_text(ex)
    assert ex.check("(a)\n" + text.replace("merge:", "(b) merged with")).correct
    assert ex.check(text.replace("prev:", "previous:").replace("merge: prev", "merge: previous")).correct
    for bad in ("", "what?", "10000000-10001000 rw-p\nmerge: sideways", "merge: none\nnext: because",
                42, None, ["x"], {"merge": "up"}, {"reasons": {"left": "flags"}}):
        fb = ex.check(bad)
        assert not fb.correct and fb.mistakes, bad


def test_command_line():
    out = subprocess.run([sys.executable, "-m", "vmwidgets", "exercise", "merge", "--seed", "3",
                          "-c"], capture_output=True, text=True, check=True).stdout
    assert out == Merge(3).text(answer=True) + "\n"


def test_in_the_widget():
    pytest.importorskip("ipywidgets")
    w = vw.widgets.ExerciseWidget("merge", 3)
    w.answer.value = _answer_text(w.exercise)
    w.check_button.click()
    assert "Correct." in w.feedback.value
    w.answer.value = "merge: both"
    w.check_button.click()
    assert "Not quite." in w.feedback.value
