"""Seeded exercises: deterministic, right (checked against the model by other routes than
the generator's), and ``check()`` accepts the right answer and names typical mistakes."""

import os
import re
import subprocess
import sys

import pytest

import vmwidgets as vw
from vmwidgets.core import pgtable
from vmwidgets.scenarios import exercises as E
from vmwidgets.scenarios.exercises.base import _line_text
from vmwidgets.scenarios.exercises.tlb import _simulate

P = vw.PAGE_SIZE
SEEDS = range(25)


def find(kind, want, seeds=range(400)):
    """The first exercise of ``kind`` for which ``want(ex)`` holds."""
    for seed in seeds:
        ex = vw.exercise(kind, seed)
        if want(ex):
            return ex
    raise AssertionError(f"no {kind} exercise in {seeds} has the property wanted")


# -- determinism ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(E.KINDS))
def test_same_seed_same_exercise_and_seeds_differ(kind):
    texts = []
    for seed in range(8):
        a, b = vw.exercise(kind, seed), vw.exercise(kind, seed)
        assert a == b and a.text(answer=True) == b.text(answer=True)
        texts.append(a.question)
    assert len(set(texts)) >= 6, "different seeds give different exercises"


#: Seeds replayed in fresh interpreters, for every kind (the seeds each kind's own tests
#: had used, in one place).
_FRESH_SEEDS = (0, 1, 2, 3, 7, 9, 42, 99, 1234)
_DUMP = ("import vmwidgets as vw\n"
         "from vmwidgets.scenarios.exercises import KINDS\n"
         f"for kind in KINDS:\n    for seed in {_FRESH_SEEDS!r}:\n"
         "        ex = vw.exercise(kind, seed)\n"
         "        print(ex.text(answer=True)); print(repr(ex.answer))\n")


def test_same_text_in_a_fresh_interpreter_with_any_hash_seed():
    """Every kind gives the same exercise whatever the hash seed: nothing depends on set
    or dict-of-objects order, nor on object addresses."""
    runs = [subprocess.run([sys.executable, "-c", _DUMP], capture_output=True, text=True,
                           env={**os.environ, "PYTHONHASHSEED": h}, check=True).stdout
            for h in ("0", "4242", "31337")]
    assert runs[0] == runs[1] == runs[2]
    for kind in E.KINDS:
        assert runs[0].count(f"ARG kind {kind}\n") == len(_FRESH_SEEDS), kind
    local = "".join(vw.exercise(k, s).text(answer=True) + "\n" + repr(vw.exercise(k, s).answer)
                    + "\n" for k in E.KINDS for s in _FRESH_SEEDS)
    assert runs[0] == local


def test_bad_kinds_and_seeds():
    with pytest.raises(ValueError, match="unknown exercise kind 'tlbb'"):
        vw.exercise("tlbb", 1)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        vw.exercise("maps", -1)
    for seed in ("3", 1.5, True):
        with pytest.raises(TypeError, match="seed must be an int"):
            vw.exercise("maps", seed)


def test_parameters_are_echoed_first():
    ex = vw.exercise("cow", 11)
    lines = ex.text().splitlines()
    assert lines[:2] == ["ARG kind cow", "ARG seed 11"]
    assert all(line.startswith("ARG ") for line in lines[:len(ex.params)])
    assert "ANSWER" not in ex.text() and ex.worked_answer in ex.text(answer=True)


# -- translate -----------------------------------------------------------------------------------

def _tables_from_question(question):
    """PFN -> {index: entry}, read back from the question text alone."""
    tables, current = {}, None
    for line in question.splitlines():
        head = re.match(r"(PGD|PUD|PMD|PTE) table at PFN (0x[0-9a-f]+):", line)
        if head:
            current = tables.setdefault(int(head.group(2), 16), {})
            continue
        row = re.match(r"\s+\[\s*(\d+)\] (0x[0-9a-f]{16})$", line)
        if row:
            current[int(row.group(1))] = int(row.group(2), 16)
    return tables


def _walk_by_hand(tables, cr3, va):
    """The x86-64 walk done with bit arithmetic on the printed tables."""
    pfn, entries = cr3, []
    indices = [(va >> shift) & 0x1FF for shift in (39, 30, 21, 12)]
    for index in indices:
        entry = tables.get(pfn, {}).get(index, 0)
        if not entry & 1:
            return indices, entries, len(entries)
        entries.append(entry)
        pfn = (entry & ((1 << 52) - 1)) >> 12
    return indices, entries, None


