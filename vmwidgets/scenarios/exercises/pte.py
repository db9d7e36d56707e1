"""``pte``: decode one 64-bit x86-64 page-table entry taken from the model."""

import os
import re

from ...core import flags as F, pgtable
from ...core.machine import Machine
from ...core.page_alloc import ZERO_PFN
from .base import P, Exercise, Feedback, _RW, _ANON_FIXED, _int, _pg, _unique


def _bit(mask):
    """The bit number of a one-bit mask from core/flags.py."""
    return mask.bit_length() - 1


#: What each bit of core/flags.py's PTE_BIT_NAMES means, for the question's table.
_MEANING = {
    "P": "present",
    "RW": "writable",
    "U": "user (U/S): user mode may use the page",
    "PWT": "write-through",
    "PCD": "cache disabled",
    "A": "accessed",
    "D": "dirty",
    "PSE": "PAT in a 4 KiB PTE (a huge page in a PMD/PUD)",
    "G": "global",
    "SPECIAL": "a software bit: Linux marks e.g. the zero page's PTEs",
    "SAVED_DIRTY": ("a software bit: the dirty bit of a write-protected PTE, moved there by "
                    "pte_wrprotect(); pte_dirty() counts it"),
    "NX": "no-execute",
}
#: The bits the question lists, lowest first: (mask, name, meaning), from core/flags.py.
_BITS = tuple((mask, name, _MEANING.get(name, "")) for mask, name in F.PTE_BIT_NAMES)
_MASK = {name: mask for mask, name, _ in _BITS}

#: What a student may write for each bit.
_ALIASES = {
    "P": "P", "PRESENT": "P",
    "RW": "RW", "R/W": "RW", "W": "RW", "WRITABLE": "RW", "WRITE": "RW",
    "U": "U", "US": "U", "U/S": "U", "USER": "U",
    "PWT": "PWT", "PCD": "PCD",
    "A": "A", "ACCESSED": "A", "D": "D", "DIRTY": "D",
    "PSE": "PSE", "PAT": "PSE", "PS": "PSE",
    "G": "G", "GLOBAL": "G",
    "SPECIAL": "SPECIAL", "SP": "SPECIAL", "SW1": "SPECIAL", "SOFTW1": "SPECIAL",
    "SAVED_DIRTY": "SAVED_DIRTY", "SAVEDDIRTY": "SAVED_DIRTY", "SAVED-DIRTY": "SAVED_DIRTY",
    "SD": "SAVED_DIRTY", "SW5": "SAVED_DIRTY", "SOFTW5": "SAVED_DIRTY",
    "NX": "NX", "XD": "NX", "NOEXEC": "NX",
}
#: "saved dirty" written as two words (or with a hyphen or an underscore), read as one name.
_SAVED_DIRTY_WORDS = re.compile(r"saved[\s_-]*dirty", re.I)
#: Words that say nothing about a set bit (RO: the RW bit is clear).
_FILLER = {"RO", "-", "NONE", "AND", "SET"}

#: The kinds of PTE the exercise asks about, and how often.
_CASES = (("write", 3), ("zero", 2), ("cow-parent", 2), ("cow-child", 2), ("rwx", 1),
          ("rx-zero", 1), ("mprotect", 1), ("file", 1), ("swap", 1), ("swapin", 1),
          ("none", 1))

