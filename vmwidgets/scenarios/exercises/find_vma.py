"""``find_vma``: which VMA ``find_vma(mm, addr)`` returns for a few addresses, and whether
each address is inside it."""

import re

from ...core import flags as F
from .base import P, Exercise, Feedback, _ANON_FIXED, _machine, _pg, _int, _unique, _PROTS

#: The first address above user space (TASK_SIZE): nothing of user space lies above it.
_TOP = F.TASK_SIZE
_RANGE = re.compile(r"(?:0x)?([0-9a-fA-F]+)\s*-\s*(?:0x)?([0-9a-fA-F]+)")
_LABEL = re.compile(r"\s*(?:address\s*)?(0x[0-9a-fA-F]+|[0-9a-fA-F]+)\s*[.):=]\s*(.*)$", re.I)
_NONE = re.compile(r"\b(none|null|nil|no\s+vma|nothing)\b", re.I)
_OUT = re.compile(r"\b(outside|not\s+inside|not\s+in|no|out|segv\w*|fault\w*|gap)\b", re.I)
_IN = re.compile(r"\b(inside|in|yes)\b", re.I)


def _rng_text(vma):
    return "none" if vma is None else f"{vma[0]:08x}-{vma[1]:08x}"


class FindVma(Exercise):
    """Which VMA ``find_vma(mm, addr)`` returns for 3 or 4 addresses, and whether each
    address is inside it (``vma_lookup``). The answer is a list, one ``(addr, vma,
    inside)`` per address in question order, ``vma`` being ``(vm_start, vm_end)`` or
    ``None``. ``check`` takes text, one line per address (``2. 10004000-10006000 inside``,
    ``3. none``), or a list of ``(vma, inside)`` (or such lines, or ``(addr, vma, inside)``
    as in ``answer``) in question order.

    >>> ex = FindVma(3)
    >>> ex.check(ex.answer).correct
    True
    >>> ex.check("\\n".join(f"{i}. {_rng_text(v)} {'inside' if inside else 'outside'}"
    ...                     for i, (a, v, inside) in enumerate(ex.answer, 1))).correct
    True
    """

    kind = "find_vma"
    summary = "which VMA find_vma() returns for an address, and whether the address is in it"
    NPAGES = 24

    def _build(self):
        rng = self.rng
        m = _machine()
        p = m.spawn()
        page, last_prot = rng.randrange(0, 3), None
        self.calls = []
        for i in range(rng.choice([3, 4, 4])):
            length = rng.randrange(1, 5)
            prot = rng.choice([k for k in ("rw", "rw", "r", "rx", "none") if k != last_prot])
            p.mmap(_pg(page), length * P, _PROTS[prot], _ANON_FIXED)
            self.calls.append((page, length, prot))
            page += length + rng.choice([0, 1, 1, 2, 3])
            last_prot = prot
        arena = p.mm.vmas_in(_pg(0), _pg(self.NPAGES))
        chosen = self._addresses(rng, arena)
        self.machine, self.process = m, p
        self.answer = []
        for addr, _ in chosen:
            vma = p.mm.find_vma(addr)
            inside = p.mm.vma_lookup(addr) is not None
            self.answer.append((addr, None if vma is None else (vma.vm_start, vma.vm_end), inside))
        self.kinds = [k for _, k in chosen]
        self.params.update(pid=p.pid, addresses=len(chosen))
        self.question = self._question(p)
        self.worked_answer = self._explain()

    def _addresses(self, rng, arena):
        """3 or 4 addresses: always the end of a VMA, one above the arena's VMAs (or above
        every VMA), a VMA's start or last byte, and maybe an address in a gap or the other
        of start and last byte."""
        def in_gap():
            gaps = [(a.vm_end, b.vm_start) for a, b in zip(arena, arena[1:])
                    if b.vm_start - a.vm_end >= P]
            if arena[0].vm_start > _pg(0):
                gaps.append((_pg(0), arena[0].vm_start))
            lo, hi = rng.choice(gaps) if gaps else (arena[-1].vm_end, arena[-1].vm_end + P)
            return lo + rng.randrange(0, (hi - lo) // P) * P + rng.randrange(1, P // 16) * 16

        pick = {
            "start": lambda: rng.choice(arena).vm_start,
            "last": lambda: rng.choice(arena).vm_end - 1,
            "end": lambda: rng.choice(arena).vm_end,
            "gap": in_gap,
            "above the arena": lambda: arena[-1].vm_end + rng.randrange(1, 8) * P + rng.randrange(0, 16) * 16,
            "above every VMA": lambda: _TOP + rng.randrange(0, P // 16) * 16,
        }
        inner = ["start", "last"]
        rng.shuffle(inner)
        kinds = ["end", rng.choice(["above the arena", "above every VMA"]), inner[0]]
        if rng.random() < 0.7:
            kinds.append(rng.choice([inner[1], "gap", "gap"]))
        rng.shuffle(kinds)
        out = []
        for kind in kinds:
            for _ in range(20):
                addr = pick[kind]()
                if addr not in [a for a, _ in out]:
                    out.append((addr, kind))
                    break
        return out

    def _question(self, p):
        lines = [f"Process {p.pid} mapped a few VMAs near {_pg(0):#x} (MAP_FIXED) and touched "
                 "nothing. Its /proc/PID/maps:", ""]
        lines += ["  " + line for line in p.proc_maps().splitlines()]
        lines += ["", "find_vma(mm, addr) returns the first VMA with vm_end > addr (or NULL). "
                  "For each address below, which VMA does it return, and is the address inside "
                  "that VMA (vm_start <= addr < vm_end)? If it is not, a read there faults "
                  "with SIGSEGV (SEGV_MAPERR)."]
        for i, (addr, _, _) in enumerate(self.answer, 1):
            lines.append(f"  {i}. {addr:#x}")
        lines += ["Write one line per address: its number, the VMA as 'start-end' (as maps "
                  "prints it) or 'none', then 'inside' or 'outside', e.g. "
                  "'1. 12345000-12347000 outside' or '2. none'."]
        return "\n".join(lines)

    def _explain(self):
        mm = self.process.mm
        out = []
        for i, (addr, vma, inside) in enumerate(self.answer, 1):
            head = f"{i}. {addr:#x}: "
            below = self._below(addr)
            if vma is None:
                why = ("no VMA ends above it (it is above every VMA: the last one, "
                       f"{_rng_text(below)}, ends at {below[1]:#x})")
                out.append(head + f"find_vma returns NULL: {why}; not inside any VMA.")
                continue
            v = mm.find_vma(addr)
            text = head + f"find_vma returns {_rng_text(vma)} {v.perms()}"
            if inside:
                edge = (" (its first byte: vm_start is inclusive)" if addr == vma[0] else
                        " (its last byte: vm_end - 1)" if addr == vma[1] - 1 else "")
                text += f"; {vma[0]:#x} <= {addr:#x} < {vma[1]:#x}, so it is inside{edge}."
            else:
                text += (f", the first VMA ending above it; but it starts at {vma[0]:#x}, above "
                         f"{addr:#x}: the address is in a gap, not inside (vma_lookup "
                         "returns NULL; a read faults with SEGV_MAPERR).")
            if below is not None and below[1] == addr:
                text += (f" The VMA {_rng_text(below)} ends exactly at {addr:#x}: vm_end is "
                         "exclusive, so the address is not in it.")
            out.append(text)
        out += ["", "Answer:"] + [f"  {i}. {_rng_text(v)}" + ("" if v is None else
                                  " inside" if inside else " outside")
                                  for i, (a, v, inside) in enumerate(self.answer, 1)]
        out += ["", "find_vma is the tree search every page fault and many system calls start "
                "with (mm/mmap.c); callers that need the VMA containing the address check "
                "vm_start <= addr themselves, or use vma_lookup() (include/linux/mm.h)."]
        return "\n".join(out)

    def _below(self, addr):
        """The last VMA with vm_end <= addr, as (start, end), or None."""
        below = None
        for v in self.process.mm:
            if v.vm_end <= addr:
                below = (v.vm_start, v.vm_end)
        return below

    # -- checking ---------------------------------------------------------------------------------
    def _read_item(self, item):
        """``(vma, inside)`` from one answer: a line of text or a (vma, inside) pair."""
        if isinstance(item, str):
            if _NONE.search(item):
                return None, bool(_IN.search(_NONE.sub(" ", item))
                                  and not _OUT.search(_NONE.sub(" ", item)))
            rng_match = _RANGE.search(item)
            if not rng_match:
                raise ValueError(f"could not read {item.strip()!r}: give 'start-end inside', "
                                 "'start-end outside' or 'none'")
            vma = (int(rng_match.group(1), 16), int(rng_match.group(2), 16))
            rest = item[rng_match.end():]
            if _OUT.search(rest):
                return vma, False
            if _IN.search(rest):
                return vma, True
            raise ValueError(f"in {item.strip()!r}, say whether the address is 'inside' or "
                             "'outside' that VMA")
        if item is None:
            return None, False
        if isinstance(item, (list, tuple)) and len(item) == 2:
            vma, inside = item
            if isinstance(inside, str):
                inside = not _OUT.search(inside) and bool(_IN.search(inside))
            if vma is None or (isinstance(vma, str) and _NONE.search(vma)):
                return None, bool(inside)
            if isinstance(vma, str):
                m = _RANGE.search(vma)
                if not m:
                    raise ValueError(f"could not read {vma!r} as a VMA 'start-end'")
                vma = (int(m.group(1), 16), int(m.group(2), 16))
            elif isinstance(vma, (list, tuple)) and len(vma) == 2:
                vma = (_int(vma[0]), _int(vma[1]))
                if None in vma:
                    raise ValueError(f"could not read {item!r} as ((start, end), inside)")
            elif hasattr(vma, "vm_start"):
                vma = (vma.vm_start, vma.vm_end)
            else:
                raise ValueError(f"could not read {item!r} as ((start, end), inside)")
            return vma, bool(inside)
        raise ValueError(f"could not read {item!r} as one answer line")

    def _read_student(self, student):
        n = len(self.answer)
        addrs = [a for a, _, _ in self.answer]
        got = {}
        if isinstance(student, str):
            lines = [l for l in student.splitlines() if l.strip()]
            position = 0
            for line in lines:
                label = _LABEL.match(line)
                index = None
                if label and not _RANGE.match(line.strip()):
                    token, rest = label.group(1), label.group(2)
                    as_index = int(token) if token.isdigit() else None
                    as_addr = int(token, 16)
                    if as_index is not None and 1 <= as_index <= n:
                        index = as_index - 1
                    elif as_addr in addrs:
                        index = addrs.index(as_addr)
                    else:
                        raise ValueError(f"{line.strip()!r}: there is no address {token} "
                                         f"(number the lines 1 to {n})")
                    line = rest
                if index is None:
                    index = position
                position = index + 1
                if index >= n:
                    raise ValueError(f"there are only {n} addresses, but the answer has more "
                                     "lines")
                got[index] = self._read_item(line)
        elif isinstance(student, dict):
            for key, item in student.items():
                key = _int(key)
                if key in addrs:
                    got[addrs.index(key)] = self._read_item(item)
                elif key is not None and 1 <= key <= n:
                    got[key - 1] = self._read_item(item)
                else:
                    raise ValueError(f"could not tell which address {key!r} is")
        elif isinstance(student, (list, tuple)):
            if len(student) > n:
                raise ValueError(f"there are only {n} addresses, but the answer has "
                                 f"{len(student)} items")
            for index, item in enumerate(student):
                if (isinstance(item, (list, tuple)) and len(item) == 3
                        and _int(item[0]) == addrs[index]):
                    item = item[1:]                  # (addr, vma, inside), as in .answer
                got[index] = self._read_item(item)
        else:
            raise ValueError(f"could not read an answer of type {type(student).__name__}")
        return got

    def check(self, student):
        try:
            got = self._read_student(student)
        except ValueError as exc:
            return Feedback(False, [str(exc)])
        vmas = {(v.vm_start, v.vm_end) for v in self.process.mm}
        mistakes = []
        for i, (addr, vma, inside) in enumerate(self.answer):
            head = f"{i + 1}. {addr:#x}: "
            if i not in got:
                mistakes.append(head + "no answer")
                continue
            said, said_inside = got[i]
            if said == vma:
                if vma is None and said_inside:
                    mistakes.append(head + "with no VMA returned, the address is inside none")
                elif said_inside != inside:
                    mistakes.append(head + self._inside_mistake(addr, vma, inside))
                continue
            if said is None:
                mistakes.append(head + "find_vma does not return NULL here: some VMA ends above "
                                "the address, and find_vma returns the first such VMA even when "
                                "the address is not inside it")
            elif vma is None:
                mistakes.append(head + "no VMA ends above this address, so find_vma returns "
                                "NULL (none)")
            elif said not in vmas:
                mistakes.append(head + f"{_rng_text(said)} is not a VMA of this process: copy "
                                "the range of a maps line")
            elif said[1] == addr:
                mistakes.append(head + f"addr == vm_end of {_rng_text(said)} is not inside it: "
                                "vm_end is exclusive, so find_vma returns the next VMA up")
            elif said[1] < addr:
                mistakes.append(head + f"{_rng_text(said)} ends below the address: find_vma "
                                "returns the first VMA ending above the address, not the one "
                                "below it")
            else:
                mistakes.append(head + f"{_rng_text(said)} is not the first VMA ending above "
                                "the address: a lower VMA also ends above it")
        return Feedback(not mistakes, _unique(mistakes))

    @staticmethod
    def _inside_mistake(addr, vma, inside):
        if inside:
            if addr == vma[0]:
                return ("vm_start is inclusive: the address is the first byte of "
                        f"{_rng_text(vma)}, so it is inside")
            if addr == vma[1] - 1:
                return f"the address is the last byte of {_rng_text(vma)} (vm_end - 1): inside"
            return f"{vma[0]:#x} <= addr < {vma[1]:#x}: the address is inside {_rng_text(vma)}"
        return (f"find_vma returns {_rng_text(vma)}, but that VMA starts above the address: "
                "the address is in the gap below it, not inside (vma_lookup returns NULL; a "
                "read faults with SEGV_MAPERR)")
