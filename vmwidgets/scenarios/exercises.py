"""Seeded exercises: a question, its structured answer and a worked answer, from one run.

Each kind builds a small machine from ``random.Random(seed)`` alone (no time, no hash
order, no set iteration), runs the model, and reads question, answer and explanation off
the one run, so the three always agree and the same seed gives the same exercise on any
machine. ``check(student_answer)`` compares an answer with the model's and names the
mistake, as a tutor would.

Kinds (``KINDS``):

``translate``
    walk the 4-level page table for one virtual address: indices, entries, PFN, physical
    address, or the level where the walk stops with a page fault.
``maps``
    predict the /proc/PID/maps lines of an arena after a few mmap/munmap/mprotect calls.
``cow``
    after fork(s) and writes: which processes share each page's frame, its mapcount, and
    who still has the original frame.
``rmap``
    which processes' VMAs an rmap walk of one page visits, and which of them map it.
``tlb``
    hits, misses and flushes of the per-CPU TLBs for accesses on one or two CPUs.

>>> import vmwidgets as vw
>>> ex = vw.exercise("translate", 1)
>>> ex == vw.exercise("translate", 1)
True
>>> ex.check(ex.answer).correct
True
>>> phys = ex.answer["phys"]
>>> if phys is not None:
...     print(ex.check(phys >> 12).mistakes[0][:27])
... else:
...     print("that is the PFN, not the ph")
that is the PFN, not the ph
"""

import random
import re
from dataclasses import dataclass, field

from ..core import flags as F
from ..core import pgtable
from ..core.machine import Machine
from ..core.rmap import anon_vma_tree_text, vma_address
from ..procfs import maps_line

__all__ = ["Exercise", "Feedback", "KINDS", "exercise", "Translate", "Maps", "Cow", "Rmap", "Tlb"]

P = F.PAGE_SIZE
#: Where the maps, cow and rmap exercises put their arena: short addresses, far from the rest.
ARENA = 0x10000000
_RW = F.PROT_READ | F.PROT_WRITE
_ANON_FIXED = F.MAP_PRIVATE | F.MAP_ANONYMOUS | F.MAP_FIXED