_STORY = {
    "write": "{who} wrote the page: do_anonymous_page() mapped a new page of its own, "
             "writable and dirty.",
    "zero": "{who} only read the page: the read fault mapped the shared zero page, read-only, "
            "with the SPECIAL bit (no struct page is counted for it).",
    "rx-zero": "the VMA is r-x and {who} only read the page: the zero page, read-only, and "
               "without NX since the VMA is executable.",
    "cow-parent": "p wrote the page, then forked: copy_page_range() write-protected the PTE in "
                  "both processes (COW), and pte_wrprotect() moved its dirty bit from D (bit 6) "
                  "to SAVED_DIRTY (bit 58); this is p's PTE.",
    "cow-child": "p wrote the page, then forked child: the child's copy of the PTE is "
                 "write-protected (COW), its dirty bit moved by pte_wrprotect() from D (bit 6) "
                 "to SAVED_DIRTY (bit 58), and old (fork clears its accessed bit); this is "
                 "child's PTE.",
    "rwx": "the VMA is rwx and {who} wrote the page: writable, dirty, and no NX.",
    "mprotect": "{who} wrote the page, then mprotect(PROT_READ) made the range read-only: "
                "pte_modify() cleared RW and moved the dirty bit from D (bit 6) to SAVED_DIRTY "
                "(bit 58).",
    "file": "a private, read-only mapping of a file that {who} read: the page-cache page is "
            "mapped read-only and clean (a write would copy it first).",
    "swap": "{who} wrote the page, then madvise(MADV_PAGEOUT) wrote it out to swap: the PTE "
            "holds a swap entry, with P clear.",
    "swapin": "{who} wrote the page, madvise(MADV_PAGEOUT) swapped it out, and a read brought "
              "it back "
              "(do_swap_page): only {who} uses it, so it is mapped writable at once, but it is "
              "clean until the next write.",
    "none": "{who} never touched this page (a neighbour in the same PTE table was written): "
            "the entry is empty.",
}


#: Said in the worked answer of a PTE with SAVED_DIRTY set.
_SAVED_DIRTY_WHY = ("SAVED_DIRTY (bit 58) is a software bit the CPU ignores: since 6.6 x86-64 "
                    "never leaves D (bit 6) set in a read-only PTE, because a CPU with shadow "
                    "stacks takes Write=0,Dirty=1 for shadow-stack memory; pte_wrprotect() moves "
                    "D to bit 58, pte_mkwrite() moves it back, and pte_dirty() counts either, so "
                    "the page is still dirty.")

#: The named mistake: D said for a saved-dirty PTE, or bit 58 missed.
_SAVED_DIRTY_MISTAKE = ("bit 58 is SAVED_DIRTY: a read-only PTE never has D (bit 6) set on "
                        "x86-64 since 6.6; pte_wrprotect() moved it")

#: How the dirty bit of each kind of read-only dirty PTE got to bit 58.
_SAVED_DIRTY_HOW = {
    "cow-parent": " when fork write-protected the PTE for COW",
    "cow-child": " when fork write-protected the PTE for COW, in the parent and in the child's "
                 "copy",
    "mprotect": " (here mprotect(PROT_READ) cleared RW, and pte_modify() moved D to bit 58 the "
                "same way)",
}


def _flags_text(names):
    return " ".join(names) if names else "(none)"


