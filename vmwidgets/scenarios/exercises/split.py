"""``split``: which munmap/mprotect calls split a VMA, and which fail at vm.max_map_count."""

import re
from errno import ENOMEM

from .base import (P, Exercise, Feedback, _ANON_FIXED, _PROTS, _PROT_C, _machine, _pg, _int,
                   _unique)

_OK = "ok"
_ENOMEM = "ENOMEM"
_WORD_OK = {"ok", "okay", "success", "succeeds", "succeed", "succeeded", "works", "yes"}
_WORD_FAIL = {"enomem", "fail", "fails", "failed", "error", "nomem"}
_INDEX = re.compile(r"^\s*(?:call\s*)?(\d+)\s*[.):]\s*", re.IGNORECASE)


class Split(Exercise):
    """munmap and mprotect calls on one or two VMAs, with vm.max_map_count set just above
    the process's number of VMAs: does each call succeed or fail with ENOMEM, and what is
    ``map_count`` after it?

    The answer is a list with one ``(result, map_count)`` per call, ``result`` being
    ``"ok"`` or ``"ENOMEM"``. ``check`` takes text, one line per call such as ``1. ok 11``
    or ``2. ENOMEM 11``, or such a list.

    >>> ex = Split(3)
    >>> ex.check("\\n".join(f"{i}. {r} {n}" for i, (r, n) in enumerate(ex.answer, 1))).correct
    True
    """

    kind = "split"
    summary = "which munmap/mprotect calls split a VMA, and which fail at vm.max_map_count"
    NPAGES = 16

    def _build(self):
        rng = self.rng
        m = _machine()
        p = m.spawn()
        self.machine, self.process = m, p
        self.setup = self._setup(rng, p)
        self.start_count = p.mm.map_count
        self.limit = self.start_count + rng.choice([0, 1, 1, 1, 2])
        m.set_sysctl("vm.max_map_count", self.limit)
        self.steps = []
        for _ in range(rng.randrange(2, 5)):
            call = self._next_call(rng, p)
            if call is None:
                break
            self.steps.append(self._run(p, call))
        self.answer = [(s["result"], s["after"]) for s in self.steps]
        self.params.update(pid=p.pid, arena=f"{_pg(0):#x}-{_pg(self.NPAGES):#x}",
                           max_map_count=self.limit, calls=len(self.steps))
        self.question = self._question()
        self.worked_answer = self._explain()

    # -- generating -------------------------------------------------------------------------------
    def _setup(self, rng, p):
        """One or two VMAs in the arena; returns the mmap calls made."""
        calls = []
        a0, na = rng.randrange(0, 3), rng.randrange(6, 10)
        calls.append((a0, na, "rw"))
        if rng.random() < 0.5:
            gap = rng.choice([0, 0, 1, 2])
            b0 = a0 + na + gap
            nb = min(rng.randrange(3, 6), self.NPAGES - b0)
            if nb >= 2:
                calls.append((b0, nb, "r" if gap == 0 else rng.choice(["r", "rw"])))
        for start, count, prot in calls:
            p.mmap(_pg(start), count * P, _PROTS[prot], _ANON_FIXED)
        return calls

    def _arena(self, p):
        """The arena's VMAs as ``(first page, end page, perms, vma id)``."""
        return [((v.vm_start - _pg(0)) // P, (v.vm_end - _pg(0)) // P, v.perms(), v.id)
                for v in p.mm.vmas_in(_pg(0), _pg(self.NPAGES))]

    def _next_call(self, rng, p):
        vmas = self._arena(p)
        if not vmas:
            return None
        choices = ["mprotect-middle", "mprotect-middle", "mprotect-edge", "munmap-middle",
                   "munmap-middle", "munmap-edge", "munmap-whole", "mprotect-whole"]
        if len(vmas) > 1:
            choices += ["munmap-span", "mprotect-join", "mprotect-join"]
        what = rng.choice(choices)
        big = [v for v in vmas if v[1] - v[0] >= 3]
        if what.endswith("middle") and not big:
            what = what.split("-")[0] + "-edge"
        if what.endswith("edge") and not [v for v in vmas if v[1] - v[0] >= 2]:
            what = what.split("-")[0] + "-whole"
        if what == "munmap-span":
            i = rng.randrange(len(vmas) - 1)
            a, b = vmas[i], vmas[i + 1]
            start = rng.randrange(a[0], a[1])
            end = rng.randrange(b[0] + 1, b[1] + 1)
            return ("munmap", start, end - start, None)
        if what == "mprotect-join":
            i = rng.randrange(len(vmas) - 1)
            a, b = vmas[i], vmas[i + 1]
            if a[1] == b[0] and a[2] != b[2]:
                if rng.random() < 0.5:          # the head of b takes a's protection
                    return ("mprotect", b[0], rng.randrange(1, b[1] - b[0] + 1), _prot_key(a[2]))
                count = rng.randrange(1, a[1] - a[0] + 1)   # the tail of a takes b's
                return ("mprotect", a[1] - count, count, _prot_key(b[2]))
            what = "mprotect-middle" if big else "mprotect-whole"
        kind, where = what.split("-")
        pool = big if where == "middle" else [v for v in vmas if v[1] - v[0] >= 2] \
            if where == "edge" else vmas
        v = rng.choice(pool)
        size = v[1] - v[0]
        if where == "middle":
            start = rng.randrange(v[0] + 1, v[1] - 1)
            count = rng.randrange(1, v[1] - start)
        elif where == "edge":
            count = rng.randrange(1, size)
            start = v[0] if rng.random() < 0.5 else v[1] - count
        else:
            start, count = v[0], size
        prot = None
        if kind == "mprotect":
            prot = rng.choice([k for k in ("r", "rw", "none") if _PROT_C[_PROTS[k]] != _c_of(v[2])])
        return (kind, start, count, prot)

    def _run(self, p, call):
        kind, start, count, prot = call
        before = self._arena(p)
        count_before = p.mm.map_count
        reason = None
        try:
            if kind == "munmap":
                p.munmap(_pg(start), count * P)
            else:
                p.mprotect(_pg(start), count * P, _PROTS[prot])
            result = _OK
        except OSError as exc:
            if exc.errno != ENOMEM:      # not a call the generator makes
                raise
            result, reason = _ENOMEM, getattr(exc, "reason", exc.strerror)
        after = self._arena(p)
        return {"call": call, "result": result, "before": count_before, "after": p.mm.map_count,
                "reason": reason, "vmas_before": before, "vmas_after": after,
                "shape": _shape(before, start, start + count)}

    # -- text ---------------------------------------------------------------------------------------
    @staticmethod
    def _call_text(call):
        kind, start, count, prot = call
        if kind == "munmap":
            return f"munmap({_pg(start):#x}, {count} * P)"
        return f"mprotect({_pg(start):#x}, {count} * P, {_PROT_C[_PROTS[prot]]})"

    def _question(self):
        n = self.NPAGES
        lines = [f"Process {self.process.pid} maps in its arena {_pg(0):#x}-{_pg(n):#x} (P = {P:#x}):"]
        for start, count, prot in self.setup:
            lines.append(f"  mmap({_pg(start):#x}, {count} * P, {_PROT_C[_PROTS[prot]]}, "
                         "MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, -1, 0)")
        lines.append("so /proc/PID/maps shows, in the arena:")
        lines += [f"  {_pg(a):08x}-{_pg(b):08x} {perms}" for a, b, perms, _ in
                  self.steps[0]["vmas_before"]]
        lines += [f"The process now has map_count = {self.start_count} VMAs (the arena's and "
                  f"{self.start_count - len(self.steps[0]['vmas_before'])} others), and root "
                  f"sets vm.max_map_count = {self.limit}.", "Then it makes these calls:"]
        for i, step in enumerate(self.steps, 1):
            lines.append(f"  {i}. {self._call_text(step['call'])}")
        lines += ["It never touches the memory. For each call: does it succeed (ok) or fail "
                  "with ENOMEM, and what is map_count after it?",
                  "Write one line per call: its number, ok or ENOMEM, then map_count, e.g. "
                  "(made-up numbers)",
                  f"  1. ok {self.start_count + 3}",
                  f"  2. ENOMEM {self.start_count + 3}"]
        return "\n".join(lines)

    def _explain(self):
        out = [f"Start: map_count {self.start_count}, vm.max_map_count {self.limit}.", ""]
        for i, step in enumerate(self.steps, 1):
            res = "ok" if step["result"] == _OK else "ENOMEM"
            out.append(f"{i}. {self._call_text(step['call'])} -> {res}, map_count "
                       f"{step['before']} -> {step['after']}")
            out += ["     " + line for line in _wrap(self._why(step))]
            out += [f"     {_pg(a):08x}-{_pg(b):08x} {perms}" for a, b, perms, _ in
                    step["vmas_after"]] or ["     (nothing mapped in the arena)"]
        out += ["", "Answer:"] + [f"  {i}. {r} {n}" for i, (r, n) in enumerate(self.answer, 1)]
        out += ["", "A split needs one more VMA. mprotect splits with split_vma(), which refuses "
                "when map_count >= vm.max_map_count; munmap checks the limit only when it punches "
                "a hole in the middle of one VMA (the only case that leaves more VMAs than "
                "before), in vms_gather_munmap_vmas(), and splits with __split_vma()."]
        return "\n".join(out)

    def _why(self, step):
        """Why the call did what it did, read off the VMAs before and after it."""
        kind, start, count, prot = step["call"]
        shape, delta = step["shape"], step["after"] - step["before"]
        limit, before = self.limit, step["before"]
        at_limit = f"map_count {before} >= vm.max_map_count {limit}"
        if kind == "munmap":
            if step["result"] == _ENOMEM:
                return (f"The range is in the middle of one VMA: unmapping it leaves two pieces "
                        f"where there was one, so it needs one VMA more, and {at_limit}: "
                        "vms_gather_munmap_vmas() refuses with ENOMEM before splitting anything. "
                        "Nothing changes.")
            text = {"middle": "The range is in the middle of one VMA: __split_vma() cuts it twice "
                              "and the middle piece is removed; two pieces are left where there "
                              "was one (+1).",
                    "head": "The range is the head of a VMA: one __split_vma(), then the head is "
                            "removed, so the count does not change.",
                    "tail": "The range is the tail of a VMA: one __split_vma(), then the tail is "
                            "removed, so the count does not change.",
                    "whole": "The range is a whole VMA: no split, the VMA is removed (-1).",
                    "span": "The range spans several VMAs (and maybe holes): the first and last "
                            "are cut at the range's edges where needed, and every VMA piece "
                            "inside is removed. munmap checks vm.max_map_count only for a hole "
                            "inside a single VMA."}[shape]
            if shape == "middle":
                text += f" Allowed: map_count {before} < vm.max_map_count {limit}."
            return text
        merged = _merged(step)
        if step["result"] == _ENOMEM:
            if step["after"] == before:
                return (f"mprotect must split the VMA at {_pg(start if shape != 'head' else start + count):#x}, "
                        f"and {at_limit}: split_vma() refuses with ENOMEM. Nothing changes.")
            return (f"The range is in the middle of a VMA, which needs two splits. The first, "
                    f"split_vma() at {_pg(start):#x}, is allowed (map_count {before} < {limit}) "
                    f"and makes map_count {before + 1}; the second, at {_pg(start + count):#x}, "
                    f"finds map_count {before + 1} >= {limit} and fails: ENOMEM. The first "
                    "split is not undone: two VMAs with the same permissions are left side by "
                    "side, and map_count stays one higher although the call failed.")
        if step["vmas_before"] == step["vmas_after"]:
            return "The range already has that protection: nothing to do."
        if merged:
            return (f"The changed range now has the same flags as its neighbour, so "
                    "vma_merge_existing_range() merges it into that VMA instead of splitting: "
                    f"no new VMA is needed, and map_count changes by {delta:+d}.")
        text = {"middle": "The range is in the middle of a VMA: split_vma() twice, three pieces "
                          "where there was one (+2).",
                "head": "The range is the head of a VMA: one split_vma(), two pieces (+1).",
                "tail": "The range is the tail of a VMA: one split_vma(), two pieces (+1).",
                "whole": "The range is a whole VMA: its flags change in place, no split (+0).",
                "span": f"The range covers several VMAs, each changed; map_count {delta:+d}."}[shape]
        if shape in ("middle", "head", "tail"):
            text += f" Allowed: map_count {before} < vm.max_map_count {limit} at each split."
        return text

    # -- checking -----------------------------------------------------------------------------------
    def _read_student(self, student):
        if isinstance(student, str):
            items = [s for s in re.split(r"[\n;]", student) if s.strip()]
        elif isinstance(student, dict):
            try:
                items = [student[k] for k in sorted(student, key=lambda k: _int(k) or 0)]
            except TypeError:
                raise ValueError("could not read the answer: give one (result, map_count) per call")
        elif isinstance(student, (list, tuple)):
            items = list(student)
        else:
            raise ValueError(f"could not read an answer of type {type(student).__name__}: write "
                             "one line per call, e.g. '1. ok 11'")
        out = []
        for item in items:
            out.append(_read_item(item))
        return out

    def check(self, student):
        try:
            got = self._read_student(student)
        except ValueError as exc:
            return Feedback(False, [str(exc)])
        n = len(self.steps)
        if len(got) != n:
            return Feedback(False, [f"give one answer per call: there are {n} calls, you gave "
                                    f"{len(got)}"])
        mistakes = []
        prev_truth = prev_student = self.start_count
        for i, (step, (res, count)) in enumerate(zip(self.steps, got), 1):
            truth_delta = step["after"] - step["before"]
            if res != step["result"]:
                mistakes.append(f"call {i} ({self._call_text(step['call'])}): "
                                + self._wrong_result(step, res))
            elif count is not None and count - prev_student != truth_delta:
                mistakes.append(f"call {i} ({self._call_text(step['call'])}): "
                                + self._wrong_count(step, count - prev_student))
            elif count is None:
                mistakes.append(f"call {i}: give map_count after the call as well")
            prev_truth, prev_student = step["after"], (count if count is not None else prev_student)
        if not mistakes and [c for _, c in got] != [a for _, a in self.answer]:
            mistakes.append(f"map_count starts at {self.start_count}: count from there")
        return Feedback(not mistakes, _unique(mistakes))

    def _wrong_result(self, step, res):
        kind, start, count, _ = step["call"]
        shape = step["shape"]
        if step["result"] == _ENOMEM:
            if kind == "munmap":
                return (f"unmapping the middle of one VMA needs one VMA more, and map_count "
                        f"({step['before']}) is already at vm.max_map_count ({self.limit}): the "
                        "split would exceed max_map_count, so the call fails with ENOMEM and "
                        "nothing changes")
            if step["after"] == step["before"]:
                return (f"the mprotect must split a VMA and map_count ({step['before']}) is "
                        f"already at vm.max_map_count ({self.limit}): split_vma() fails with "
                        "ENOMEM and nothing changes")
            return (f"the mprotect needs two splits; the first brings map_count to "
                    f"{step['before'] + 1} = vm.max_map_count, so the second fails with ENOMEM "
                    "(and the first split stays)")
        if kind == "munmap":
            return {"whole": "munmap of a whole VMA needs no split: it succeeds",
                    "head": "trimming the head of a VMA leaves as many VMAs as before, so munmap "
                            "does not check vm.max_map_count: it succeeds",
                    "tail": "trimming the tail of a VMA leaves as many VMAs as before, so munmap "
                            "does not check vm.max_map_count: it succeeds",
                    "span": "munmap checks vm.max_map_count only for a hole inside a single VMA; "
                            "a range across several VMAs never leaves more VMAs: it succeeds",
                    "middle": f"map_count ({step['before']}) is below vm.max_map_count "
                              f"({self.limit}), so the split is allowed: it succeeds",
                    }.get(shape, "it succeeds")
        if step["vmas_before"] == step["vmas_after"]:
            return "the range already has that protection: nothing to do, it succeeds"
        if _merged(step):
            return ("the changed range joins its neighbour, which has the same flags: "
                    "vma_merge_existing_range() merges instead of splitting, so no new VMA is "
                    "needed and it succeeds")
        if shape == "whole":
            return "mprotect of a whole VMA needs no split: it succeeds"
        return (f"map_count ({step['before']}) is below vm.max_map_count ({self.limit}) at "
                "each split, so it succeeds")

    def _wrong_count(self, step, student_delta):
        kind, _, _, _ = step["call"]
        shape, delta = step["shape"], step["after"] - step["before"]
        before = step["before"]
        if step["result"] == _ENOMEM:
            if delta == 0:
                return f"the call failed and changed nothing: map_count stays {step['after']}"
            return ("the second split failed, but the first one stays: map_count is "
                    f"{step['after']} although the call failed")
        if kind == "munmap":
            return {"middle": "munmap in the middle of a VMA leaves two pieces where there was "
                              "one: map_count grows by 1",
                    "head": "munmap of the head of a VMA only trims it: map_count does not change",
                    "tail": "munmap of the tail of a VMA only trims it: map_count does not change",
                    "whole": "munmap of a whole VMA removes it: map_count drops by 1",
                    }.get(shape, f"map_count goes from {before} to {step['after']}")
        if _merged(step):
            return (f"the changed range merges with its neighbour: map_count goes from {before} "
                    f"to {step['after']} ({delta:+d})")
        return {"middle": "an mprotect in the middle of a VMA makes two new VMAs (3 pieces): "
                          "map_count grows by 2",
                "head": "an mprotect of the head of a VMA splits it in two: map_count grows by 1",
                "tail": "an mprotect of the tail of a VMA splits it in two: map_count grows by 1",
                "whole": "an mprotect of a whole VMA changes it in place: map_count does not "
                         "change",
                }.get(shape, f"map_count goes from {before} to {step['after']}")


def _prot_key(perms):
    return {"r--p": "r", "rw-p": "rw", "---p": "none", "r-xp": "rx"}[perms]


def _c_of(perms):
    return _PROT_C[_PROTS[_prot_key(perms)]]


def _shape(vmas, start, end):
    """Where ``[start, end)`` (pages) falls among ``vmas``: middle, head, tail, whole (of one
    VMA), span (several), or none."""
    inside = [v for v in vmas if v[0] < end and start < v[1]]
    if not inside:
        return "none"
    if len(inside) > 1:
        return "span"
    a, b = inside[0][0], inside[0][1]
    if a < start and end < b:
        return "middle"
    if a < start:
        return "tail"
    if end < b:
        return "head"
    return "whole"


def _merged(step):
    """Did an mprotect merge the range into a neighbour? Only VMAs overlapping the range
    change, so a VMA that lay wholly outside the range before and overlaps it now grew over
    it."""
    _, start, count, _ = step["call"]
    end = start + count
    outside = {v[3] for v in step["vmas_before"] if v[1] <= start or v[0] >= end}
    return any(v[3] in outside and v[0] < end and start < v[1] for v in step["vmas_after"])


def _read_item(item):
    """``(result, map_count)`` from one line of text or a structured item."""
    if isinstance(item, dict):
        res = item.get("result", item.get("ok"))
        count = item.get("map_count", item.get("count"))
        return _read_result(res, item), _read_count(count, item)
    if isinstance(item, (list, tuple)) and len(item) == 2:
        return _read_result(item[0], item), _read_count(item[1], item)
    if not isinstance(item, str):
        raise ValueError(f"could not read {item!r}: give (result, map_count), e.g. ('ok', 11)")
    text = _INDEX.sub("", item, count=1)
    words = [w.lower() for w in re.findall(r"[A-Za-z]+", text)]
    numbers = [int(n) for n in re.findall(r"-?\d+", re.sub(r"(?i)map_count", "", text))]
    res = None
    if any(w in _WORD_FAIL for w in words):
        res = _ENOMEM
    elif any(w in _WORD_OK for w in words):
        res = _OK
    elif len(numbers) == 2 and numbers[0] in (0, -1, -12, 12):
        res = _OK if numbers[0] == 0 else _ENOMEM
        numbers = numbers[1:]
    if res is None:
        raise ValueError(f"could not read {item.strip()!r}: say ok or ENOMEM, then map_count, "
                         "e.g. '1. ok 11'")
    if not numbers:
        return res, None
    return res, numbers[-1]


def _read_result(value, item):
    if value is True or value == 0 or (isinstance(value, str) and value.strip().lower() in _WORD_OK):
        return _OK
    if value is False or value in (ENOMEM, -ENOMEM, -1) or (
            isinstance(value, str) and value.strip().lower() in _WORD_FAIL):
        return _ENOMEM
    raise ValueError(f"could not read the result in {item!r}: ok or ENOMEM")


def _read_count(value, item):
    count = _int(value)
    if count is None:
        raise ValueError(f"could not read map_count in {item!r}")
    return count


def _wrap(text, width=84):
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(line)
    return lines
