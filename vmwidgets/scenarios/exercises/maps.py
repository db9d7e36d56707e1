"""``maps``: predict the /proc/PID/maps lines of an arena after mmap/munmap/mprotect calls."""

from ...core import flags as F
from .base import P, Exercise, Feedback, _ANON_FIXED, _machine, _pg, _int, _unique, _PROTS, _PROT_C, _MAPS_LINE, _arena_state, _arena_lines, _line_text


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