@pytest.mark.parametrize("seed", SEEDS)
def test_translate_answer_agrees_with_the_printed_tables_and_the_pagemap(seed):
    ex = vw.exercise("translate", seed)
    a, p = ex.answer, ex.process
    va = int(ex.params["address"], 16)
    cr3 = int(re.search(r"PGD: PFN (0x[0-9a-f]+)", ex.question).group(1), 16)
    indices, entries, stop = _walk_by_hand(_tables_from_question(ex.question), cr3, va)
    assert [a["indices"][l] for l in ("PGD", "PUD", "PMD", "PTE")] == indices
    assert list(a["entries"].values()) == entries
    assert a["offset"] == va & 0xFFF
    if stop is None:
        pfn = (entries[-1] & ((1 << 52) - 1)) >> 12
        assert a["fault"] is None and a["pfn"] == pfn and a["phys"] == pfn << 12 | va & 0xFFF
        entry = p.pagemap(va)
        assert entry.present and entry.pfn == pfn
        assert f"= {a['phys']:#x}." in ex.worked_answer
    else:
        assert a["fault"] == ("PGD", "PUD", "PMD", "PTE")[stop]
        assert a["pfn"] is None and not p.pagemap(va).present
        assert len(pgtable.walk(p.mm, va)) == stop + 1
        assert "page fault" in ex.worked_answer
    assert ex.check(a).correct
    assert ex.check(a["phys"] if a["phys"] is not None else "page fault").correct


def test_translate_covers_every_outcome():
    seen = {vw.exercise("translate", s).answer["fault"] for s in range(40)}
    assert seen == {None, "PTE", "PMD", "PUD"}


def _mapped():
    return find("translate", lambda ex: ex.answer["fault"] is None and
                len(set(ex.answer["indices"].values())) == 4 and ex.answer["offset"] >= 0x100)


def test_translate_accepts_the_answer_in_every_form():
    ex = _mapped()
    a = ex.answer
    ind = [a["indices"][l] for l in ("PGD", "PUD", "PMD", "PTE")]
    for answer in (a["phys"], hex(a["phys"]), f"{a['phys']:x}",
                   {"indices": ind, "phys": a["phys"]}, {"indices": a["indices"], "pfn": a["pfn"],
                                                         "phys": a["phys"], "offset": a["offset"]}):
        assert ex.check(answer).correct, answer


def test_translate_names_the_mistake():
    ex = _mapped()
    a = ex.answer
    ind = [a["indices"][l] for l in ("PGD", "PUD", "PMD", "PTE")]
    va = a["va"]

    def says(answer, text):
        fb = ex.check(answer)
        assert not fb.correct and any(text in m for m in fb.mistakes), (fb.mistakes, text)

    says(a["pfn"], "that is the PFN, not the physical address")
    says(a["pfn"] << 12, "you left out the page offset")
    says(a["entries"]["PTE"] & ~0xFFF | a["offset"], "you kept flag bits of the PTE")
    says(va, "that is the virtual address")
    says("page fault", "there is no page fault")
    says({"indices": ind[:2] + [ind[2], ind[2]], "phys": a["phys"]},
         "you used the PMD index as the PTE index")
    says({"indices": ind[::-1], "phys": a["phys"]}, "you listed the indices from the PTE up")
    says({"indices": [ind[0], va >> 30] + ind[2:], "phys": a["phys"]},
         "mask the PUD index to 9 bits")
    says({"indices": ind}, "now give the physical address")
    says({"pfn": a["entries"]["PTE"] >> 12, "phys": a["phys"]}, "mask off the NX bit")
    says(0x1234567, "the physical address is (PFN")
    fb = ex.check("what?")
    assert not fb.correct and "could not read" in fb.mistakes[0]


