"""``unmapped_area``: where ``mmap(NULL, ...)`` (or ``mmap`` with a hint) puts a new
mapping: the top-down search below ``mmap_base``, hints, the stack guard gap."""

import re

from ...core import flags as F
from ...core.mmap import vm_start_gap
from .base import P, Exercise, Feedback, _machine, _int, _unique, _PROTS, _PROT_C

_ANON = F.MAP_PRIVATE | F.MAP_ANONYMOUS
_LABEL = re.compile(r"\s*(?:call\s*)?(\d+)\s*[.):=]\s*(.*)$", re.I)
_NUMBER = re.compile(r"(0x[0-9a-fA-F]+|[0-9a-fA-F]{5,})")


class UnmappedArea(Exercise):
    """Where one or two ``mmap`` calls without MAP_FIXED put their mappings, in a process
    whose maps show a few holes below the vDSO. The answer is the list of addresses the
    calls return; ``check`` takes them as text (one a line, ``1. 0x7ffff7fe9000``), a
    list, or one number for a single call.

    >>> ex = UnmappedArea(3)
    >>> ex.check("\\n".join(f"{i}. {a:#x}" for i, a in enumerate(ex.answer, 1))).correct
    True
    """

    kind = "unmapped_area"
    summary = "where mmap(NULL, ...) or mmap(hint, ...) puts a mapping: top-down, hints"

    def _build(self):
        rng = self.rng
        m = _machine()
        p = m.spawn()
        top = p.mm.find_vma(0x700000000000).vm_start        # [vvar], right below mmap_base
        first = rng.randrange(2, 6)
        self.setup = self._layout(rng, top, first)
        for start, pages, prot in self.setup:
            p.mmap(start, pages * P, _PROTS[prot], _ANON | F.MAP_FIXED)
        self.maps_before = p.proc_maps()
        self.calls = [(0, first, rng.choice(["rw", "rw", "r"]))]
        variant = rng.choice(["free hint", "taken hint", "guard gap", "null", None])
        self.snapshots, self.answer = [], []
        self.machine, self.process = m, p
        self._run(0)
        if variant is not None:
            self.calls.append(self._second(rng, p, variant))
            self._run(1)
        self.variant = variant
        self.params.update(pid=p.pid, calls=len(self.calls))
        self.question = self._question(p)
        self.worked_answer = self._explain()

    def _run(self, i):
        p = self.process
        self.snapshots.append(self._ranges(p))
        hint, pages, prot = self.calls[i]
        self.answer.append(p.mmap(hint, pages * P, _PROTS[prot], _ANON))

    @staticmethod
    def _ranges(p):
        """The VMAs as ``(start, end, start_gap, maps name)``."""
        from ...procfs import vma_name
        return [(v.vm_start, v.vm_end, vm_start_gap(v), vma_name(v) or "") for v in p.mm]

    @staticmethod
    def _layout(rng, top, first):
        """Mapped runs and holes going down from ``top``: some holes too small for ``first``
        pages, then one that fits, maybe another below."""
        holes = [rng.randrange(1, first) for _ in range(rng.choice([1, 2, 2, 3]))]
        holes.append(rng.randrange(first, first + 3))
        if rng.random() < 0.5:
            holes.append(rng.randrange(1, first + 3))
        out, cursor = [], top
        if rng.random() < 0.3:                          # a small hole right below [vvar]
            cursor -= holes.pop(0) * P if len(holes) > 1 else 0
        last = None
        for hole in holes + [0]:
            pages = rng.randrange(1, 4)
            prot = rng.choice([k for k in ("rw", "r", "rx") if k != last])
            cursor -= pages * P
            out.append((cursor, pages, prot))
            cursor -= hole * P
            last = prot
        return out

    def _second(self, rng, p, variant):
        stack = p.mm.find_vma(p.mm.start_stack)
        gaps = self._gaps(self._ranges(p))
        if variant == "free hint":
            fits = [(a, b) for a, b in gaps if b - a >= 2 * P and b <= p.mm.mmap_base
                    and a > 0x600000000000]
            pages = rng.randrange(1, 3)
            if fits and rng.random() < 0.5:
                a, b = rng.choice(fits)
                return (a, min(pages, (b - a) // P), rng.choice(["rw", "r"]))
            return (rng.choice([0x20000000, 0x40000000, 0x7ffff0000000]), pages,
                    rng.choice(["rw", "r"]))
        if variant == "taken hint":
            if rng.random() < 0.5:                      # overlaps the VMA above a small hole
                small = [(a, b) for a, b in gaps if b - a < 4 * P and a > 0x600000000000]
                if small:
                    a, b = rng.choice(small)
                    return (a, (b - a) // P + rng.randrange(1, 3), rng.choice(["rw", "r"]))
            start, pages, _ = rng.choice(self.setup)
            return (start + rng.randrange(0, pages) * P, rng.randrange(1, 3), rng.choice(["rw", "r"]))
        if variant == "guard gap":
            below = rng.randrange(2, 17)
            return (stack.vm_start - below * P, rng.randrange(1, min(below, 4) + 1), "rw")
        return (0, rng.randrange(1, 3), rng.choice(["rw", "r"]))

    @staticmethod
    def _gaps(ranges):
        """The free ranges ``(start, end)`` between VMAs, ``end`` the next VMA's start gap."""
        out, prev_end = [], 0
        for start, end, gap_start, _ in ranges:
            if gap_start > prev_end:
                out.append((prev_end, gap_start))
            prev_end = max(prev_end, end)
        if prev_end < F.TASK_SIZE:
            out.append((prev_end, F.TASK_SIZE))
        return out

    @staticmethod
    def _call_text(call):
        hint, pages, prot = call
        where = "NULL" if not hint else f"(void *){hint:#x}"
        return (f"mmap({where}, {pages} * P, {_PROT_C[_PROTS[prot]]}, MAP_PRIVATE|MAP_ANONYMOUS, "
                "-1, 0)")

    def _question(self, p):
        lines = [f"Process {p.pid} has the default layout and a few anonymous mappings below "
                 "the vDSO.",
                 f"Its mm->mmap_base is {p.mm.mmap_base:#x}; x86-64 uses the top-down layout. "
                 "Its /proc/PID/maps:", ""]
        lines += ["  " + line for line in self.maps_before.splitlines()]
        lines += ["", f"It then makes {'this call' if len(self.calls) == 1 else 'these calls'}, "
                  f"in order (P = {P:#x}):"]
        lines += [f"  {i}. {self._call_text(c)}" for i, c in enumerate(self.calls, 1)]
        lines += [f"What does {'it' if len(self.calls) == 1 else 'each call'} return? Write one "
                  "address a line, in hex, numbered as the calls, e.g. '1. 0x12345000'."]
        return "\n".join(lines)

    def _explain(self):
        out = []
        base = self.process.mm.mmap_base
        for i, (call, got) in enumerate(zip(self.calls, self.answer)):
            hint, pages, _ = call
            length = pages * P
            out.append(f"{i + 1}. {self._call_text(call)} = {got:#x}")
            why = []
            if hint:
                refused = self._hint_refusal(i)
                if refused is None:
                    why.append(f"The hint is page-aligned and [{hint:#x}-{hint + length:#x}) is "
                               "free, so arch_get_unmapped_area_topdown_vmflags() returns it as it is.")
                    out += ["   " + w for w in why]
                    continue
                why.append(f"The hint is not used: {refused}. The kernel searches as for NULL.")
            skipped = [(a, b) for a, b in self._gaps(self.snapshots[i])
                       if a < b <= base and b - a < length and b > got + length]
            gap = next((a, b) for a, b in self._gaps(self.snapshots[i]) if a <= got < b)
            if skipped:
                why.append("Going down from mmap_base, unmapped_area_topdown() skips the gaps "
                           + ", ".join(f"[{a:#x}-{b:#x}) ({(b - a) // P} page"
                                       f"{'s' if b - a != P else ''})" for a, b in skipped[:4])
                           + f": too small for {pages} page{'s' if pages > 1 else ''}.")
            why.append(f"The highest gap that fits is [{gap[0]:#x}-{min(gap[1], base):#x}); "
                       f"the mapping goes at its top: {min(gap[1], base):#x} - {length:#x} = "
                       f"{got:#x}.")
            if i and self._without_earlier_calls(i) != got:
                why.append(f"(Without call 1 it would have been {self._without_earlier_calls(i):#x}; "
                           f"call 1's mapping at {self.answer[0]:#x} is in the way now.)")
            out += ["   " + w for w in why]
        out += ["", "Answer:"] + [f"  {i}. {a:#x}" for i, a in enumerate(self.answer, 1)]
        out += ["", "get_unmapped_area() (__get_unmapped_area() in mm/mmap.c) -> "
                "arch_get_unmapped_area_topdown_vmflags() (arch/x86/kernel/sys_x86_64.c): a "
                "free hint is used as it is; otherwise "
                "vm_unmapped_area() finds the highest gap below mmap_base that is long enough "
                "and puts the mapping at its top end."]
        return "\n".join(out)

    def _hint_refusal(self, i):
        """Why call ``i``'s hint was not used, or None if it was."""
        hint, pages, _ = self.calls[i]
        if self.answer[i] == hint:
            return None
        end = hint + pages * P
        for start, vend, gap_start, name in self.snapshots[i]:
            if start < end and hint < vend:
                return (f"[{hint:#x}-{end:#x}) overlaps the VMA {start:08x}-{vend:08x}"
                        + (f" {name}" if name else ""))
            if gap_start < end and hint < vend:
                return (f"[{hint:#x}-{end:#x}) is free, but it reaches into the stack guard gap "
                        f"(stack_guard_gap: {(start - gap_start) // P} pages, 1 MiB) that "
                        f"vm_start_gap() keeps below {name or 'the stack'} at {start:#x}")
        return "the model refused it"

    # -- checking ---------------------------------------------------------------------------------
    def _read_student(self, student):
        n = len(self.calls)
        got = {}
        if isinstance(student, str):
            position = 0
            for line in (l for l in student.replace(",", "\n").splitlines() if l.strip()):
                label = _LABEL.match(line)
                index = position
                if label and not _NUMBER.match(line.strip()):
                    index = int(label.group(1)) - 1
                    line = label.group(2)
                numbers = _NUMBER.findall(line)
                if not numbers:
                    raise ValueError(f"could not read an address in {line.strip()!r}: write it "
                                     "in hex, e.g. 0x7ffff7fe9000")
                if not 0 <= index < n:
                    raise ValueError(f"there {'is' if n == 1 else 'are'} only {n} call"
                                     f"{'s' if n > 1 else ''}: no call {index + 1}")
                got[index] = int(numbers[0], 16)
                position = index + 1
        elif isinstance(student, int) and not isinstance(student, bool):
            got[0] = student
        elif isinstance(student, (list, tuple)):
            if len(student) > n:
                raise ValueError(f"there are only {n} calls, but the answer has {len(student)} "
                                 "addresses")
            for i, item in enumerate(student):
                value = _int(item) if not isinstance(item, str) else (
                    int(_NUMBER.search(item).group(1), 16) if _NUMBER.search(item) else None)
                if value is None:
                    raise ValueError(f"could not read {item!r} as an address")
                got[i] = value
        else:
            raise ValueError(f"could not read an answer of type {type(student).__name__}")
        return got

    def check(self, student):
        try:
            got = self._read_student(student)
        except ValueError as exc:
            return Feedback(False, [str(exc)])
        mistakes = []
        for i, truth in enumerate(self.answer):
            head = f"call {i + 1}: "
            if i not in got:
                mistakes.append(head + "no answer")
            elif got[i] != truth:
                mistakes.append(head + self._mistake(i, got[i]))
        return Feedback(not mistakes, _unique(mistakes))

    def _mistake(self, i, said):
        hint, pages, prot = self.calls[i]
        length = pages * P
        truth = self.answer[i]
        base = self.process.mm.mmap_base
        ranges = self.snapshots[i]
        gaps = self._gaps(ranges)
        if said % P:
            return "mmap returns a page-aligned address"
        if hint:
            refused = self._hint_refusal(i)
            if refused is None:
                return (f"the hint {hint:#x} was free for {pages} page{'s' if pages > 1 else ''}, "
                        "so the kernel used it as it is (a hint is honoured when the range is free)")
            if said == hint:
                return f"the kernel ignored the hint: {refused}; it searched top-down as for NULL"
        if i and said == self._without_earlier_calls(i):
            return (f"call 1's mapping at {self.answer[0]:#x} is there now: call {i + 1} sees the "
                    "address space as call 1 left it")
        if said >= base:
            return (f"the search looks below mmap_base ({base:#x}) only; the space above it is "
                    "kept for the stack")
        end = said + length
        for start, vend, _, name in ranges:
            if start < end and said < vend:
                gap = next(((a, b) for a, b in gaps if a <= said < b or a < end <= b), None)
                if gap is not None:
                    return (f"the gap [{gap[0]:#x}-{gap[1]:#x}) has only {(gap[1] - gap[0]) // P} "
                            f"page{'s' if gap[1] - gap[0] != P else ''}: too small for {pages}; "
                            f"[{said:#x}-{end:#x}) would overlap {start:08x}-{vend:08x}")
                return f"{said:#x} is already mapped ({start:08x}-{vend:08x}{' ' + name if name else ''})"
        gap = next(((a, b) for a, b in gaps if a <= said < b), None)
        if gap is not None and said == gap[0] and said < truth:
            return ("that is the bottom of a free gap, as a bottom-up search would choose; "
                    "x86-64 searches top-down from mmap_base and puts the mapping at the top "
                    "of the highest gap that fits")
        if gap is not None and gap[0] <= truth < gap[1]:
            return ("right gap, wrong end: top-down, the mapping goes at the top of the gap, "
                    "ending where the VMA above it starts")
        if said < truth:
            return ("a higher gap below mmap_base is big enough: the top-down search takes the "
                    "highest gap that fits")
        return (f"the kernel takes the highest free range of {pages} page{'s' if pages > 1 else ''} "
                "below mmap_base")

    def _replay(self, i, earlier=True, hint=None):
        """What call ``i`` returns on a fresh machine: after the calls before it (or not, with
        ``earlier=False``), with its own hint (or ``hint``)."""
        m = _machine()
        p = m.spawn()
        for start, pages, prot in self.setup:
            p.mmap(start, pages * P, _PROTS[prot], _ANON | F.MAP_FIXED)
        for before in self.calls[:i] if earlier else ():
            p.mmap(before[0], before[1] * P, _PROTS[before[2]], _ANON)
        own, pages, prot = self.calls[i]
        return p.mmap(own if hint is None else hint, pages * P, _PROTS[prot], _ANON)

    def _without_earlier_calls(self, i):
        """What call ``i`` would return if the calls before it had not been made."""
        return self._replay(i, earlier=False)

    def _without_hint(self, i):
        """What call ``i`` would return with no hint."""
        return self._replay(i, hint=0)