class Pte(Exercise):
    """Decode a 64-bit x86-64 PTE: the flag bits set, the PFN, and the physical address of
    one byte; or say that the entry is not present.

    The answer is a dict: ``va``, ``pte`` (the value), ``present``, ``flags`` (names as in
    :data:`vmwidgets.core.flags.PTE_BIT_NAMES`), ``pfn`` and ``phys`` (``None`` when not
    present), ``entry`` (``"page"``, ``"swap"`` or ``"none"``), ``zero`` (it maps the zero
    page). ``check`` takes text such as
    ``"flags: P RW U A D NX; pfn: 0x1a2; phys: 0x1a2345"`` or ``"not present"``, a dict with
    any of ``flags`` (names, or an int of bits), ``pfn``, ``phys``, ``present`` (the answer
    dict itself too), or an int (the physical address).

    >>> ex = Pte(3)
    >>> ex.check(ex.answer_text()).correct
    True
    >>> ex.check("flags: P; pfn: 0; phys: 0").correct
    False
    """

    kind = "pte"
    summary = "decode a 64-bit x86-64 PTE: flag bits, PFN, physical address"

    def _build(self):
        rng = self.rng
        cases = [c for c, w in _CASES for _ in range(w)]
        self.case = case = rng.choice(cases)
        swap = case in ("swap", "swapin")
        m = self.machine = Machine(ram="64M", swap="1M" if swap else 0, history=False,
                                   trace=False)
        # Another process takes frames and gives a few back in a random order, so that the
        # frame numbers look like those of a machine that has run for a while.
        other = m.spawn()
        n = rng.randrange(64, 1500)
        base = other.mmap(0, n * P, _RW, F.MAP_PRIVATE | F.MAP_ANONYMOUS | F.MAP_POPULATE)
        for i in rng.sample(range(n), 8):
            other.munmap(base + i * P, P)
        p = m.spawn()
        npages = rng.randrange(2, 7)
        target = rng.randrange(npages)
        prot = {"rwx": _RW | F.PROT_EXEC, "rx-zero": F.PROT_READ | F.PROT_EXEC,
                "file": F.PROT_READ}.get(case, _RW)
        if case == "file":
            m.create_file("/data", bytes(rng.randrange(256) for _ in range(npages * P)))
            fd = p.open("/data", os.O_RDONLY)
            p.mmap(_pg(0), npages * P, prot, F.MAP_PRIVATE | F.MAP_FIXED, fd, 0)
        else:
            p.mmap(_pg(0), npages * P, prot, _ANON_FIXED)
        others = [i for i in range(npages) if i != target]
        if prot & F.PROT_WRITE:
            for i in rng.sample(others, rng.randrange(len(others) + 1)):
                p.write(_pg(i), b"x")
        who = p
        addr = _pg(target)
        if case in ("write", "rwx", "cow-parent", "cow-child", "mprotect", "swap", "swapin"):
            p.write(addr, bytes([rng.randrange(256)]))
        elif case in ("zero", "rx-zero", "file"):
            p.read(addr, 1)
        elif case == "none":
            if not others:                       # not reached: npages >= 2
                raise AssertionError("no neighbour page")
            p.write(_pg(rng.choice(others)), b"n")
        if case in ("cow-parent", "cow-child"):
            child = p.fork()
            if case == "cow-child":
                who = child
        elif case == "mprotect":
            p.mprotect(_pg(0), npages * P, F.PROT_READ)
        elif swap:
            p.madvise(addr, P, F.MADV_PAGEOUT)
            assert not pgtable.get_pte(p.mm, addr) & F._PAGE_PRESENT, "paged out"
            if case == "swapin":
                p.read(addr, 1)
        self.process = who
        self.name = "child" if who is not p else "p"
        self.vma = who.mm.vma_lookup(addr)
        va = addr + rng.randrange(P)
        self.answer = self._solve(who, va)
        self.params.update(pid=who.pid, address=f"{va:#x}", pte=f"{self.answer['pte']:#018x}")
        self.question = self._question()
        self.worked_answer = self._explain()

    @staticmethod
    def _solve(proc, va):
        """Everything from the model's page-table walk for ``va``."""
        rows = pgtable.walk(proc.mm, va)
        level, _table, _index, pte = rows[-1]
        assert level == "PTE", "the walk reaches the PTE table"
        present = bool(pte & F._PAGE_PRESENT)
        pfn = pgtable.pte_pfn(pte) if present else None
        return {"va": va, "pte": pte, "present": present,
                "flags": F.pte_flags_names(pte) if present else [],
                "pfn": pfn, "phys": (pfn << F.PAGE_SHIFT) | (va & (P - 1)) if present else None,
                "entry": "page" if present else "swap" if pte else "none",
                "zero": present and pfn == ZERO_PFN}

    # -- text ---------------------------------------------------------------------------------
    def answer_text(self):
        """The answer as a student would type it."""
        a = self.answer
        if not a["present"]:
            return "not present" + (" (swap entry)" if a["entry"] == "swap" else " (empty)")
        return f"flags: {_flags_text(a['flags'])}; pfn: {a['pfn']:#x}; phys: {a['phys']:#x}"

    def _question(self):
        a, v = self.answer, self.vma
        lines = [f"Process {self.name} (pid {self.process.pid}) has the VMA "
                 f"{v.vm_start:#x}-{v.vm_end:#x} {v.perms()}. The page-table walk",
                 f"for the virtual address {a['va']:#x} ends at this PTE:", "",
                 f"    {a['pte']:#018x}", "",
                 "The bits of an x86-64 PTE (4 KiB pages):"]
        for mask, name, what in _BITS:
            lines.append(f"  bit {_bit(mask):2d}  {name:<12}{what}".rstrip())
        lines += ["  bits 51..12  the PFN (page frame number) of the page",
                  "If P is clear the CPU ignores every other bit (an access page-faults); the "
                  "kernel may keep",
                  "its own information there, such as a swap entry.",
                  "",
                  f"Decode it: which of the bits above are set, the PFN, and the physical "
                  f"address of the byte",
                  f"at {a['va']:#x}. Answer e.g. 'flags: P RW U A D NX; pfn: 0x1a2; phys: "
                  "0x1a2345', or 'not present'."]
        return "\n".join(lines)

    def _explain(self):
        a = self.answer
        pte, va = a["pte"], a["va"]
        out = [f"Where this PTE came from: {_STORY[self.case].format(who=self.name)}", ""]
        out.append(f"1. Bit 0 (P) is {'set' if a['present'] else 'clear'}: "
                   f"{pte:#018x} & 0x1 = {pte & 1}.")
        if not a["present"]:
            if a["entry"] == "none":
                out.append("   The whole entry is 0: empty (pte_none). An access page-faults "
                           "and the kernel fills it (do_anonymous_page).")
            else:
                out.append("   The rest is the kernel's: a swap entry saying where on swap the "
                           "page is. An access page-faults and do_swap_page() reads it back.")
            out += ["   There is no PFN and no physical address.", "", "Answer: " +
                    self.answer_text()]
            return "\n".join(out)
        out.append("2. The flag bits, one by one:")
        for mask, name, what in _BITS:
            out.append(f"   bit {_bit(mask):2d} {name:<12}{'set' if pte & mask else 'clear'}")
        out.append(f"   set: {_flags_text(a['flags'])}")
        if pte & F._PAGE_SAVED_DIRTY:
            out.append("   " + _SAVED_DIRTY_WHY)
        out.append(f"3. PFN = bits 51..12 = ({pte:#018x} & {F.PTE_PFN_MASK:#x}) >> 12 = "
                   f"{a['pfn']:#x}" + (" (the shared zero page)" if a["zero"] else ""))
        out.append(f"4. Physical address = (PFN << 12) | offset, the offset being the low 12 "
                   f"bits of {va:#x}:")
        out.append(f"   ({a['pfn']:#x} << 12) | {va & (P - 1):#x} = {a['phys']:#x}")
        out += ["", "Answer: " + self.answer_text()]
        return "\n".join(out)

    # -- checking -----------------------------------------------------------------------------
    @staticmethod
    def _read_flags(value):
        """Flag names from a student: text, a list of names, or an int of bits."""
        if isinstance(value, int) and not isinstance(value, bool):
            return set(F.pte_flags_names(value))
        if isinstance(value, (list, tuple, set, frozenset)):
            value = " ".join(str(v) for v in value)
        if not isinstance(value, str):
            raise ValueError(f"could not read {value!r} as PTE flags")
        out = set()
        value = _SAVED_DIRTY_WORDS.sub("SAVED_DIRTY", value)
        for token in re.split(r"[\s,|+;]+", value.strip()):
            word = token.upper().strip("()")
            if word.startswith("_PAGE_") and len(word) > len("_PAGE_"):
                word = word[len("_PAGE_"):]             # the kernel's names: _PAGE_RW, ...
            if not word or word in _FILLER:
                continue
            if word not in _ALIASES:
                raise ValueError(f"could not read the flag {token!r} (the names are "
                                 f"{', '.join(n for _, n, _ in _BITS)})")
            out.add(_ALIASES[word])
        return out

    def _read_student(self, student):
        if isinstance(student, int) and not isinstance(student, bool):
            return {"phys": student}
        if isinstance(student, str):
            got = {}
            for part in re.split(r"[;\n]", student):
                part = part.strip()
                if not part:
                    continue
                match = re.match(r"(flags?|bits?|pfn|frame|phys(?:ical)?(?:\s+address)?|pa)"
                                 r"\s*[:=]\s*(.*)$", part, re.I)
                if match:
                    key = match.group(1).lower()
                    key = ("flags" if key.startswith(("flag", "bit")) else
                           "pfn" if key in ("pfn", "frame") else "phys")
                    got[key] = match.group(2).strip()
                elif re.search(r"not\s*present|absent|^none$|^empty|swap", part, re.I):
                    got["present"] = False
                    if re.search(r"swap", part, re.I):
                        got["entry"] = "swap"
                    elif re.search(r"none|empty|zero", part, re.I):
                        got["entry"] = "none"
                else:
                    raise ValueError(f"could not read {part!r} (write 'flags: ...; pfn: ...; "
                                     "phys: ...' or 'not present')")
            if not got:
                raise ValueError("no answer found (write 'flags: ...; pfn: ...; phys: ...' or "
                                 "'not present')")
            student = got
        if not isinstance(student, dict):
            raise ValueError(f"could not read an answer of type {type(student).__name__}")
        got = {}
        for key, value in student.items():
            key = str(key).lower()
            if value is None or key in ("va", "pte", "zero"):
                continue            # nothing said, or what the question gave (the answer dict)
            if key == "flags":
                got["flags"] = self._read_flags(value)
            elif key in ("pfn", "phys"):
                number = _int(value)
                if number is None:
                    raise ValueError(f"could not read {value!r} as a number for {key}")
                got[key] = number
            elif key == "present":
                got["present"] = bool(value)
            elif key == "entry":
                got["entry"] = str(value).lower()
            else:
                raise ValueError(f"unknown key {key!r} (use flags, pfn, phys, present)")
        if got.get("flags") and "P" in got["flags"] and got.get("present") is False:
            raise ValueError("you wrote both 'not present' and the P flag")
        return got

    def check(self, student):
        try:
            got = self._read_student(student)
        except ValueError as exc:
            return Feedback(False, [str(exc)])
        a = self.answer
        said_absent = got.get("present") is False
        if not a["present"]:
            return Feedback(*self._absent_mistakes(got, said_absent))
        if said_absent:
            return Feedback(False, ["bit 0 (P) is set (the value is odd): the entry is present "
                                    "and maps a page"])
        mistakes = []
        if "flags" in got:
            mistakes += self._flag_mistakes(got["flags"])
        if "pfn" in got:
            mistakes += self._pfn_mistakes(got["pfn"])
        if "phys" in got:
            mistakes += self._phys_mistakes(got["phys"])
        if not mistakes:
            missing = [k for k in ("flags", "pfn", "phys") if k not in got]
            if missing:
                mistakes.append(f"what you gave is right; now give also the {' and '.join(missing)}")
        return Feedback(not mistakes, _unique(mistakes))

    def _absent_mistakes(self, got, said_absent):
        a = self.answer
        what = ("the whole entry is 0: empty (pte_none), the page was never touched"
                if a["entry"] == "none" else
                "the other bits are the kernel's swap entry (the page was written out to swap)")
        if not said_absent:
            return False, [f"bit 0 (P) is clear: the entry is not present; the CPU ignores "
                           f"every other bit and raises a page fault, so there is no PFN or "
                           f"physical address ({what})"]
        mistakes = []
        if got.get("pfn") is not None or got.get("phys") is not None:
            mistakes.append("a not-present entry has no PFN or physical address")
        entry = got.get("entry")
        if entry == "swap" and a["entry"] == "none":
            mistakes.append("the entry is 0 (empty): not a swap entry; the page was never "
                            "touched")
        elif entry == "none" and a["entry"] == "swap":
            mistakes.append("the entry is not 0: it is not empty, the kernel keeps a swap entry "
                            "in it (the page was swapped out); it is still not present")
        return not mistakes, mistakes

    def _flag_mistakes(self, said):
        a = self.answer
        true = set(a["flags"])
        out = []
        if "SAVED_DIRTY" in true and ("SAVED_DIRTY" not in said or "D" in said):
            out.append(_SAVED_DIRTY_MISTAKE + _SAVED_DIRTY_HOW.get(self.case, "") +
                       "; pte_dirty() still counts the page dirty")
            said = (set(said) - {"D"}) | {"SAVED_DIRTY"}     # said once, not bit by bit again
        for mask, name, _ in _BITS:
            if name in true and name not in said:
                out.append(self._bit_text(name, True))
            elif name in said and name not in true:
                out.append(self._bit_text(name, False))
        return out

    def _bit_text(self, name, is_set):
        """Why bit ``name`` is set (``is_set``) or clear in this PTE."""
        case, pte = self.case, self.answer["pte"]
        n = _bit(_MASK[name])
        if name == "NX":
            if is_set:
                return ("NX is bit 63, the top bit: the value starts with 0x8, so it is set: "
                        "no instruction may be fetched from this page")
            return (f"NX is bit 63: it is clear here (the value is below 0x8000000000000000); "
                    f"the VMA is executable ({self.vma.perms()}), so its PTEs allow execution")
        if name == "RW":
            if is_set:
                why = {"swapin": " (do_swap_page() maps a page that only this process uses "
                                 "writable at once, even after a read fault)"}.get(
                    case, " (the page belongs to this process alone and it wrote it)")
                return "bit 1 (RW) is set: the page is writable" + why
            why = {"cow-parent": " (COW after fork: copy_page_range() write-protected it in both "
                                 "processes; the first write faults and do_wp_page() copies or "
                                 "reuses the page)",
                   "cow-child": " (COW after fork: copy_page_range() write-protected it in both "
                                "processes; the first write faults and do_wp_page() copies or "
                                "reuses the page)",
                   "zero": " (the zero page is always mapped read-only)",
                   "rx-zero": " (the zero page is always mapped read-only)",
                   "mprotect": " (mprotect(PROT_READ) took write permission away)",
                   "file": " (the VMA is read-only; a private file page is never mapped "
                           "writable before a write copies it)"}.get(case, "")
            return f"bit 1 is RW: this page is read-only{why}"
        if name == "A":
            if is_set:
                return (f"bit {n} (A, accessed) is set: the page was used since this PTE was "
                        "made (the fault handler sets it, and the CPU on every access)")
            if case == "cow-child":
                return (f"bit {n} (A) is clear: fork makes the child's copies old (pte_mkold) and "
                        "the child has not touched the page since")
            return f"bit {n} (A) is clear"
        if name == "SAVED_DIRTY":
            if is_set:                          # not reached: _flag_mistakes says it first
                return _SAVED_DIRTY_MISTAKE
            if pte & F._PAGE_DIRTY:
                return (f"bit {n} (SAVED_DIRTY) is clear: this PTE is writable, so its dirty "
                        "bit is D (bit 6) itself; only write-protecting it (pte_wrprotect()) "
                        "moves D to bit 58")
            return (f"bit {n} (SAVED_DIRTY) is clear: the page is not dirty at all (neither D "
                    "nor bit 58); bit 58 only holds the dirty bit of a write-protected PTE")
        if name == "D":
            if is_set:
                return ("bit 6 (D, dirty) is set: the page was written through this PTE, and "
                        "the PTE is writable, so the dirty bit stays in D")
            why = {"zero": " (the zero page is only ever read)",
                   "rx-zero": " (the zero page is only ever read)",
                   "file": " (the file page was only read)",
                   "swapin": (" (it came back from swap on a read; since RW is set, the CPU "
                              "will set D itself on the next write, with no fault)")}.get(case, "")
            return f"bit {n} (D) is clear: nothing wrote the page through this PTE{why}"
        if name == "U":
            if is_set:
                return (f"bit {n} (U/S) is set: user-mode code may use the page; every user "
                        "page has it")
            return f"bit {n} (U/S) is clear"
        if name == "SPECIAL":
            if is_set:
                return (f"bit {n} (SPECIAL) is set: the CPU ignores it; Linux sets it on PTEs of "
                        "the zero page, so that vm_normal_page() knows there is no ordinary "
                        "page to count")
            return f"bit {n} (SPECIAL) is clear: this is an ordinary page, not the zero page"
        if name == "P":
            return f"bit {n} (P) is set: the entry is present (every valid mapping has it)"
        if name == "G":
            return (f"bit {n} (G, global) is clear: only kernel mappings are global, user "
                    "pages never")
        return f"bit {n} ({name}) is {'set' if is_set else 'clear'} in {pte:#018x}"

    def _pfn_mistakes(self, pfn):
        a = self.answer
        pte = a["pte"]
        if pfn == a["pfn"]:
            return []
        if pfn == pte >> F.PAGE_SHIFT:
            high = " and SAVED_DIRTY (bit 58)" if pte & F._PAGE_SAVED_DIRTY else ""
            return [f"the PFN is bits 12-51, not the whole value shifted: mask off NX (bit 63)"
                    f"{high} first: ({pte:#x} & {F.PTE_PFN_MASK:#x}) >> 12 = {a['pfn']:#x}"]
        if pfn == pte & F.PTE_PFN_MASK or pfn == a["pfn"] << F.PAGE_SHIFT:
            return ["that is the frame's physical address (bits 12-51 left in place); the PFN "
                    f"is that shifted right by 12: {a['pfn']:#x}"]
        if pfn == a["phys"]:
            return ["that is the physical address; the PFN is the physical address shifted "
                    f"right by 12: {a['pfn']:#x}"]
        return [f"the PFN is bits 12-51 of the PTE: ({pte:#x} & {F.PTE_PFN_MASK:#x}) >> 12 = "
                f"{a['pfn']:#x}"]

    def _phys_mistakes(self, phys):
        a = self.answer
        pte, va, pfn = a["pte"], a["va"], a["pfn"]
        off = va & (P - 1)
        if phys == a["phys"]:
            return []
        if phys == pfn:
            return ["that is the PFN, not the physical address: shift it left by 12 and add "
                    f"the offset: {a['phys']:#x}"]
        if phys == pfn << F.PAGE_SHIFT:
            return [f"you left out the offset (the low 12 bits of the virtual address, "
                    f"{off:#x}): {a['phys']:#x}"]
        if phys in ((pte & ~(P - 1)) | off, pte | off, pte + off, pte):
            return ["you kept flag bits of the PTE (NX is bit 63, SAVED_DIRTY bit 58, the low "
                    f"12 bits are flags): only bits 12-51 are the frame, so the address is "
                    f"{a['phys']:#x}"]
        if phys == (pfn << F.PAGE_SHIFT) | (pte & (P - 1)):
            return [f"the low 12 bits of the physical address are the offset of the virtual "
                    f"address ({off:#x}), not the PTE's flag bits: {a['phys']:#x}"]
        if phys == va:
            return ["that is the virtual address; the physical one is (PFN << 12) | offset: "
                    f"{a['phys']:#x}"]
        return [f"the physical address is (PFN {pfn:#x} << 12) | offset {off:#x} = "
                f"{a['phys']:#x}"]