def test_translate_names_the_fault_level():
    ex = find("translate", lambda ex: ex.answer["fault"] == "PMD")
    assert ex.check({"fault": "PMD"}).correct and ex.check("Page fault!").correct
    fb = ex.check(0x5000)
    assert not fb.correct and "the walk stops at the PMD" in fb.mistakes[0]
    fb = ex.check({"fault": "PTE"})
    assert "never reaches the PTE: it stops at the PMD" in fb.mistakes[0]
    fb = ex.check({"fault": "PUD"})
    assert "the PUD entry" in fb.mistakes[0] and "is present" in fb.mistakes[0]


# -- maps ------------------------------------------------------------------------------------------

_CALL = re.compile(r"\s+\d+\. (mmap|munmap|mprotect)\((0x[0-9a-f]+), (\d+) \* P(?:, ([A-Z_|]+))?")


def _replay_maps_question(question):
    """Run the calls the question lists on a fresh machine; the arena's maps lines."""
    m = vw.Machine()
    p = m.spawn()
    flags = vw.MAP_PRIVATE | vw.MAP_ANONYMOUS | vw.MAP_FIXED
    for call, addr, count, prot in _CALL.findall(question):
        addr, length = int(addr, 16), int(count) * P
        prot = 0 if not prot else eval(prot.replace("PROT_", "vw.PROT_"))  # noqa: S307
        if call == "mmap":
            p.mmap(addr, length, prot, flags)
        elif call == "munmap":
            p.munmap(addr, length)
        else:
            p.mprotect(addr, length, prot)
    lo, hi = E.ARENA, E.ARENA + E.Maps.NPAGES * P
    return [" ".join(line.split()[:2]) for line in p.proc_maps().splitlines()
            if lo <= int(line.split("-")[0], 16) < hi]


@pytest.mark.parametrize("seed", SEEDS)
def test_maps_answer_is_what_proc_maps_shows(seed):
    ex = vw.exercise("maps", seed)
    assert len(_CALL.findall(ex.question)) == ex.params["calls"]
    assert len(_EVENT.findall(vw.exercise("cow", seed).question)) == \
        vw.exercise("cow", seed).params["events"]
    assert [_line_text(l) for l in ex.answer] == _replay_maps_question(ex.question)
    assert ex.check("\n".join(_replay_maps_question(ex.question))).correct
    assert ex.check([list(l) for l in ex.answer]).correct


def _lines(ex):
    return [_line_text(l) for l in ex.answer]


def test_maps_names_a_missed_merge():
    ex = find("maps", lambda ex: any(e - s >= 2 * P for s, e, _ in ex.answer))
    s, e, perms = next(l for l in ex.answer if l[1] - l[0] >= 2 * P)
    split = [_line_text((s, s + P, perms)), _line_text((s + P, e, perms))]
    wrong = [x for x in _lines(ex) if not x.startswith(f"{s:08x}-")] + split
    fb = ex.check(sorted(wrong))
    assert not fb.correct
    assert any("is only part of the VMA" in m and "merge into one VMA" in m for m in fb.mistakes)


def test_maps_names_a_merge_that_cannot_happen():
    ex = find("maps", lambda ex: any(a[1] == b[0] for a, b in zip(ex.answer, ex.answer[1:])))
    i = next(i for i, (a, b) in enumerate(zip(ex.answer, ex.answer[1:])) if a[1] == b[0])
    a, b = ex.answer[i], ex.answer[i + 1]
    wrong = _lines(ex)[:i] + [_line_text((a[0], b[1], a[2]))] + _lines(ex)[i + 2:]
    fb = ex.check(wrong)
    assert not fb.correct
    assert any("are separate VMAs" in m and "permissions differ" in m for m in fb.mistakes), \
        fb.mistakes


def test_maps_names_the_call_that_unmapped_a_page():
    ex = find("maps", lambda ex: "munmap" in ex.question and any(
        ex.history[-1][i] is None and any(h[i] for h in ex.history) for i in range(12)))
    page = next(i for i in range(12)
                if ex.history[-1][i] is None and any(h[i] for h in ex.history))
    addr = E.ARENA + page * P
    fb = ex.check(_lines(ex) + [_line_text((addr, addr + P, "rw-p"))])
    assert not fb.correct
    assert any(f"{addr:#x} is not mapped: call" in m for m in fb.mistakes), fb.mistakes