@dataclass
class Feedback:
    """The verdict on an answer: ``correct``, and one sentence per mistake found."""

    correct: bool
    mistakes: list = field(default_factory=list)

    def __bool__(self):
        return self.correct

    def __str__(self):
        if self.correct:
            return "Correct."
        return "Not quite:\n" + "\n".join(f"- {m}" for m in self.mistakes)


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, not {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return seed


class Exercise:
    """One generated exercise. ``params`` (echoed first, as OSTEP's simulators do),
    ``question`` text, ``answer`` (structured, for checking), ``worked_answer`` text.

    ``machine`` is the model the answer was read from, for a closer look (and for tests
    that check the answer by other routes).

    Subclasses set ``kind`` and ``summary`` and implement ``_build()`` (which fills the
    four fields using ``self.rng`` only) and ``check()``.
    """

    kind = None
    summary = ""

    def __init__(self, seed=0):
        self.seed = _check_seed(seed)
        self.rng = random.Random(seed)
        self.params = {"kind": self.kind, "seed": seed}
        self.question = ""
        self.answer = None
        self.worked_answer = ""
        self._build()
        del self.rng

    def _build(self):
        raise NotImplementedError

    def check(self, student):
        """A :class:`Feedback` for ``student``'s answer."""
        raise NotImplementedError

    def params_text(self):
        """The parameters, one ``ARG name value`` line each."""
        return "\n".join(f"ARG {k} {v}" for k, v in self.params.items())

    def text(self, answer=False):
        """Parameters, question, and with ``answer`` the worked answer: what the command
        line prints."""
        out = [self.params_text(), "", self.question]
        if answer:
            out += ["", "ANSWER", "", self.worked_answer]
        return "\n".join(out)

    def __eq__(self, other):
        return (type(other) is type(self) and self.params == other.params
                and self.question == other.question and self.answer == other.answer
                and self.worked_answer == other.worked_answer)

    def __repr__(self):
        return f"vw.exercise({self.kind!r}, {self.seed})"


def _machine():
    return Machine(ram="64M", history=False, trace=False)


def _pg(n):
    return ARENA + n * P


def _int(text):
    """A number from a student: int, '0x..' hex, or decimal text; None if it is not one."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        return text
    if isinstance(text, str):
        try:
            return int(text.strip().replace("_", ""), 0)
        except ValueError:
            try:
                return int(text.strip(), 16)
            except ValueError:
                return None
    return None


# =================================================================================================
# translate
# =================================================================================================

_LEVELS = pgtable.LEVELS
_BITS = {"PGD": (47, 39), "PUD": (38, 30), "PMD": (29, 21), "PTE": (20, 12)}


def _entry_text(entry):
    return f"{entry:#018x}"


class Translate(Exercise):
    """Translate a virtual address through the 4-level x86-64 page table.

    The answer is a dict: ``indices`` (level -> index), ``offset``, ``entries`` (level ->
    entry read, for the levels reached), ``fault`` (the level whose entry is missing, or
    ``None``), ``pfn`` and ``phys`` (``None`` on a fault). ``check`` takes the physical
    address (an int), ``"page fault"``, or a dict with any of those keys (indices also as
    a list, PGD first).

    >>> ex = Translate(7)
    >>> ex.check("page fault" if ex.answer["fault"] is None else 0x1234).correct
    False
    """

    kind = "translate"
    summary = "walk the 4-level page table for a virtual address (or find the page fault)"

    def _build(self):
        rng = self.rng
        m = _machine()
        # Another process uses frames and frees them in a random order first, so that the
        # frame numbers below look like those of a machine that has run for a while.
        other = m.spawn()
        n = rng.randrange(64, 192)
        base = other.mmap(0, n * P, _RW, F.MAP_PRIVATE | F.MAP_ANONYMOUS | F.MAP_POPULATE)
        order = list(range(n))
        rng.shuffle(order)
        for i in order:
            other.munmap(base + i * P, P)
        p = m.spawn()
        used = {pgtable.table_index(v.vm_start, 0) for v in p.mm.mm_mt}
        g = rng.choice([i for i in range(1, 255) if i not in used])
        u, k, t = rng.randrange(512), rng.randrange(511), rng.randrange(512)
        npages = rng.randrange(6, 13)
        start = (g << 39) | (u << 30) | (k << 21) | (t << 12)
        p.mmap(start, npages * P, _RW, _ANON_FIXED)
        touched = []
        for i in range(npages):
            r = rng.random()
            if r < 0.45:
                p.write(start + i * P, bytes([65 + i]))
                touched.append(i)
            elif r < 0.6:
                p.read(start + i * P, 1)
                touched.append(i)
        if not touched:
            p.write(start, b"A")
            touched.append(0)
        va = self._pick(rng, p, start, touched)
        self.machine, self.process = m, p
        self.params.update(pid=p.pid, vma=f"{start:#x}-{start + npages * P:#x}",
                           touched=len(touched), address=f"{va:#x}")
        self.answer = self._solve(p, va)
        self.question = self._question(p, va, g)
        self.worked_answer = self._explain(p, va)

    def _pick(self, rng, p, start, touched):
        """The address to translate: mostly a touched page; sometimes one whose walk stops
        at the PTE, PMD or PUD level (its entry there is empty)."""
        offset = rng.randrange(P)
        case = rng.choice(["mapped"] * 6 + ["PTE"] * 2 + ["PMD", "PUD"])
        if case != "mapped":
            level = _LEVELS.index(case)
            table = pgtable.walk(p.mm, start + touched[0] * P)[level][1]
            free = [i for i in range(512) if i not in table.entries]
            if free:
                va = table.base + (rng.choice(free) << pgtable.SHIFTS[level])
                for below in range(level + 1, 4):
                    va += rng.randrange(512) << pgtable.SHIFTS[below]
                return va + offset
        return start + rng.choice(touched) * P + offset

    @staticmethod
    def _solve(p, va):
        indices = {lvl: pgtable.table_index(va, i) for i, lvl in enumerate(_LEVELS)}
        entries, fault = {}, None
        for level, _table, _i, entry in pgtable.walk(p.mm, va):
            if not entry & F._PAGE_PRESENT:
                fault = level
                break
            entries[level] = entry
        pfn = pgtable.pte_pfn(entries["PTE"]) if fault is None else None
        return {"va": va, "indices": indices, "offset": va & (P - 1), "entries": entries,
                "fault": fault, "pfn": pfn,
                "phys": (pfn << F.PAGE_SHIFT) | (va & (P - 1)) if pfn is not None else None}

    @staticmethod
    def _tables(p, g):
        """The PGD and every table under its entry ``g``, level by level."""
        out = [p.mm.pgd]
        frontier = [p.mm.machine.phys.pages[pgtable.pte_pfn(p.mm.pgd.entries[g])].table]
        while frontier:
            out += sorted(frontier, key=lambda t: t.base)
            nxt = []
            for table in frontier:
                if table.level < 3:
                    nxt += [p.mm.machine.phys.pages[pgtable.pte_pfn(e)].table
                            for _, e in sorted(table.entries.items())]
            frontier = nxt
        return out

    def _question(self, p, va, g):
        lines = [
            f"Process {p.pid} runs on x86-64 with 4-level paging and 4 KiB pages. CR3 holds the",
            f"physical frame of its PGD: PFN {p.mm.pgd.page.pfn:#x}.",
            "",
            "A page-table entry is 64 bits: bit 0 Present, 1 R/W, 2 U/S, 5 Accessed, 6 Dirty,",
            "63 NX; bits 51..12 hold the PFN of the next table (or, in a PTE, of the page).",
            "Below are the PGD and the tables of the one branch of the tree that matters here;",
            "only their non-empty entries are listed.",
            "",
        ]
        for table in self._tables(p, g):
            lines.append(f"{_LEVELS[table.level]} table at PFN {table.page.pfn:#x}:")
            for i, entry in sorted(table.entries.items()):
                lines.append(f"  [{i:3d}] {_entry_text(entry)}")
        lines += ["", f"Translate the virtual address {va:#x}: the index used at each level, the",
                  "entry read there, and the physical address, or the level where the walk stops",
                  "with a page fault."]
        return "\n".join(lines)

    def _explain(self, p, va):
        a = self.answer
        out = [f"1. Split {va:#x} into four 9-bit indices and a 12-bit offset:"]
        for level in _LEVELS:
            hi, lo = _BITS[level]
            out.append(f"   {level} index = bits {hi}..{lo} = ({va:#x} >> {lo}) & 0x1ff = "
                       f"{a['indices'][level]}")
        out.append(f"   offset    = bits 11..0  = {va:#x} & 0xfff = {a['offset']:#x}")
        step = 2
        rows = pgtable.walk(p.mm, va)
        out.append(f"{step}. CR3 -> PGD at PFN {p.mm.pgd.page.pfn:#x}.")
        for level, table, index, entry in rows:
            step += 1
            head = f"{step}. {level} table at PFN {table.page.pfn:#x}, entry [{index}]"
            if not entry & F._PAGE_PRESENT:
                out.append(f"{head} is empty: not present. The walk stops here and the CPU "
                           "raises a page fault (#PF).")
                vma = p.mm.vma_lookup(va)
                if vma is not None:
                    out.append(f"   The kernel finds the VMA {vma.vm_start:#x}-{vma.vm_end:#x} "
                               f"{vma.perms()} there: a demand fault, which maps a page "
                               "(do_anonymous_page), and the access is retried.")
                else:
                    out.append("   No VMA covers the address: the kernel sends SIGSEGV "
                               "(SEGV_MAPERR).")
                break
            bits = " ".join(F.pte_flags_names(entry))
            target = pgtable.pte_pfn(entry)
            what = "the page" if level == "PTE" else "the next table"
            out.append(f"{head} = {_entry_text(entry)}: {bits}; {what} is at PFN {target:#x}.")
        if a["fault"] is None:
            pfn = a["pfn"]
            if p.mm.machine.phys.pages[pfn].kind == "zero":
                out.append(f"   PFN {pfn:#x} is the shared zero page: the page was only read "
                           "so far, and the PTE is read-only (no RW bit).")
            step += 1
            out.append(f"{step}. Physical address = (PFN << 12) | offset = {pfn << 12:#x} | "
                       f"{a['offset']:#x} = {a['phys']:#x}.")
        return "\n".join(out)

    # -- checking ---------------------------------------------------------------------------------
    def _walk_with(self, indices):
        """The physical address a walk with these indices reaches, or None."""
        m = self.machine
        table = self.process.mm.pgd
        for level in range(4):
            entry = table.entries.get(indices[level], 0)
            if not entry & F._PAGE_PRESENT:
                return None
            if level == 3:
                return pgtable.pte_pfn(entry) << 12
            table = m.phys.pages[pgtable.pte_pfn(entry)].table
        return None

    def _read_student(self, student):
        if isinstance(student, str) and re.search(r"fault", student, re.I):
            return {"fault": True}
        if isinstance(student, (int, str)) and not isinstance(student, bool):
            value = _int(student)
            if value is None:
                raise ValueError(f"could not read {student!r} as an address or 'page fault'")
            return {"phys": value}
        if isinstance(student, dict):
            got = dict(student)
            if isinstance(got.get("indices"), (list, tuple)):
                if len(got["indices"]) != 4:
                    raise ValueError("give four indices, PGD first")
                got["indices"] = dict(zip(_LEVELS, got["indices"]))
            return got
        raise ValueError(f"could not read an answer of type {type(student).__name__}")

    def check(self, student):
        try:
            got = self._read_student(student)
        except ValueError as exc:
            return Feedback(False, [str(exc)])
        a, va = self.answer, self.answer["va"]
        mistakes = []
        indices = got.get("indices") or {}
        if indices:
            mistakes += self._index_mistakes({k.upper(): _int(v) for k, v in indices.items()})
        if "offset" in got and _int(got["offset"]) != a["offset"]:
            mistakes.append(f"the offset is the low 12 bits of the address: {a['offset']:#x}")
        fault = got.get("fault")
        if fault and not (isinstance(fault, str) and fault.lower() in ("no", "none", "false")):
            if a["fault"] is None:
                mistakes.append("there is no page fault: every entry on the walk is present, "
                                f"and the PTE maps PFN {a['pfn']:#x}")
            elif isinstance(fault, str) and fault.upper() in _LEVELS and fault.upper() != a["fault"]:
                said = fault.upper()
                if said in a["entries"]:
                    mistakes.append(f"the {said} entry [{a['indices'][said]}] is present "
                                    f"({_entry_text(a['entries'][said])}); the walk stops at "
                                    f"the {a['fault']}, whose entry [{a['indices'][a['fault']]}] "
                                    "is empty")
                else:
                    mistakes.append(f"the walk never reaches the {said}: it stops at the "
                                    f"{a['fault']}, whose entry [{a['indices'][a['fault']]}] is "
                                    "empty")
        if "pfn" in got and got["pfn"] is not None:
            pfn = _int(got["pfn"])
            if a["fault"] is not None:
                mistakes.append(self._fault_text())
            elif pfn != a["pfn"]:
                if pfn == a["entries"]["PTE"] >> 12:
                    mistakes.append("the PFN is bits 51..12 of the PTE only: mask off the NX "
                                    f"bit (63) and other high bits, giving {a['pfn']:#x}")
                else:
                    mistakes.append(f"the PFN is bits 51..12 of the PTE {_entry_text(a['entries']['PTE'])}: "
                                    f"{a['pfn']:#x}")
        if "phys" in got and got["phys"] is not None:
            mistakes += self._phys_mistakes(_int(got["phys"]), indices)
        final = ("phys" in got and got["phys"] is not None) or bool(fault)
        if not final and not mistakes:
            mistakes.append("what you gave is right; now give the physical address, or say "
                            "'page fault'")
        return Feedback(not mistakes, _unique(mistakes))

    def _fault_text(self):
        a = self.answer
        return (f"the walk stops at the {a['fault']}: entry [{a['indices'][a['fault']]}] of the "
                f"{a['fault']} table is empty (not present), so the CPU raises a page fault; "
                "there is no physical address")

    def _index_mistakes(self, given):
        a, va = self.answer, self.answer["va"]
        true = a["indices"]
        if [given.get(l) for l in _LEVELS] == [true[l] for l in reversed(_LEVELS)] \
                and [true[l] for l in _LEVELS] != [true[l] for l in reversed(_LEVELS)]:
            return ["you listed the indices from the PTE up; the walk starts at the PGD "
                    "(bits 47..39)"]
        out = []
        for i, level in enumerate(_LEVELS):
            s = given.get(level)
            if s is None or s == true[level]:
                continue
            hi, lo = _BITS[level]
            others = [o for o in _LEVELS if o != level and true[o] == s and true[o] != true[level]]
            if others:
                out.append(f"you used the {others[0]} index as the {level} index: the {level} "
                           f"index is bits {hi}..{lo}, {true[level]}")
            elif s == va >> lo:
                out.append(f"mask the {level} index to 9 bits: ({va:#x} >> {lo}) & 0x1ff = "
                           f"{true[level]}")
            elif s in ((va >> (lo + 1)) & 511, (va >> (lo - 1)) & 511):
                out.append(f"the {level} index is bits {hi}..{lo} (shift by {lo}): {true[level]}")
            else:
                out.append(f"the {level} index is bits {hi}..{lo} of the address: "
                           f"({va:#x} >> {lo}) & 0x1ff = {true[level]}")
        return out

    def _phys_mistakes(self, phys, indices):
        a, va = self.answer, self.answer["va"]
        off = a["offset"]
        if phys is None:
            return ["could not read the physical address"]
        if a["fault"] is not None:
            return [self._fault_text()]
        if phys == a["phys"]:
            return []
        pte = a["entries"]["PTE"]
        if phys == a["pfn"]:
            return [f"that is the PFN, not the physical address: shift it left by 12 and add "
                    f"the offset: {a['phys']:#x}"]
        if phys == a["pfn"] << 12:
            return [f"you left out the page offset (the low 12 bits, {off:#x}): {a['phys']:#x}"]
        if phys in ((pte & ~0xfff) | off, pte | off, pte + off, pte):
            return ["you kept flag bits of the PTE (NX is bit 63, the low 12 bits are flags): "
                    f"the PFN is bits 51..12 only, so the address is {a['phys']:#x}"]
        if phys == va:
            return ["that is the virtual address: follow the four tables to the PFN"]
        if phys == (a["pfn"] << 12) | (va >> 12 & 0xfff):
            return [f"the offset is the low 12 bits of the address ({off:#x}), not the next 12"]
        for x in _LEVELS:
            for y in _LEVELS:
                if x == y:
                    continue
                swapped = [a["indices"][l] for l in _LEVELS]
                swapped[_LEVELS.index(x)] = a["indices"][y]
                reached = self._walk_with(swapped)
                if reached is not None and phys in (reached | off, reached) and \
                        a["indices"][x] != a["indices"][y]:
                    return [f"you used the {y} index as the {x} index: that walk reaches "
                            f"another page; the right one gives {a['phys']:#x}"]
        return [f"the physical address is (PFN {a['pfn']:#x} << 12) | offset {off:#x} = "
                f"{a['phys']:#x}"]


def _unique(items):
    out = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


# =================================================================================================
# maps
# =================================================================================================

_PROTS = {"r": F.PROT_READ, "rw": _RW, "rx": F.PROT_READ | F.PROT_EXEC, "none": F.PROT_NONE}
_PROT_C = {F.PROT_NONE: "PROT_NONE", F.PROT_READ: "PROT_READ", _RW: "PROT_READ|PROT_WRITE",
           F.PROT_READ | F.PROT_EXEC: "PROT_READ|PROT_EXEC"}
_MAPS_LINE = re.compile(r"(?:0x)?([0-9a-fA-F]+)\s*-\s*(?:0x)?([0-9a-fA-F]+)\s+([r-][w-][x-][ps])")


def _arena_state(p, npages):
    """Per page of the arena: ``(vma id, perms)`` or None."""
    out = []
    for i in range(npages):
        vma = p.mm.vma_lookup(_pg(i))
        out.append(None if vma is None else (vma.id, vma.perms()))
    return out


def _arena_lines(p, npages):
    return [(v.vm_start, v.vm_end, v.perms()) for v in p.mm.vmas_in(_pg(0), _pg(npages))]


def _line_text(line):
    return f"{line[0]:08x}-{line[1]:08x} {line[2]}"


class Maps(Exercise):
    """Predict the /proc/PID/maps lines of an arena after mmap/munmap/mprotect calls.

    The answer is a list of ``(start, end, perms)``; ``check`` takes maps text (only the
    ``start-end perms`` columns are read) or such a list.

    >>> ex = Maps(3)
    >>> ex.check("\\n".join(_line_text(l) for l in ex.answer)).correct
    True
    """

    kind = "maps"
    summary = "predict /proc/PID/maps after a few mmap/munmap/mprotect calls"
    NPAGES = 12

    def _build(self):
        rng = self.rng
        m = _machine()
        p = m.spawn()
        n = self.NPAGES
        first = ("mmap", rng.randrange(0, 4), rng.randrange(4, 9),
                 rng.choice(["rw", "rw", "r", "rx"]))
        nops = rng.randrange(3, 6)
        history = [_arena_state(p, n)]
        self.steps = []
        for index in range(nops):
            kind, start, count, prot = first if index == 0 else self._next_call(rng, p)
            count = min(count, n - start)
            if kind == "mmap":
                p.mmap(_pg(start), count * P, _PROTS[prot], _ANON_FIXED)
            elif kind == "munmap":
                p.munmap(_pg(start), count * P)
            else:
                p.mprotect(_pg(start), count * P, _PROTS[prot])
            self.steps.append(((kind, start, count, prot), list(m.events[-1].outcome),
                               _arena_lines(p, n)))
            history.append(_arena_state(p, n))
        self.machine, self.process, self.history = m, p, history
        self.answer = _arena_lines(p, n)
        self.params.update(pid=p.pid, arena=f"{_pg(0):#x}-{_pg(n):#x}", calls=nops)
        self.question = self._question(p)
        self.worked_answer = self._explain()

    def _next_call(self, rng, p):
        kind = rng.choice(["mmap", "munmap", "mprotect", "mprotect", "mprotect"])
        mapped = [i for i in range(self.NPAGES) if p.mm.vma_lookup(_pg(i)) is not None]
        if kind == "mprotect" and mapped:
            start = rng.choice(mapped)
            count = 1
            while (start + count < self.NPAGES and p.mm.vma_lookup(_pg(start + count))
                   and rng.random() < 0.7):
                count += 1
            return ("mprotect", start, count, rng.choice(list(_PROTS)))
        if kind == "munmap" and mapped:
            start = rng.choice(mapped)
            return ("munmap", start, rng.randrange(1, 4), None)
        return ("mmap", rng.randrange(0, self.NPAGES - 1), rng.randrange(1, 5),
                rng.choice(["rw", "rw", "r", "rx", "none"]))

    @staticmethod
    def _call_text(call):
        kind, start, count, prot = call
        if kind == "mmap":
            return (f"mmap({_pg(start):#x}, {count} * P, {_PROT_C[_PROTS[prot]]}, "
                    "MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, -1, 0)")
        if kind == "munmap":
            return f"munmap({_pg(start):#x}, {count} * P)"
        return f"mprotect({_pg(start):#x}, {count} * P, {_PROT_C[_PROTS[prot]]})"

    def _question(self, p):
        n = self.NPAGES
        lines = [f"Process {p.pid} has nothing mapped in {_pg(0):#x}-{_pg(n):#x} ({n} pages; "
                 f"P = {P:#x}). It makes these calls:"]
        for i, (call, _, _) in enumerate(self.steps, 1):
            lines.append(f"  {i}. {self._call_text(call)}")
        lines += ["It never touches the memory. Which lines does /proc/PID/maps show in that "
                  "range, in order?", "Write each as 'start-end perms', e.g. "
                  f"'{_pg(2):08x}-{_pg(4):08x} rw-p'."]
        return "\n".join(lines)

    def _explain(self):
        out = []
        for i, (call, outcome, lines) in enumerate(self.steps, 1):
            out.append(f"{i}. {self._call_text(call)}: {'; '.join(outcome)}")
            out += [f"     {_line_text(l)}" for l in lines] or ["     (nothing mapped)"]
        out += ["", "Answer:"] + ([f"  {_line_text(l)}" for l in self.answer] or ["  (nothing)"])
        out += ["", "Adjacent ranges with the same flags are one VMA: a new mapping merges with "
                "its neighbours (vma_merge_new_range), an mprotect'ed range with the neighbour it "
                "now matches (vma_merge_existing_range); otherwise the VMA is split."]
        return "\n".join(out)

    # -- checking ---------------------------------------------------------------------------------
    def _read_student(self, student):
        if isinstance(student, str):
            items = [l for l in student.splitlines() if l.strip()]
        elif isinstance(student, (list, tuple)):
            items = list(student)
        else:
            raise ValueError(f"could not read an answer of type {type(student).__name__}")
        out = []
        for item in items:
            if isinstance(item, str):
                match = _MAPS_LINE.search(item)
                if not match:
                    raise ValueError(f"could not read {item!r} as 'start-end perms'")
                out.append((int(match.group(1), 16), int(match.group(2), 16), match.group(3)))
            elif isinstance(item, (list, tuple)) and len(item) == 3:
                out.append((_int(item[0]), _int(item[1]), str(item[2])))
            else:
                raise ValueError(f"could not read {item!r} as (start, end, perms)")
        return out

    def _last_change(self, page):
        """The 1-based number of the call that last changed a page (or None)."""
        last = None
        for i in range(1, len(self.history)):
            if self.history[i][page] != self.history[i - 1][page]:
                last = i
        return last

    def _why_apart(self, left, right):
        a, b = (self.process.mm.vma_lookup(left[0]), self.process.mm.vma_lookup(right[0]))
        if a.perms() != b.perms():
            return "their permissions differ"
        diff = F.vm_flags_names(a.vm_flags ^ b.vm_flags)
        if diff:
            return f"their hidden flags differ ({', '.join(diff)})"
        if a.anon_vma is not b.anon_vma:
            return "they have different anon_vmas"
        return "the model keeps them apart"

    def check(self, student):
        try:
            got = self._read_student(student)
        except ValueError as exc:
            return Feedback(False, [str(exc)])
        truth = self.answer
        mistakes = []
        lo, hi = _pg(0), _pg(self.NPAGES)
        for line in got:
            if line in truth:
                continue
            start, end, perms = line
            if start >= end or start % P or end % P:
                mistakes.append(f"{_line_text(line)} is not a page-aligned range")
                continue
            pages = range((max(start, lo) - lo) // P, (min(end, hi) - lo) // P)
            holes = [i for i in pages if self.history[-1][i] is None]
            if start < lo or end > hi:
                mistakes.append(f"{_line_text(line)} reaches outside the arena")
            if holes:
                step = self._last_change(holes[0])
                why = (f"call {step} ({self._call_text(self.steps[step - 1][0])}) unmapped it"
                       if step else "it was never mapped")
                mistakes.append(f"{_pg(holes[0]):#x} is not mapped: {why}")
                continue
            covering = [t for t in truth if t[0] < end and start < t[1]]
            if len(covering) > 1:
                left, right = covering[0], covering[1]
                mistakes.append(f"{_line_text(left)} and {_line_text(right)} are separate VMAs "
                                f"(two lines): {self._why_apart(left, right)}")
                continue
            wrong = [i for i in pages if self.history[-1][i][1] != perms]
            if wrong:
                i = wrong[0]
                step = self._last_change(i)
                mistakes.append(f"{_pg(i):#x} is {self.history[-1][i][1]}, not {perms}: call "
                                f"{step} ({self._call_text(self.steps[step - 1][0])}) left it so")
            elif covering:
                whole = covering[0]
                mistakes.append(f"{_line_text(line)} is only part of the VMA {_line_text(whole)}: "
                                "adjacent ranges with the same flags merge into one VMA")
        for line in truth:
            if line not in got and not any(g[0] < line[1] and line[0] < g[1] for g in got):
                step = self._last_change((line[0] - lo) // P)
                mistakes.append(f"missing the line {_line_text(line)} (mapped since call {step})")
        if not mistakes and got != truth:
            mistakes.append("list the lines once each, in address order, as maps does")
        return Feedback(not mistakes, _unique(mistakes))


# =================================================================================================
# fork families: shared machinery of cow and rmap
# =================================================================================================

class _Family:
    """Processes named ``p``, ``child``, ``grandchild`` ... running a list of events on one
    arena, with each (process, page)'s frame tracked by identity: a token ``(who, event)``
    naming the write that made the frame, passed on by fork and kept by a reusing write."""

    def __init__(self, npages):
        self.machine = _machine()
        self.npages = npages
        p = self.machine.spawn()
        p.mmap(_pg(0), npages * P, _RW, _ANON_FIXED)
        self.procs = {"p": p}
        self.parent = {"p": None}
        self.born = {"p": 0}
        self.exited = {}
        self.tokens = {"p": {}}
        self.events = []           # (kind, who, page or child name, detail)
        for i in range(npages):
            p.write(_pg(i), f"p{i}".encode())
            self.tokens["p"][i] = ("p", 0)

    def live(self):
        return [n for n in self.procs if n not in self.exited]

    def pfn(self, name, page):
        entry = self.procs[name].pagemap(_pg(page))
        return entry.pfn if entry.present else None

    def fork(self, name):
        stem = "child" if name == "p" else "grand" + name.rstrip("0123456789")
        new = stem
        k = 2
        while new in self.procs:
            new, k = f"{stem}{k}", k + 1
        self.procs[new] = self.procs[name].fork()
        self.parent[new] = name
        self.events.append(("fork", name, new, None))
        self.born[new] = len(self.events)
        self.tokens[new] = dict(self.tokens[name])
        return new

    def write(self, name, page):
        """A write: ``copy`` (COW), ``reuse`` (write fault, no copy) or ``no fault`` (the PTE
        was writable already)."""
        mm = self.procs[name].mm
        writable = pgtable.get_pte(mm, _pg(page)) & F._PAGE_RW
        before = self.pfn(name, page)
        self.procs[name].write(_pg(page), f"{name[0]}{page}".encode())
        copied = self.pfn(name, page) != before
        self.events.append(("write", name, page,
                            "copy" if copied else "no fault" if writable else "reuse"))
        if copied:
            self.tokens[name][page] = (name, len(self.events))

    def unmap(self, name, page):
        self.procs[name].munmap(_pg(page), P)
        self.events.append(("munmap", name, page, None))
        self.tokens[name].pop(page, None)

    def exit(self, name):
        self.procs[name].exit()
        self.events.append(("exit", name, None, None))
        self.exited[name] = len(self.events)

    def event_text(self, i):
        kind, who, what, detail = self.events[i - 1]
        if kind == "fork":
            return f"{who} forks {what}"
        if kind == "write":
            return f"{who} writes page {what}"
        if kind == "munmap":
            return f"{who} unmaps page {what}"
        return f"{who} exits"

    def setup_text(self):
        return (f"Process p maps {self.npages} pages at {_pg(0):#x} (pages 0-{self.npages - 1}; "
                "private, anonymous, read-write) and writes to every one of them. Then:")

    def events_text(self):
        return [f"  {i}. {self.event_text(i)}" for i in range(1, len(self.events) + 1)]

    def first_write(self, name, page, detail):
        """The number of the first write of ``name`` to ``page`` that was a ``detail``."""
        for i, (kind, who, what, how) in enumerate(self.events, 1):
            if kind == "write" and who == name and what == page and how == detail:
                return i
        return None

    def ancestors(self, name):
        out = []
        while self.parent.get(name):
            name = self.parent[name]
            out.append(name)
        return out


def _random_events(rng, fam, nevents, max_procs=3, unmap=False):
    fam.fork("p")
    for _ in range(nevents - 1):
        live = fam.live()
        r = rng.random()
        if r < 0.25 and len(fam.procs) < max_procs:
            fam.fork(rng.choice(live))
        elif r < 0.3 and len(live) > 2:
            fam.exit(rng.choice([n for n in live if n != "p"]))
        elif unmap and r < 0.38:
            name = rng.choice(live)
            mapped = [i for i in range(fam.npages) if i in fam.tokens[name]]
            if len(mapped) > 1:
                fam.unmap(name, rng.choice(mapped))
        else:
            name = rng.choice(live)
            mapped = [i for i in range(fam.npages) if i in fam.tokens[name]]
            fam.write(name, rng.choice(mapped))


def _names_text(names):
    return "+".join(names)


def _read_names(value, known):
    """Process names from a student: a list, or text such as ``"p+child"`` / ``"p, child"``
    (``-`` for none). Raises ValueError for a name that is not in ``known``."""
    if isinstance(value, str):
        value = [v for v in re.split(r"[+,\s]+", value.strip()) if v and v != "-"]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"could not read {value!r} as process names")
    names = [str(v).strip() for v in value]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"there is no process named {unknown[0]!r} "
                         f"(the processes are {', '.join(known)})")
    return names


# =================================================================================================
# cow
# =================================================================================================

class Cow(Exercise):
    """Which processes share each page's frame after forks and writes, with mapcounts.

    The answer is a list, one dict per page: ``groups`` (lists of process names that map one
    frame; the frame's mapcount is the group's size) and ``original`` (the processes that
    still map the frame p wrote before the first fork). ``check`` takes a dict page ->
    ``"p+child | grandchild"`` (a ``(n)`` after a group gives its mapcount), or page ->
    list of groups, or page -> ``{"groups": ..., "mapcount": [...], "original": [...]}``,
    or the same as text, one ``page N: ...; original: ...`` line per page.

    >>> ex = Cow(5)
    >>> ex.check(ex.answer_text()).correct
    True
    """

    kind = "cow"
    summary = "which pages share frames after fork and writes, and their mapcounts"

    def _build(self):
        rng = self.rng
        fam = _Family(rng.randrange(3, 6))
        _random_events(rng, fam, rng.randrange(4, 8))
        if not any(e[0] == "write" for e in fam.events):
            fam.write(fam.live()[-1], 0)
        self.family = fam
        self.machine = fam.machine
        self.answer = []
        for page in range(fam.npages):
            groups = {}
            for name in fam.live():
                groups.setdefault(fam.pfn(name, page), []).append(name)
            original = [n for n in fam.live() if fam.tokens[n].get(page) == ("p", 0)]
            self.answer.append({"groups": list(groups.values()), "original": original})
            for pfn, names in groups.items():
                assert self.machine.kpagecount(pfn) == len(names), (pfn, names)
        self.params.update(pages=fam.npages, events=len(fam.events),
                           processes=_names_text(list(fam.procs)))
        self.question = "\n".join(
            [fam.setup_text()] + fam.events_text()
            + ["For each page: which processes map the same physical frame, and what is each "
               "frame's", "mapcount (/proc/kpagecount)? Which processes still map the frame p "
               "wrote before the", "first fork?",
               "Answer one line per page, e.g. 'page 0: p+child (2) | grandchild (1); "
               "original: p+child'."])
        self.worked_answer = self._explain()

    def answer_text(self):
        lines = []
        for page, item in enumerate(self.answer):
            groups = " | ".join(f"{_names_text(g)} ({len(g)})" for g in item["groups"])
            lines.append(f"page {page}: {groups}; original: {_names_text(item['original']) or '-'}")
        return "\n".join(lines)

    def _explain(self):
        fam = self.family
        out = ["After the writes before the fork, p maps every page with a frame of its own "
               "(mapcount 1)."]
        for i in range(1, len(fam.events) + 1):
            kind, who, what, detail = fam.events[i - 1]
            text = f"{i}. {fam.event_text(i)}: "
            if kind == "fork":
                text += (f"{what} gets copies of {who}'s PTEs, write-protected in both; every "
                         "frame's mapcount goes up by one.")
            elif kind == "write" and detail == "copy":
                text += (f"the frame is shared, so the write fault copies it: {who} gets a "
                         "new frame (mapcount 1), the old one loses one mapping.")
            elif kind == "write" and detail == "reuse":
                text += (f"{who} is the only one left mapping the frame (refcount 1), so "
                         "do_wp_page() reuses it: no copy, it just becomes writable.")
            elif kind == "write":
                text += (f"{who}'s PTE is writable already (its own page since an earlier "
                         "write): no fault at all.")
            elif kind == "exit":
                text += f"{who}'s PTEs are gone; each frame it mapped loses one mapping."
            out.append(text)
        out += ["", "Answer:", self.answer_text()]
        return "\n".join(out)

    # -- checking ---------------------------------------------------------------------------------
    def _read_groups(self, value):
        """``(groups, mapcounts or None, original or None)`` from one page's answer."""
        original = None
        if isinstance(value, dict):
            groups, counts = self._read_groups(value.get("groups", []))[:2]
            if value.get("mapcount") is not None:
                counts = [_int(c) for c in value["mapcount"]]
            if value.get("original") is not None:
                original = self._names(value["original"])
            return groups, counts, original
        if isinstance(value, str):
            if ";" in value:
                value, _, rest = value.partition(";")
                match = re.search(r"original\s*:?\s*(.*)", rest, re.I)
                if match:
                    original = self._names(match.group(1))
            groups, counts = [], []
            for part in value.split("|"):
                match = re.search(r"\((\d+)\)", part)
                counts.append(int(match.group(1)) if match else None)
                groups.append(self._names(re.sub(r"\(\d+\)", "", part)))
            groups = [g for g in groups if g]
            return groups, counts if all(c is not None for c in counts) else None, original
        if isinstance(value, (list, tuple)):
            return [self._names(g) for g in value], None, None
        raise ValueError(f"could not read {value!r} as groups of processes")

    def _names(self, value):
        return _read_names(value, self.family.procs)

    def _read_student(self, student):
        if isinstance(student, str):
            pages = {}
            for line in student.splitlines():
                match = re.match(r"\s*page\s*(\d+)\s*:\s*(.*)", line, re.I)
                if match:
                    pages[int(match.group(1))] = match.group(2)
                elif line.strip():
                    raise ValueError(f"could not read {line!r} (write 'page N: ...')")
            student = pages
        if isinstance(student, (list, tuple)):
            student = dict(enumerate(student))
        if not isinstance(student, dict):
            raise ValueError(f"could not read an answer of type {type(student).__name__}")
        return {int(k): self._read_groups(v) for k, v in student.items()}

    def check(self, student):
        try:
            got = self._read_student(student)
        except ValueError as exc:
            return Feedback(False, [str(exc)])
        fam = self.family
        mistakes = []
        for page, item in enumerate(self.answer):
            if page not in got:
                mistakes.append(f"page {page}: no answer")
                continue
            groups, counts, original = got[page]
            mistakes += self._page_mistakes(page, item, groups, counts, original)
        extra = [k for k in got if not 0 <= k < fam.npages]
        if extra:
            mistakes.append(f"there is no page {extra[0]}: the arena has pages "
                            f"0-{fam.npages - 1}")
        return Feedback(not mistakes, _unique(mistakes))

    def _page_mistakes(self, page, item, groups, counts, original):
        fam = self.family
        out = []
        named = [n for g in groups for n in g]
        for name in named:
            if name in fam.exited:
                out.append(f"page {page}: {name} exited at step {fam.exited[name]}; it maps "
                           "nothing any more")
        for name in fam.live():
            if name not in named:
                out.append(f"page {page}: you left out {name}")
        same = {}
        for g in item["groups"]:
            for n in g:
                same[n] = tuple(g)
        said = {}
        for g in groups:
            for n in g:
                said[n] = tuple(g)
        live = fam.live()
        for i, a in enumerate(live):
            for b in live[i + 1:]:
                if a not in said or b not in said:
                    continue
                truly, claims = b in same[a], b in said[a]
                if claims and not truly:
                    out.append(f"page {page}: {a} and {b} do not share a frame: "
                               + self._split_reason(page, a, b))
                elif truly and not claims:
                    since = max(fam.born[a], fam.born[b])
                    out.append(f"page {page} is still shared by {a} and {b}: neither wrote it "
                               f"after step {since}, when {b if fam.born[b] >= fam.born[a] else a} "
                               "was forked")
        if counts is not None and not out:
            for g, c in zip(groups, counts):
                if c != len(g):
                    out.append(f"page {page}: the frame of {_names_text(g)} has mapcount "
                               f"{len(g)}, one PTE in each process that maps it, not {c}")
        if original is not None:
            true_orig = item["original"]
            for name in original:
                if name not in true_orig and name in fam.live():
                    token = fam.tokens[name][page]
                    out.append(f"page {page}: {name} no longer maps the original frame: "
                               + (f"its write at step {token[1]} copied the page"
                                  if token[0] == name else
                                  f"it was forked at step {fam.born[name]} from {token[0]}, "
                                  f"which had its own copy since step {token[1]}"))
            for name in true_orig:
                if name not in original:
                    step = fam.first_write(name, page, "reuse")
                    if step:
                        out.append(f"page {page}: {name} still maps the original frame: at its "
                                   f"write at step {step} no other process mapped that frame "
                                   "any more, so do_wp_page() reused it instead of copying")
                    else:
                        out.append(f"page {page}: {name} still maps the original frame: it "
                                   "never wrote the page")
        return out

    def _split_reason(self, page, a, b):
        fam = self.family
        ta, tb = fam.tokens[a].get(page), fam.tokens[b].get(page)
        for name, token in ((a, ta), (b, tb)):
            if token and token[0] == name and token[1] > 0 and token != (ta if name == b else tb):
                return (f"{name} wrote page {page} at step {token[1]}, and the write fault gave "
                        f"{name} its own copy (do_wp_page)")
        return "each maps a different frame"


# =================================================================================================
# rmap
# =================================================================================================

class Rmap(Exercise):
    """Which processes' VMAs an rmap walk of one page visits, and which of them map it.

    The answer is a dict: ``pfn``, ``anon_vma`` (its id), ``visits`` and ``mapped`` (lists
    of process names in creation order). ``check`` takes a dict with ``visits`` and/or
    ``mapped``, or just a list of names (taken as ``mapped``).

    >>> ex = Rmap(2)
    >>> ex.check({"visits": ex.answer["visits"], "mapped": ex.answer["mapped"]}).correct
    True
    """

    kind = "rmap"
    summary = "which VMAs of which processes an rmap walk of a page visits"

    def _build(self):
        rng = self.rng
        fam = _Family(rng.randrange(2, 5))
        _random_events(rng, fam, rng.randrange(3, 7), unmap=True)
        self.family = fam
        m = self.machine = fam.machine
        choices = [(n, i) for n in fam.live() for i in range(fam.npages) if fam.pfn(n, i)]
        who, page = rng.choice(choices)
        pfn = fam.pfn(who, page)
        frame = m.phys.pages[pfn]
        anon_vma = frame.mapping
        pid_name = {proc.pid: n for n, proc in fam.procs.items()}
        visits = []
        for avc in anon_vma.rb_root:
            if vma_address(frame, avc.vma) is not None:
                visits.append(pid_name[avc.vma.vm_mm.owner.pid])
        order = list(fam.procs)
        mapped = [pid_name[proc.pid] for proc, _, _ in _rmap(m, pfn)]
        self.target = (who, page)
        self.answer = {"pfn": pfn, "anon_vma": anon_vma.id,
                       "visits": sorted(set(visits), key=order.index),
                       "mapped": sorted(set(mapped), key=order.index)}
        self.params.update(pages=fam.npages, events=len(fam.events),
                           processes=_names_text(order), target=f"{who} page {page}")
        self.question = "\n".join(
            [fam.setup_text()] + fam.events_text()
            + [f"The kernel now wants to reclaim the frame that {who} maps at page {page} "
               f"({_pg(page):#x}),", f"PFN {pfn:#x}. rmap_walk() looks up the page's anon_vma "
               "and visits the VMAs chained to it", "whose range covers the page.",
               "(a) Which processes' VMAs does the walk visit?",
               "(b) In which of them does it find the page mapped?"])
        self.worked_answer = self._explain()

    def _creator(self):
        fam = self.family
        who, page = self.target
        return fam.tokens[who][page]

    def _explain(self):
        fam, a = self.family, self.answer
        who, page = self.target
        maker, step = self._creator()
        made = (f"p's write before the first fork" if step == 0 else
                f"{maker}'s write at step {step} (a COW copy)")
        out = [f"The frame at PFN {a['pfn']:#x} was allocated by {made}; a new anonymous page "
               f"goes to the anon_vma of the faulting VMA, here anon_vma {a['anon_vma']}.",
               "The anon_vma trees (* marks the VMA whose own anon_vma it is; "
               + ", ".join(f"pid {proc.pid} is {n}" for n, proc in fam.procs.items()
                           if n not in fam.exited) + "):", ""]
        out += ["  " + line for line in anon_vma_tree_text(self.machine, _pg(page)).splitlines()]
        out += ["", f"The walk visits the VMAs on anon_vma {a['anon_vma']} that cover page "
                f"{page}: {', '.join(a['visits']) or 'none'}."]
        for name in fam.live():
            out.append("  " + self._why(name, page))
        out += ["", f"(a) visits: {', '.join(a['visits']) or 'none'}",
                f"(b) mapped: {', '.join(a['mapped']) or 'none'}"]
        return "\n".join(out)

    def _why(self, name, page):
        """One sentence: why the walk does or does not visit/find ``name``."""
        fam, a = self.family, self.answer
        target = self._creator()
        token = fam.tokens[name].get(page)
        if name in a["mapped"]:
            return (f"{name}: visited, and its PTE maps PFN {a['pfn']:#x}" +
                    ("" if target[0] == name else
                     f" (inherited at fork, step {fam.born[name]}, and never written since)"))
        if name in a["visits"]:
            if token is None:
                return (f"{name}: visited, but it unmapped page {page} "
                        f"(step {self._unmapped_at(name, page)}): no PTE")
            if token[0] == name and token[1] > 0:
                return (f"{name}: visited, but its write at step {token[1]} gave it its own "
                        "copy: its PTE maps another frame")
            return (f"{name}: visited, but it maps an older frame of page {page}: it was forked "
                    f"at step {fam.born[name]}, before this copy was made")
        if token is None and self._unmapped_at(name, page):
            return (f"{name}: not visited: it unmapped page {page} at step "
                    f"{self._unmapped_at(name, page)}, so no VMA of it covers the page")
        maker = target[0]
        if name in fam.ancestors(maker):
            return (f"{name}: not visited: it is an ancestor of {maker}, and a parent's VMA is "
                    f"never chained to its children's anon_vmas")
        return (f"{name}: not visited: its VMA is not chained to anon_vma {a['anon_vma']}, which "
                f"belongs to {maker}'s line of the family")

    def _unmapped_at(self, name, page):
        for i, (kind, who, what, _) in enumerate(self.family.events, 1):
            if kind == "munmap" and who == name and what == page:
                return i
        return None

    def check(self, student):
        fam = self.family
        if isinstance(student, (list, tuple, str)):
            student = {"mapped": student}
        if not isinstance(student, dict) or not ({"visits", "mapped"} & set(student)):
            return Feedback(False, ["give the processes as a list, or a dict with 'visits' "
                                    "and 'mapped'"])
        who, page = self.target
        mistakes = []
        for key in ("mapped", "visits"):
            if key not in student:
                continue
            try:
                names = _read_names(student[key], fam.procs)
            except ValueError as exc:
                return Feedback(False, [str(exc)])
            truth = self.answer[key]
            for name in names:
                if name in fam.exited:
                    mistakes.append(f"{name} exited at step {fam.exited[name]}: it has no VMAs")
                elif name not in truth:
                    mistakes.append(self._why(name, page))
            for name in truth:
                if name not in names:
                    mistakes.append(f"you left out {name}. " + self._why(name, page))
        return Feedback(not mistakes, _unique(mistakes))


def _rmap(machine, pfn):
    from ..core.rmap import rmap_walk
    return list(rmap_walk(machine, pfn))


# =================================================================================================
# tlb
# =================================================================================================

def _simulate(initial, lookups, size, policy, shared=False, flushes=True):
    """A plain cache simulation, used only to diagnose an answer (``what if the TLB were
    FIFO / shared / never flushed``). ``lookups`` are ``(cpu, label)`` or ``(cpu, None,
    dropped)`` flushes; returns the list of ``"hit"``/``"miss"``."""
    contents = {cpu: list(labels) for cpu, labels in initial.items()}
    if shared:
        one = []
        for labels in initial.values():
            one += [label for label in labels if label not in one]
        contents = {cpu: one[-size:] for cpu in initial}
        one = contents[0]
        contents = {cpu: one for cpu in initial}          # the same list for every CPU
    out = []
    for cpu, label, *dropped in lookups:
        tlb = contents[cpu]
        if label is None:
            if flushes:
                for gone in dropped[0]:
                    if gone in tlb:
                        tlb.remove(gone)
            continue
        if label in tlb:
            out.append("hit")
            if policy == "lru":
                tlb.remove(label)
                tlb.append(label)
        else:
            out.append("miss")
            if len(tlb) >= size:
                tlb.pop(0)
            tlb.append(label)
    return out


class Tlb(Exercise):
    """Hits, misses and flushes of the per-CPU TLBs for a sequence of accesses by a
    process and, on two CPUs, its thread; one munmap or mprotect may flush on the way.

    The answer is a dict: ``results`` (``"hit"``/``"miss"`` for each numbered line, a
    system call counting as its CPU's lookup of the kernel's entry code ``K``),
    ``flushed`` (step -> the CPUs whose TLB the step flushed), ``flushes`` (the
    ``tlb_flush`` records) and ``totals`` (CPU -> ``{"hits": .., "misses": ..}``).
    ``check`` takes the results as a list, as text (``"M H H M"``), or a dict with any of
    ``results``, ``flushed`` and ``totals``.

    >>> ex = Tlb(4)
    >>> ex.check(ex.answer["results"]).correct
    True
    """

    kind = "tlb"
    summary = "hits, misses and flushes of per-CPU TLBs for an access sequence"

    def _build(self):
        rng = self.rng
        cpus = rng.choice([1, 2, 2])
        size = rng.choice([2, 3, 3, 4])
        policy = rng.choice(["lru", "lru", "fifo"])
        npages = rng.randrange(4, 7)
        m = Machine(ram="64M", history=False, trace=False, cpus=cpus, tlb_entries=size,
                    tlb_policy=policy)
        p = m.spawn()
        p.mmap(_pg(0), npages * P, _RW, _ANON_FIXED)
        for i in range(npages):
            p.write(_pg(i), bytes([65 + i]))
        tasks = {"p": p}
        if cpus == 2:
            tasks["t"] = p.clone_thread(cpu=1)
        self.machine, self.tasks, self.npages = m, tasks, npages
        self.initial = {cpu.number: self._contents(cpu) for cpu in m.cpus}
        self.events, self.history = [], []
        writable = list(range(npages))
        readable = list(range(npages))
        syscall_at = rng.randrange(3, 8) if rng.random() < 0.7 else None
        for index in range(1, rng.randrange(7, 11) + 1):
            name = rng.choice(list(tasks))
            if index == syscall_at:
                event = self._syscall(rng, p, writable, readable)
            else:
                recent = [l for l in self._contents(m.cpus[tasks[name].cpu])
                          if l != "K" and int(l) in readable]
                page = int(rng.choice(recent)) if recent and rng.random() < 0.5 else \
                    rng.choice(readable)
                write = page in writable and rng.random() < 0.4
                event = self._access(name, page, write)
            self.events.append(event)
        self.answer = self._answer()
        self.params.update(cpus=cpus, tlb_entries=size, policy=policy, pages=npages,
                           steps=len(self.events))
        self.question = self._question()
        self.worked_answer = self._explain()

    @staticmethod
    def _contents(cpu):
        """The TLB's entries, oldest first, as labels: arena page numbers, K, or addresses."""
        out = []
        for entry in cpu.tlb:
            addr = entry.vpn << F.PAGE_SHIFT
            if entry.pcid == -1:
                out.append("K")
            elif ARENA <= addr < ARENA + 64 * P:
                out.append(str((addr - ARENA) // P))
            else:
                out.append(f"{addr:#x}")
        return out

    def _lookup(self, cpu, do):
        """Run ``do``; the TLB lookup it made on ``cpu`` (``"hit"`` or ``"miss"``) and the
        flush records it produced."""
        before = dict(cpu.tlb.stats)
        logged = len(self.machine.tlb_log)
        do()
        delta = {k: v - before.get(k, 0) for k, v in cpu.tlb.stats.items()
                 if v != before.get(k, 0)}
        result = "hit" if delta.get("hit") == 1 and not delta.get("miss") else \
            "miss" if delta.get("miss") == 1 and not delta.get("hit") else None
        assert result is not None and not ({"permission_miss", "dirty_walk"} & set(delta)), delta
        return result, list(self.machine.tlb_log)[logged:]

    def _access(self, name, page, write):
        task = self.tasks[name]
        cpu = self.machine.cpus[task.cpu]
        do = (lambda: task.write(_pg(page), b"w")) if write else (lambda: task.read(_pg(page), 1))
        result, flushes = self._lookup(cpu, do)
        assert not flushes, flushes
        event = {"who": name, "cpu": cpu.number, "kind": "write" if write else "read",
                 "page": str(page), "label": str(page), "result": result, "flushes": []}
        self.history.append({c.number: self._contents(c) for c in self.machine.cpus})
        return event

    def _syscall(self, rng, p, writable, readable):
        cpu = self.machine.cpus[p.cpu]
        if len(writable) > 2 and rng.random() < 0.5:
            page = rng.choice(writable)
            writable.remove(page)
            call, text = "mprotect", f"mprotect(page {page}, PROT_READ)"
            do = lambda: p.mprotect(_pg(page), P, F.PROT_READ)  # noqa: E731
        else:
            page = rng.choice(readable)
            readable.remove(page)
            if page in writable:
                writable.remove(page)
            call, text = "munmap", f"munmap(page {page})"
            do = lambda: p.munmap(_pg(page), P)  # noqa: E731
        before = {c.number: self._contents(c) for c in self.machine.cpus}
        result, flushes = self._lookup(cpu, do)
        self.history.append({c.number: self._contents(c) for c in self.machine.cpus})
        # One page changed: every flush is an INVLPG of that page (pages:1); any other
        # entry that went was evicted by the lookup of K.
        assert all(f.pages == 1 for f in flushes), flushes
        flushed = {f.cpu for f in flushes if f.reason != "TLB_REMOTE_SEND_IPI"}
        dropped = {n: [str(page)] if n in flushed and str(page) in before[n]
                   and str(page) not in self.history[-1][n] else [] for n in before}
        return {"who": "p", "cpu": cpu.number, "kind": call, "page": str(page), "label": "K",
                "result": result, "text": text, "dropped": dropped,
                "flushes": [(f.cpu, f.reason, f.pages) for f in flushes]}

    def _answer(self):
        totals = {c: {"hits": 0, "misses": 0} for c in self.initial}
        flushed = {}
        for step, event in enumerate(self.events, 1):
            totals[event["cpu"]]["hits" if event["result"] == "hit" else "misses"] += 1
            cpus = sorted({c for c, reason, _ in event["flushes"]
                           if reason != "TLB_REMOTE_SEND_IPI"})
            if event["flushes"]:
                flushed[step] = cpus
        return {"results": [e["result"] for e in self.events], "flushed": flushed,
                "flushes": {s: e["flushes"] for s, e in enumerate(self.events, 1) if e["flushes"]},
                "totals": totals}

    def _event_text(self, event):
        if event["kind"] in ("munmap", "mprotect"):
            return f"{event['who']} calls {event['text']}"
        return f"{event['who']} {event['kind']}s page {event['page']}"

    def _question(self):
        names = " and its thread t on CPU 1" if "t" in self.tasks else ""
        policy = ("LRU replacement (a hit makes the entry the most recently used)"
                  if self.params["policy"] == "lru" else
                  "FIFO replacement (the oldest entry goes; a hit changes nothing)")
        lines = [
            f"Process p runs on CPU 0{names}. p has {self.npages} pages at {_pg(0):#x} "
            f"(pages 0-{self.npages - 1}),",
            "all written before, so their PTEs are present, writable and dirty.",
            ("Each CPU has a TLB of its own" if len(self.initial) > 1 else "The CPU's TLB has")
            + f": {self.params['tlb_entries']} entries, fully associative, {policy}.",
            "A system call first fetches the kernel's entry code, whose translation (K, a "
            "global entry)", "takes an entry in that CPU's TLB too.",
            "The TLBs hold, oldest entry first:"]
        for cpu, labels in self.initial.items():
            lines.append(f"  CPU {cpu}: {', '.join(labels) or '(empty)'}")
        lines.append("Then, in this order:")
        for step, event in enumerate(self.events, 1):
            lines.append(f"  {step}. {self._event_text(event)}")
        lines += ["For each line: does its TLB lookup hit or miss (a system call's lookup is "
                  "the one of K)?", "Which CPUs' TLBs are flushed, and when? How many hits and "
                  "misses does each CPU have?"]
        return "\n".join(lines)

    def _explain(self):
        out = []
        for step, event in enumerate(self.events, 1):
            cpu, label = event["cpu"], event["label"]
            before = self.initial[cpu] if step == 1 else self.history[step - 2][cpu]
            after = self.history[step - 1]
            what = "K (the syscall's entry code)" if label == "K" else f"page {label}"
            line = (f"{step}. {self._event_text(event)}: CPU {cpu} looks up {what}: "
                    f"{event['result'].upper()}")
            if event["result"] == "miss":
                evicted = [l for l in before if l not in after[cpu]
                           and l not in event.get("dropped", {}).get(cpu, [])]
                line += " (page walk, new entry" + (
                    f"; evicts {evicted[0]}, the " + ("least recently used" if
                                                      self.params["policy"] == "lru" else
                                                      "oldest") + ")" if evicted else ")")
            out.append(line)
            for c, reason, pages in event["flushes"]:
                gone = event["dropped"][c]
                out.append(f"   tlb_flush on CPU {c}: {reason}, pages:{pages}"
                           + (f" (drops page {', '.join(gone)})" if gone and
                              reason != "TLB_REMOTE_SEND_IPI" else ""))
            out.append("   TLBs now: " + "; ".join(f"CPU {c}: {', '.join(ls) or '-'}"
                                                     for c, ls in after.items()))
        out.append("")
        for cpu, t in self.answer["totals"].items():
            out.append(f"CPU {cpu}: {t['hits']} hits, {t['misses']} misses")
        if self.answer["flushed"]:
            for step, cpus in self.answer["flushed"].items():
                out.append(f"Step {step} flushes the TLB of CPU {' and '.join(map(str, cpus))}"
                           + (": the IPI reaches every CPU that runs the address space"
                              if len(cpus) > 1 else ": no other CPU runs this address space"))
        return "\n".join(out)

    # -- checking ---------------------------------------------------------------------------------
    def _lookups(self):
        """The sequence for :func:`_simulate`: lookups and flushes, per CPU."""
        out = []
        for event in self.events:
            out.append((event["cpu"], event["label"]))
            for cpu, gone in event.get("dropped", {}).items():
                out.append((cpu, None, gone))
        return out

    def _diagnose(self, results):
        """Name a whole-answer misconception, if the answer is exactly what it gives."""
        size, policy = self.params["tlb_entries"], self.params["policy"]
        other = "fifo" if policy == "lru" else "lru"
        checks = [
            (dict(policy=other), f"your answer is what a {other.upper()} TLB would give; this "
             f"one is {policy.upper()}: " + ("a hit makes the entry the most recently used"
                                             if policy == "lru" else
                                             "a hit does not change the order, the oldest "
                                             "entry goes")),
            (dict(flushes=False), "your answer ignores the flush: the "
             + "/".join(sorted({e['kind'] for e in self.events if e['flushes']}))
             + " removes that page's entry from every CPU that runs the address space"),
        ]
        if len(self.initial) > 1:
            checks.append((dict(shared=True), "each CPU has a TLB of its own: the two CPUs "
                           "do not share entries"))
        for kwargs, text in checks:
            merged = {"policy": policy, **kwargs}
            if _simulate(self.initial, self._lookups(), size, **merged) == results and \
                    results != self.answer["results"]:
                return text
        return None

    def _why(self, step):
        """Why line ``step`` hits or misses."""
        event = self.events[step - 1]
        cpu, label = event["cpu"], event["label"]
        name = "K" if label == "K" else f"page {label}"
        states = [self.initial[cpu]] + [h[cpu] for h in self.history[:step - 1]]
        if event["result"] == "hit":
            since = next(i for i in range(len(states) - 1, -1, -1)
                         if label not in states[i] or i == 0)
            when = "from the start" if label in states[0] and since == 0 else \
                f"since line {since + 1}"
            return (f"line {step} is a hit: {name} was still in CPU {cpu}'s TLB ({when})")
        gone_at = None
        for i in range(len(states) - 1, 0, -1):
            if label in states[i - 1] and label not in states[i]:
                gone_at = i
                break
        if gone_at is None:
            where = "CPU 1 runs t, whose TLB" if cpu == 1 else f"CPU {cpu}'s TLB"
            return (f"line {step} is a miss: {name} had not been in {where} before (each CPU "
                    "has its own TLB)" if label not in states[0] else
                    f"line {step} is a miss: {name} is not in CPU {cpu}'s TLB")
        cause = self.events[gone_at - 1]
        if cause["flushes"] and label in cause["dropped"].get(cpu, []):
            return (f"line {step} is a miss: the {cause['kind']} at line {gone_at} flushed "
                    f"{name} from CPU {cpu}'s TLB")
        rule = "least recently used" if self.params["policy"] == "lru" else "oldest"
        return (f"line {step} is a miss: {name} was evicted from CPU {cpu}'s TLB at line "
                f"{gone_at}, as the {rule} entry when {cause['label']} came in")

    @staticmethod
    def _read_results(value):
        if isinstance(value, str):
            value = re.findall(r"hit|miss|h|m", value.lower())
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"could not read {value!r} as hits and misses")
        out = []
        for item in value:
            word = str(item).strip().lower()
            if word in ("h", "hit"):
                out.append("hit")
            elif word in ("m", "miss"):
                out.append("miss")
            else:
                raise ValueError(f"could not read {item!r} as 'hit' or 'miss'")
        return out

    def check(self, student):
        if not isinstance(student, dict):
            student = {"results": student}
        mistakes = []
        try:
            results = (self._read_results(student["results"]) if "results" in student
                       else None)
        except ValueError as exc:
            return Feedback(False, [str(exc)])
        truth = self.answer["results"]
        if results is not None:
            if len(results) != len(truth):
                return Feedback(False, [f"give one result for each of the {len(truth)} lines"])
            diagnosis = self._diagnose(results)
            if diagnosis:
                mistakes.append(diagnosis)
            mistakes += [self._why(i) for i, (a, b) in enumerate(zip(results, truth), 1)
                         if a != b]
        if student.get("flushed") is not None:
            said = {int(k): sorted(int(c) for c in v) for k, v in student["flushed"].items()}
            for step, cpus in self.answer["flushed"].items():
                got = said.get(step, [])
                if got != cpus:
                    extra = [c for c in cpus if c not in got]
                    mistakes.append(
                        f"line {step} flushes CPU {' and '.join(map(str, cpus))}"
                        + (": t runs the same address space on CPU 1, so flush_tlb_mm_range() "
                           "sends it an IPI (TLB_REMOTE_SHOOTDOWN)" if 1 in extra else
                           ": the CPU making the call flushes its own TLB "
                           "(TLB_LOCAL_MM_SHOOTDOWN)" if extra else
                           ": no other CPU runs this address space"))
            for step in said:
                if step not in self.answer["flushed"] and said[step]:
                    mistakes.append(f"line {step} flushes nothing: an access that hits or "
                                    "misses never flushes")
        if student.get("totals") is not None:
            for cpu, want in self.answer["totals"].items():
                got = student["totals"].get(cpu, student["totals"].get(str(cpu)))
                if isinstance(got, dict):
                    got = (got.get("hits"), got.get("misses"))
                if got is None or tuple(got) != (want["hits"], want["misses"]):
                    ks = sum(1 for e in self.events if e["label"] == "K" and e["cpu"] == cpu)
                    hint = (" (a system call's lookup of K counts too)"
                            if ks and got is not None and sum(map(int, got)) ==
                            want["hits"] + want["misses"] - ks else "")
                    mistakes.append(f"CPU {cpu} has {want['hits']} hits and {want['misses']} "
                                    f"misses{hint}")
        if not ({"results", "flushed", "totals"} & set(student)):
            mistakes.append("give the results (hit/miss per line), and/or 'flushed' and 'totals'")
        return Feedback(not mistakes, _unique(mistakes))


# =================================================================================================

#: Exercise kinds by name, in the order ``--list`` shows them.
KINDS = {cls.kind: cls for cls in (Translate, Maps, Cow, Rmap, Tlb)}


def exercise(kind, seed=0):
    """The exercise of ``kind`` for ``seed``: the same on every machine and every run.

    >>> import vmwidgets as vw
    >>> ex = vw.exercise("maps", 4)
    >>> print(ex.params_text().splitlines()[:2])
    ['ARG kind maps', 'ARG seed 4']
    """
    if kind not in KINDS:
        raise ValueError(f"unknown exercise kind {kind!r}; the kinds are {', '.join(KINDS)}")
    return KINDS[kind](seed)
