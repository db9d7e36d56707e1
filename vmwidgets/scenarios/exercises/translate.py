"""``translate``: walk the 4-level page table for one virtual address."""

import re

from ...core import flags as F, pgtable
from .base import P, Exercise, Feedback, _RW, _ANON_FIXED, _machine, _int, _unique


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