def test_maps_names_wrong_permissions_and_missing_lines():
    ex = find("maps", lambda ex: "mprotect" in ex.question and len(ex.answer) >= 2)
    s, e, perms = ex.answer[0]
    other = "rw-p" if perms != "rw-p" else "r--p"
    fb = ex.check([_line_text((s, e, other))] + _lines(ex)[1:])
    assert any(f"is {perms}, not {other}" in m for m in fb.mistakes), fb.mistakes
    fb = ex.check(_lines(ex)[1:])
    assert any(f"missing the line {_lines(ex)[0]}" in m for m in fb.mistakes), fb.mistakes
    fb = ex.check("10000000 rw-p")
    assert not fb.correct and "could not read" in fb.mistakes[0]


# -- cow -------------------------------------------------------------------------------------------

_EVENT = re.compile(r"^ +\d+\. (\w+) (forks|writes page|unmaps page|exits)(?: (\w+))?$", re.M)


def _replay_family(ex):
    """Replay the question's events on a fresh machine: name -> process, and for each page
    the processes that still map the frame p wrote before the first fork."""
    m = vw.Machine()
    p = m.spawn()
    npages = ex.family.npages
    p.mmap(E.ARENA, npages * P, vw.PROT_READ | vw.PROT_WRITE,
           vw.MAP_PRIVATE | vw.MAP_ANONYMOUS | vw.MAP_FIXED)
    for i in range(npages):
        p.write(E.ARENA + i * P, b"x")
    procs = {"p": p}
    original = [p.pagemap(E.ARENA + i * P).pfn for i in range(npages)]
    alive = [True] * npages
    for who, verb, what in _EVENT.findall(ex.question):
        if verb == "forks":
            procs[what] = procs[who].fork()
        elif verb == "writes page":
            procs[who].write(E.ARENA + int(what) * P, b"y")
        elif verb == "unmaps page":
            procs[who].munmap(E.ARENA + int(what) * P, P)
        else:
            procs.pop(who).exit()
        for i in range(npages):          # a freed original frame may be handed out again
            alive[i] = alive[i] and m.kpagecount(original[i]) > 0
    return m, procs, original, alive


@pytest.mark.parametrize("seed", SEEDS)
def test_cow_answer_agrees_with_pagemap_and_kpagecount(seed):
    ex = vw.exercise("cow", seed)
    m, procs, original, alive = _replay_family(ex)
    for page, item in enumerate(ex.answer):
        frames = {}
        for name, proc in procs.items():
            frames.setdefault(proc.pagemap(E.ARENA + page * P).pfn, []).append(name)
        assert sorted(map(sorted, frames.values())) == sorted(map(sorted, item["groups"]))
        for pfn, names in frames.items():
            assert m.kpagecount(pfn) == len(names)
        holders = [n for n, proc in procs.items()
                   if alive[page] and proc.pagemap(E.ARENA + page * P).pfn == original[page]]
        assert sorted(holders) == sorted(item["original"])
    assert ex.check(ex.answer_text()).correct
    assert ex.check({i: item["groups"] for i, item in enumerate(ex.answer)}).correct


def test_cow_says_a_page_is_still_shared():
    ex = find("cow", lambda ex: any(len(g) >= 2 for it in ex.answer for g in it["groups"]))
    page, group = next((i, g) for i, it in enumerate(ex.answer) for g in it["groups"]
                       if len(g) >= 2)
    answer = {i: it["groups"] for i, it in enumerate(ex.answer)}
    answer[page] = [[n] for it in [ex.answer[page]] for g in it["groups"] for n in g]
    fb = ex.check(answer)
    a, b = group[0], group[1]
    assert not fb.correct
    assert any(f"page {page} is still shared by {a} and {b}: neither wrote it" in m
               for m in fb.mistakes), fb.mistakes


def test_cow_says_who_wrote_a_page_that_is_not_shared():
    def split_by_a_write(ex):
        return any(len(it["groups"]) > 1 for it in ex.answer)
    ex = find("cow", split_by_a_write)
    page = next(i for i, it in enumerate(ex.answer) if len(it["groups"]) > 1)
    answer = {i: it["groups"] for i, it in enumerate(ex.answer)}
    answer[page] = [[n for g in ex.answer[page]["groups"] for n in g]]
    fb = ex.check(answer)
    assert not fb.correct
    assert any(re.search(rf"page {page}: \w+ and \w+ do not share a frame: \w+ wrote page "
                         rf"{page} at step \d+, and the write fault gave \w+ its own copy", m)
               for m in fb.mistakes), fb.mistakes


def test_cow_explains_reuse_of_the_original_frame():
    def reused(ex):
        return any(e[0] == "write" and e[3] == "reuse" for e in ex.family.events)
    ex = find("cow", reused)
    i = next(i for i, e in enumerate(ex.family.events, 1) if e[0] == "write" and e[3] == "reuse")
    _, who, page, _ = ex.family.events[i - 1]
    assert f"{i}. {who} writes page {page}: {who} is the only one left" in ex.worked_answer
    item = ex.answer[page]
    if who in item["original"]:
        text = ex.answer_text().splitlines()
        orig = [n for n in item["original"] if n != who]
        text[page] = text[page].split(";")[0] + "; original: " + ("+".join(orig) or "-")
        fb = ex.check("\n".join(text))
        assert any(f"{who} still maps the original frame" in m and "reused" in m
                   for m in fb.mistakes), fb.mistakes


def test_cow_checks_mapcounts_and_names():
    ex = vw.exercise("cow", 3)
    lines = ex.answer_text().splitlines()
    lines[0] = re.sub(r"\((\d+)\)", lambda m: f"({int(m.group(1)) + 1})", lines[0], count=1)
    fb = ex.check("\n".join(lines))
    assert any("has mapcount" in m and "one PTE in each process" in m for m in fb.mistakes)
    fb = ex.check({0: "p+stranger"})
    assert not fb.correct and "no process named 'stranger'" in fb.mistakes[0]
    fb = ex.check({0: "p"})
    assert any(m == "page 1: no answer" for m in fb.mistakes)


# -- rmap ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_rmap_answer_agrees_with_rmap_walk_and_the_page_tables(seed):
    ex = vw.exercise("rmap", seed)
    m, fam = ex.machine, ex.family
    who, page = ex.target
    addr = E.ARENA + page * P
    pfn = fam.procs[who].pagemap(addr).pfn
    assert pfn == ex.answer["pfn"] and f"PFN {pfn:#x}" in ex.question
    names = {proc.pid: n for n, proc in fam.procs.items()}
    walked = sorted(names[proc.pid] for proc, _, _ in vw.rmap_walk(m, pfn))
    by_pagemap = sorted(n for n in fam.live() if fam.procs[n].pagemap(addr).present
                        and fam.procs[n].pagemap(addr).pfn == pfn)
    assert sorted(ex.answer["mapped"]) == walked == by_pagemap
    anon_vma = m.phys.pages[pfn].mapping
    chained = sorted(n for n in fam.live() if (v := fam.procs[n].mm.vma_lookup(addr)) is not None
                     and any(avc.anon_vma is anon_vma for avc in v.anon_vma_chain))
    assert sorted(ex.answer["visits"]) == chained
    assert set(ex.answer["mapped"]) <= set(ex.answer["visits"])
    assert ex.check(ex.answer["mapped"]).correct
    assert ex.check({"visits": ex.answer["visits"], "mapped": ex.answer["mapped"]}).correct


def test_rmap_explains_a_parent_that_is_not_visited():
    def parent_outside(ex):
        maker = ex._creator()[0]
        return bool(ex.family.ancestors(maker)) and ex.family.ancestors(maker)[0] in \
            ex.family.live() and ex.family.ancestors(maker)[0] not in ex.answer["visits"]
    ex = find("rmap", parent_outside)
    parent = ex.family.ancestors(ex._creator()[0])[0]
    fb = ex.check({"mapped": ex.answer["mapped"] + [parent]})
    assert not fb.correct
    assert any(f"{parent}: not visited: it is an ancestor" in m for m in fb.mistakes), fb.mistakes


def test_rmap_explains_a_visited_vma_that_maps_its_own_copy():
    def cowed(ex):
        return any(n in ex.answer["visits"] and n not in ex.answer["mapped"]
                   and ex.family.tokens[n].get(ex.target[1], ("", 0))[0] == n
                   for n in ex.family.live())
    ex = find("rmap", cowed)
    name = next(n for n in ex.family.live() if n in ex.answer["visits"]
                and n not in ex.answer["mapped"]
                and ex.family.tokens[n].get(ex.target[1], ("", 0))[0] == n)
    fb = ex.check(ex.answer["mapped"] + [name])
    assert any(f"{name}: visited, but its write at step" in m and "own copy" in m
               for m in fb.mistakes), fb.mistakes


def test_rmap_names_a_missing_process():
    ex = find("rmap", lambda ex: len(ex.answer["mapped"]) >= 2)
    missing = ex.answer["mapped"][-1]
    fb = ex.check(ex.answer["mapped"][:-1])
    assert any(m.startswith(f"you left out {missing}.") for m in fb.mistakes), fb.mistakes
    assert not ex.check({"visits": "nobody"}).correct
    assert not ex.check(42).correct


# -- tlb -------------------------------------------------------------------------------------------

def _tlb_by_hand(question):
    """Simulate the TLBs from the question text alone: results per line, and the CPUs each
    system call flushes (every CPU that runs the address space)."""
    size = int(re.search(r"(\d+) entries", question).group(1))
    lru = "LRU replacement" in question
    tlbs = {int(c): [] if rest == "(empty)" else rest.split(", ")
            for c, rest in re.findall(r"^  CPU (\d): (.*)$", question, re.M)}
    cpu_of = {"p": 0, "t": 1}
    results, flushed = [], {}
    lines = re.findall(r"^  (\d+)\. (\w) (reads page|writes page|calls \w+\(page) (\d)", question,
                       re.M)
    for step, who, what, page in lines:
        tlb = tlbs[cpu_of[who]]
        label = "K" if what.startswith("calls") else page
        if label in tlb:
            results.append("hit")
            if lru:
                tlb.remove(label)
                tlb.append(label)
        else:
            results.append("miss")
            if len(tlb) == size:
                tlb.pop(0)
            tlb.append(label)
        if label == "K":
            flushed[int(step)] = sorted(tlbs)
            for other in tlbs.values():
                if page in other:
                    other.remove(page)
    return results, flushed, len(lines)


@pytest.mark.parametrize("seed", SEEDS)
def test_tlb_answer_agrees_with_a_simulation_of_the_question(seed):
    ex = vw.exercise("tlb", seed)
    results, flushed, nlines = _tlb_by_hand(ex.question)
    assert nlines == ex.params["steps"] == len(ex.answer["results"])
    assert ex.answer["results"] == results
    assert ex.answer["flushed"] == flushed
    for step, records in ex.answer["flushes"].items():
        reasons = [(cpu, reason) for cpu, reason, _ in records]
        if ex.params["cpus"] == 2:
            assert reasons == [(0, "TLB_REMOTE_SEND_IPI"), (0, "TLB_LOCAL_MM_SHOOTDOWN"),
                               (1, "TLB_REMOTE_SHOOTDOWN")]
        else:
            assert reasons == [(0, "TLB_LOCAL_MM_SHOOTDOWN")]
    for cpu, totals in ex.answer["totals"].items():
        mine = [r for r, e in zip(results, ex.events) if e["cpu"] == cpu]
        assert (totals["hits"], totals["misses"]) == (mine.count("hit"), mine.count("miss"))
    assert ex.check(results).correct
    assert ex.check(" ".join(r[0].upper() for r in results)).correct
    assert ex.check({"results": results, "flushed": flushed,
                     "totals": {str(c): t for c, t in ex.answer["totals"].items()}}).correct


def test_tlb_covers_one_and_two_cpus_munmap_and_mprotect():
    exs = [vw.exercise("tlb", s) for s in range(30)]
    assert {ex.params["cpus"] for ex in exs} == {1, 2}
    assert {ex.params["policy"] for ex in exs} == {"lru", "fifo"}
    kinds = {e["kind"] for ex in exs for e in ex.events}
    assert kinds == {"read", "write", "munmap", "mprotect"}


def _alternative(ex, **kwargs):
    merged = {"policy": ex.params["policy"], **kwargs}
    return _simulate(ex.initial, ex._lookups(), ex.params["tlb_entries"], **merged)


def test_tlb_names_the_wrong_replacement_policy():
    def differs(ex):
        other = "fifo" if ex.params["policy"] == "lru" else "lru"
        return _alternative(ex, policy=other) != ex.answer["results"]
    ex = find("tlb", differs)
    other = "fifo" if ex.params["policy"] == "lru" else "lru"
    fb = ex.check(_alternative(ex, policy=other))
    assert not fb.correct
    assert fb.mistakes[0].startswith(f"your answer is what a {other.upper()} TLB would give")


def test_tlb_names_a_shared_tlb_and_an_ignored_flush():
    ex = find("tlb", lambda ex: ex.params["cpus"] == 2 and
              _alternative(ex, shared=True) != ex.answer["results"])
    fb = ex.check(_alternative(ex, shared=True))
    assert "each CPU has a TLB of its own" in fb.mistakes[0]
    def flush_matters(ex):
        other = "fifo" if ex.params["policy"] == "lru" else "lru"
        return _alternative(ex, flushes=False) not in (ex.answer["results"],
                                                       _alternative(ex, policy=other))
    ex = find("tlb", flush_matters)
    fb = ex.check(_alternative(ex, flushes=False))
    assert "your answer ignores the flush" in fb.mistakes[0]
    assert any("flushed page" in m for m in fb.mistakes), fb.mistakes


def test_tlb_explains_single_lines():
    ex = find("tlb", lambda ex: "hit" in ex.answer["results"][1:] and
              any("evicts" in line for line in ex.worked_answer.splitlines()))
    results = list(ex.answer["results"])
    i = results.index("hit", 1)
    results[i] = "miss"
    fb = ex.check(results)
    assert any(m.startswith(f"line {i + 1} is a hit:") and "was still in CPU" in m
               for m in fb.mistakes), fb.mistakes
    results = list(ex.answer["results"])
    j = results.index("miss")
    results[j] = "hit"
    fb = ex.check(results)
    assert any(m.startswith(f"line {j + 1} is a miss:") for m in fb.mistakes), fb.mistakes
    assert not ex.check(["hit"]).correct and "one result for each" in ex.check(["hit"]).mistakes[0]
    assert "could not read" in ex.check(["maybe"] * len(results)).mistakes[0]


def test_tlb_checks_flushed_cpus_and_totals():
    ex = find("tlb", lambda ex: ex.params["cpus"] == 2 and ex.answer["flushed"] and any(
        e["label"] == "K" for e in ex.events))
    step = next(iter(ex.answer["flushed"]))
    fb = ex.check({"flushed": {step: [0]}})
    assert any(f"line {step} flushes CPU 0 and 1: t runs the same address space on CPU 1" in m
               for m in fb.mistakes), fb.mistakes
    quiet = next(i for i in range(1, len(ex.events) + 1) if i not in ex.answer["flushed"])
    fb = ex.check({"flushed": {**ex.answer["flushed"], quiet: [0]}})
    assert fb.mistakes == [f"line {quiet} flushes nothing: an access that hits or misses never "
                           "flushes"]
    t0 = ex.answer["totals"][0]
    wrong = {0: (t0["hits"] - (ex.answer["results"][step - 1] == "hit"),
                 t0["misses"] - (ex.answer["results"][step - 1] == "miss")),
             1: ex.answer["totals"][1]}
    fb = ex.check({"totals": wrong})
    assert any("a system call's lookup of K counts too" in m for m in fb.mistakes), fb.mistakes


@pytest.mark.parametrize("template", [
    "visits: {a}\nmapped: {b}", "(a) {a}\n(b) {b}", "a: {a}\nb) {b}",
    "  Visited: {a}\n  maps: {b}  ", "mapped: {b}\nvisits: {a}"])
def test_rmap_reads_both_parts_from_text(template):
    """A student types (a) and (b) into the widget's text box; both parts are checked."""
    for seed in range(20):
        ex = vw.exercise("rmap", seed)
        a = ", ".join(ex.answer["visits"]) or "-"
        b = ", ".join(ex.answer["mapped"]) or "-"
        assert ex.check(template.format(a=a, b=b)).correct, (seed, template)
        everyone = ", ".join(ex.family.procs)
        wrong = ex.check(template.format(a=everyone, b=b))
        assert wrong.correct == (set(ex.answer["visits"]) == set(ex.family.procs)), seed


def test_rmap_names_alone_are_part_b():
    ex = vw.exercise("rmap", 4)
    assert ex.check("+".join(ex.answer["mapped"])).correct
