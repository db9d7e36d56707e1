"""``merge``: after one mmap or mprotect next to existing VMAs, which VMAs are there, and
did the range merge with the VMA before it, after it, both or neither (and if not, why)."""

import re

from ...core import flags as F
from .base import (P, Exercise, Feedback, _ANON_FIXED, _int, _machine, _pg, _unique, _PROTS, _PROT_C,
                   _MAPS_LINE, _line_text)

_SIDES = ("prev", "next")
_SIDE_WORD = {"prev": "previous", "next": "next"}
#: The reasons a touching neighbour refuses, as a student names them.
REASONS = ("flags", "anon_vma", "file", "pgoff")
_REASON_WORDS = (
    ("anon_vma", re.compile(r"anon[_ ]?vma|fork", re.I)),
    ("pgoff", re.compile(r"pgoff|offset|contig", re.I)),
    ("file", re.compile(r"\bfiles?\b|anonymous|backing", re.I)),
    ("flags", re.compile(r"flag|perm|prot|account|noreserve|vm_[a-z]+|hidden|rwx|\br[-w][-x]", re.I)),
)
_NO_REASON = re.compile(r"^\s*(-|none|n/?a|merged?|not adjacent|not touching|no neighbou?r|nothing)\s*$", re.I)
_MERGE_LINE = re.compile(r"^\s*(?:\(?b\)?\s*[:.)]?\s*)?merged?\s*(?:with)?\s*[:=]?\s*"
                         r"(prev(?:ious)?|next|both|none|neither|no)\b", re.I)
_REASON_LINE = re.compile(r"^\s*(prev(?:ious)?|next)\s*(?:vma)?\s*[:=]\s*(.*)$", re.I)
_HEADING = re.compile(r"^\s*\(?[ab]\)?\s*[:.)]?\s*$", re.I)
_FILE_PAGES = 16


def _side(word):
    word = word.lower()
    return "prev" if word.startswith("prev") else "none" if word in ("neither", "no") else word


def reason_of(text):
    """The reason named by one of :func:`vmwidgets.views.narration._refusal`'s sentences."""
    for start, reason in (("is a special mapping", "special"), ("has other permissions", "flags"),
                          ("has other flags", "flags"), ("maps something else", "file"),
                          ("has another anon_vma", "anon_vma"), ("was forked", "anon_vma"),
                          ("has no anon_vma", "anon_vma"), ("is not contiguous", "pgoff")):
        if text.startswith(start):
            return reason
    return "other"


class Merge(Exercise):
    """One mmap or mprotect next to 1-3 VMAs of an arena (some written to, so they have an
    anon_vma; some mapping a file at an offset; some with other flags, seen or hidden).
    Which VMAs are there after it, and did the range merge with prev, next, both or none;
    for each touching neighbour it did not merge with, why (``flags``, ``anon_vma``,
    ``file``, ``pgoff``).

    The answer is a dict: ``lines`` (the arena's ``(start, end, perms)`` after the call),
    ``merge`` (``"prev"``, ``"next"``, ``"both"`` or ``"none"``), ``reasons`` (side ->
    reason, for the touching neighbours that refused) and ``why`` (side -> the kernel's
    reason in words). ``check`` takes text (maps lines, a ``merge: ...`` line and a
    ``next: <reason>`` line per refusing neighbour) or a dict with ``lines``, ``merge`` and
    ``reasons``.

    >>> ex = Merge(3)
    >>> text = "\\n".join([_line_text(l) for l in ex.answer["lines"]]
    ...                  + ["merge: " + ex.answer["merge"]]
    ...                  + [f"{s}: {r}" for s, r in ex.answer["reasons"].items()])
    >>> ex.check(text).correct
    True
    """

    kind = "merge"
    summary = "after an mmap or mprotect next to VMAs: merged with prev, next, both or none, and why"
    NPAGES = 16

    def _build(self):
        rng = self.rng
        family = rng.choice(["new", "new", "file", "mprotect", "mprotect"])
        setup, op = {"new": self._new_range, "file": self._file_range,
                     "mprotect": self._mprotect}[family](rng)
        self.family, self.setup, self.op = family, setup, op
        m = _machine()
        p = m.spawn()
        fds = {}
        for call in setup:
            self._apply(m, p, fds, call)
        self.before_lines = self._lines(p)
        touching = self._touching(p, op)
        self._apply(m, p, fds, op)
        self.outcome = list(m.events[-1].outcome)
        self.machine, self.process = m, p
        from ...views.narration import _refusal
        start, end = _pg(op[1]), _pg(op[1] + op[2])
        now = p.mm.vma_lookup(start)
        merged = {"prev": False, "next": False}
        for side, nb in touching.items():
            if nb is not None:
                merged[side] = (now.vm_start <= nb[0] if side == "prev" else now.vm_end >= nb[1])
        merge = ("both" if merged["prev"] and merged["next"] else "prev" if merged["prev"] else
                 "next" if merged["next"] else "none")
        why = {}
        for side, nb in touching.items():
            if nb is not None and not merged[side]:
                vma = p.mm.vma_lookup(nb[0])
                why[side] = _refusal(vma, now, _SIDE_WORD[side])
        self.touching = {s: (nb[0], nb[1], nb[2]) if nb else None for s, nb in touching.items()}
        self.survivor = (now.id, None)
        self._ids = {s: nb[3] for s, nb in touching.items() if nb is not None}
        self.answer = {"lines": self._lines(p), "merge": merge,
                       "reasons": {s: reason_of(t) for s, t in why.items()}, "why": why}
        self.params.update(pid=p.pid, arena=f"{_pg(0):#x}-{_pg(self.NPAGES):#x}", calls=len(setup) + 1)
        self.question = self._question(p)
        self.worked_answer = self._explain(p, now)

    # -- the setups --------------------------------------------------------------------------------
    @staticmethod
    def _neighbour(rng, page, pages, prot, kind):
        """Calls making an anonymous VMA at ``page``: ``plain``, ``written`` (an anon_vma),
        ``noreserve`` (MAP_NORESERVE), or mapped rw and made read-only after a write
        (``ro after write``: VM_ACCOUNT kept) or before any (``ro unwritten``: dropped)."""
        if kind in ("ro after write", "ro unwritten"):
            calls = [("mmap", page, pages, "rw", {})]
            if kind == "ro after write":
                calls.append(("write", page + rng.randrange(pages)))
            return calls + [("mprotect", page, pages, "r")]
        calls = [("mmap", page, pages, prot, {"noreserve": True} if kind == "noreserve" else {})]
        if kind == "written" and prot == "rw":
            calls.append(("write", page + rng.randrange(pages)))
        return calls

    def _new_range(self, rng):
        """Anonymous neighbours around a hole; the new mapping fills (part of) the hole.
        The theme decides what may keep them apart: permissions, anon_vmas, hidden flags."""
        a = rng.randrange(2, 5)
        hole = rng.randrange(1, 4)
        b = a + hole
        sides = rng.choice([("prev", "next")] * 4 + [("prev",), ("next",)])
        theme = rng.choices(["perms", "anon_vma", "hidden"], [2, 2, 1])[0]
        setup, seen = [], {}
        for side in sides:
            if theme == "perms":
                prot, kind = rng.choices(["rw", "r", "rx"], [3, 3, 1])[0], "plain"
            elif theme == "anon_vma":
                prot, kind = "rw", rng.choices(["written", "plain"], [3, 1])[0]
            else:
                prot = rng.choice(["rw", "r"])
                kind = rng.choice(["noreserve", "ro after write", "ro unwritten", "plain"])
            page, pages = (0, a) if side == "prev" else (b, rng.randrange(2, 5))
            setup += self._neighbour(rng, page, pages, prot, kind)
            seen[side] = "r" if kind.startswith("ro ") else prot
        start, end = a, b
        if hole > 1 and rng.random() < 0.25:
            start, end = (a, b - 1) if rng.random() < 0.5 else (a + 1, b)
        prot = rng.choice(list(seen.values())) if rng.random() < 0.85 else rng.choice(["rw", "r"])
        extra = {"noreserve": True} if theme == "hidden" and rng.random() < 0.2 else {}
        return setup, ("mmap", start, end - start, prot, extra)

    def _file_range(self, rng):
        """Neighbours mapping /data (read-only, private) at offsets; the new mapping maps
        /data (or /other, or anonymous memory) at an offset that may or may not follow."""
        a = rng.randrange(1, 4)
        hole = rng.randrange(1, 3)
        b = a + hole
        off_prev = rng.randrange(0, 4)
        contiguous_next = rng.random() < 0.6
        off_next = off_prev + a + hole if contiguous_next else rng.randrange(0, 8)
        sides = rng.choice([("prev", "next")] * 3 + [("prev",), ("next",)])
        setup = [("file", "/data"), ("file", "/other"), ("open", "/data"), ("open", "/other")]
        if "prev" in sides:
            setup.append(("mmap", 0, a, "r", {"file": "/data", "offset": off_prev}))
        if "next" in sides:
            setup.append(("mmap", b, rng.randrange(1, 4), "r", {"file": "/data", "offset": off_next}))
        if "prev" in sides and rng.random() < 0.25:
            setup.append(("read", rng.randrange(a)))
        what = rng.choices(["follow prev", "lead next", "other offset", "other file", "anon"],
                           [4, 3, 2, 1, 1])[0]
        offset = {"follow prev": off_prev + a, "lead next": off_next - hole,
                  "other offset": rng.randrange(0, 8)}.get(what, off_prev + a)
        offset = max(0, min(offset, _FILE_PAGES - hole))
        if what == "anon":
            return setup, ("mmap", a, hole, "r", {})
        return setup, ("mmap", a, hole, "r",
                       {"file": "/other" if what == "other file" else "/data", "offset": offset})

    def _mprotect(self, rng):
        """Two or three adjacent VMAs with different permissions; mprotect the head, the
        tail or all of the middle one, usually to a neighbour's permissions."""
        sides = rng.choice([("prev", "next")] * 3 + [("prev",), ("next",)])
        a = rng.randrange(2, 5) if "prev" in sides else 0
        b = a + rng.randrange(2, 6)
        middle = rng.choice(["rw", "r", "rx"])
        setup = []
        prots = {}
        for side in sides:
            prot = rng.choice([k for k in ("rw", "r", "rx") if k != middle])
            prots[side] = prot
            page, pages = (0, a) if side == "prev" else (b, rng.randrange(2, 5))
            kind = rng.choices(["plain", "written", "ro after write", "ro unwritten"], [4, 3, 1, 1])[0]
            setup += self._neighbour(rng, page, pages, prot, kind)
        setup.append(("mmap", a, b - a, middle, {}))
        if middle == "rw" and rng.random() < 0.5:
            setup.append(("write", a + rng.randrange(b - a)))
        part = rng.choice(["head", "tail", "all", "all"])
        if part == "head" or (part == "tail" and "next" not in sides):
            start, end = a, a + rng.randrange(1, b - a)
        elif part == "tail":
            start, end = b - rng.randrange(1, b - a), b
        else:
            start, end = a, b
        near = [s for s in sides if (s == "prev" and start == a) or (s == "next" and end == b)]
        seen = {s: ("r" if any(c[0] == "mprotect" for c in setup if c[1] == (0 if s == "prev" else b))
                    else prots[s]) for s in sides}
        choices = [seen[s] for s in near if seen[s] != middle]
        prot = (rng.choice(choices) if choices and rng.random() < 0.85 else
                rng.choice([k for k in ("rw", "r", "rx", "none") if k != middle]))
        return setup, ("mprotect", start, end - start, prot)

    # -- running -----------------------------------------------------------------------------------
    @staticmethod
    def _apply(m, p, fds, call):
        kind = call[0]
        if kind == "file":
            m.create_file(call[1], bytes(range(256)) * (_FILE_PAGES * P // 256))
        elif kind == "open":
            fds[call[1]] = p.open(call[1])
        elif kind == "mmap":
            _, page, pages, prot, extra = call
            flags = _ANON_FIXED | (F.MAP_NORESERVE if extra.get("noreserve") else 0)
            if "file" in extra:
                flags = F.MAP_PRIVATE | F.MAP_FIXED
                p.mmap(_pg(page), pages * P, _PROTS[prot], flags, fds[extra["file"]],
                       extra["offset"] * P)
            else:
                p.mmap(_pg(page), pages * P, _PROTS[prot], flags)
        elif kind == "mprotect":
            p.mprotect(_pg(call[1]), call[2] * P, _PROTS[call[3]])
        elif kind == "write":
            p.write(_pg(call[1]), b"x")
        elif kind == "read":
            p.read(_pg(call[1]), 1)

    def _lines(self, p):
        return [(v.vm_start, v.vm_end, v.perms()) for v in p.mm.vmas_in(_pg(0), _pg(self.NPAGES))]

    @staticmethod
    def _touching(p, op):
        """The VMAs that touch the range and could merge with it: side -> (start, end,
        perms, vma id) or None."""
        start, end = _pg(op[1]), _pg(op[1] + op[2])
        out = {"prev": None, "next": None}
        if op[0] == "mmap":
            prev, nxt = p.mm.find_vma(start - 1), p.mm.find_vma(end)
            if prev is not None and prev.vm_end == start:
                out["prev"] = prev
            if nxt is not None and nxt.vm_start == end:
                out["next"] = nxt
        else:
            middle = p.mm.vma_lookup(start)
            if start == middle.vm_start:
                prev = p.mm.vma_prev(middle)
                if prev is not None and prev.vm_end == start:
                    out["prev"] = prev
            if end == middle.vm_end:
                nxt = p.mm.vma_next(middle)
                if nxt is not None and nxt.vm_start == end:
                    out["next"] = nxt
        return {s: None if v is None else (v.vm_start, v.vm_end, v.perms(), v.id)
                for s, v in out.items()}

    # -- text --------------------------------------------------------------------------------------
    @staticmethod
    def _call_text(call):
        kind = call[0]
        if kind == "file":
            return None
        if kind == "open":
            return f'fd_{call[1][1:]} = open("{call[1]}", O_RDONLY)'
        if kind == "mmap":
            _, page, pages, prot, extra = call
            if "file" in extra:
                return (f"mmap({_pg(page):#x}, {pages} * P, {_PROT_C[_PROTS[prot]]}, "
                        f"MAP_PRIVATE|MAP_FIXED, fd_{extra['file'][1:]}, {extra['offset']} * P)")
            flags = "MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED" + ("|MAP_NORESERVE" if extra.get("noreserve") else "")
            return f"mmap({_pg(page):#x}, {pages} * P, {_PROT_C[_PROTS[prot]]}, {flags}, -1, 0)"
        if kind == "mprotect":
            return f"mprotect({_pg(call[1]):#x}, {call[2]} * P, {_PROT_C[_PROTS[call[3]]]})"
        if kind == "write":
            return f"*(char *){_pg(call[1]):#x} = 'x';      /* a write fault */"
        return f"c = *(char *){_pg(call[1]):#x};      /* a read fault */"

    def _question(self, p):
        n = self.NPAGES
        lines = [f"Process {p.pid} has nothing mapped in {_pg(0):#x}-{_pg(n):#x} (P = {P:#x})."]
        if any(c[0] == "file" for c in self.setup):
            lines[0] += f" /data and /other are files of {_FILE_PAGES} pages."
        lines.append("It runs:")
        calls = [t for t in (self._call_text(c) for c in self.setup) if t]
        lines += [f"  {i}. {t}" for i, t in enumerate(calls, 1)]
        lines += ["The arena's maps lines are now:"]
        lines += [f"  {_line_text(l)}" for l in self.before_lines]
        lines += ["Then it calls:", f"  {len(calls) + 1}. {self._call_text(self.op)}",
                  "(a) Which lines does /proc/PID/maps show in the arena after this call?",
                  "(b) Did the range of this call merge with the VMA before it (prev), the VMA "
                  "after it (next), both, or none? For each VMA touching the range that it did "
                  "not merge with, say why: flags (permissions or hidden VM_* flags), anon_vma, "
                  "file (a different file, or file vs anonymous) or pgoff (offsets not "
                  "contiguous).",
                  "Write the maps lines as 'start-end perms', then 'merge: prev|next|both|none', "
                  "then 'prev: <why>' or 'next: <why>' for a touching VMA that stayed apart, e.g.",
                  "  12340000-12344000 rw-p", "  12344000-12346000 r--p", "  merge: none",
                  "  next: flags"]
        return "\n".join(lines)

    def _explain(self, p, now):
        a = self.answer
        n = len([c for c in self.setup if c[0] != "file"]) + 1
        out = [f"{n}. {self._call_text(self.op)}: " + "; ".join(self.outcome)]
        for side in _SIDES:
            nb = self.touching[side]
            if nb is None:
                out.append(f"   No VMA touches the range on the {side} side.")
            elif side in a["why"]:
                out.append(f"   {side} {_line_text(nb)} stayed apart: it {a['why'][side]}.")
            else:
                same = ("are both anonymous memory" if now.vm_file is None else
                        f"map {now.vm_file.path} at contiguous offsets")
                out.append(f"   {side} {_line_text(nb)} merged: they touch, their flags are equal "
                           f"(hidden ones too), they {same}, and their anon_vmas are compatible.")
        out += ["", "Answer:"] + [f"  {_line_text(l)}" for l in a["lines"]]
        out.append(f"  merge: {a['merge']}")
        out += [f"  {side}: {a['reasons'][side]}" for side in a["why"]]
        vid = self.survivor[0]
        if a["merge"] != "none":
            was = [side for side in self._ids if self._ids[side] == vid]
            out += ["", f"The VMA now covering the range is the object with id {vid}"
                    + (f", the {_SIDE_WORD[was[0]]} VMA's: the kernel grew that neighbour over the "
                       "range instead of making a new VMA." if was else ".")]
        out += ["", "Rules (mm/vma.c): vma_merge_new_range() (mmap) and "
                "vma_merge_existing_range() (mprotect) merge a range with a touching VMA only if "
                "the flags are equal (is_mergeable_vma: every VM_* bit but VM_SOFTDIRTY, and the "
                "same file), the anon_vmas are compatible (is_mergeable_anon_vma), and the page "
                "offsets continue (vm_pgoff; anonymous VMAs use addr >> PAGE_SHIFT, so they always "
                "do). Merging with both sides also needs prev and next to agree on the anon_vma."]
        return "\n".join(out)

    # -- checking ---------------------------------------------------------------------------------
    @staticmethod
    def _reason(text):
        if text is None or _NO_REASON.match(str(text)):
            return None
        for reason, pattern in _REASON_WORDS:
            if pattern.search(str(text)):
                return reason
        raise ValueError(f"could not read the reason {str(text).strip()!r}: say flags, "
                         "anon_vma, file or pgoff")

    def _read_student(self, student):
        lines, merge, reasons = [], None, {}
        if isinstance(student, str):
            for raw in student.splitlines():
                if not raw.strip() or _HEADING.match(raw):
                    continue
                line = re.sub(r"^\s*\(?[ab]\)\s*", "", raw)
                maps = _MAPS_LINE.search(line)
                merge_m = _MERGE_LINE.match(line)
                reason_m = _REASON_LINE.match(line)
                if maps:
                    lines.append((int(maps.group(1), 16), int(maps.group(2), 16), maps.group(3)))
                elif merge_m:
                    merge = _side(merge_m.group(1))
                elif reason_m:
                    reasons[_side(reason_m.group(1))] = self._reason(reason_m.group(2))
                else:
                    raise ValueError(f"could not read {raw.strip()!r}: write maps lines "
                                     "'start-end perms', 'merge: prev|next|both|none' and "
                                     "'next: <why>'")
        elif isinstance(student, dict):
            for item in student.get("lines", student.get("maps", [])):
                if isinstance(item, str):
                    maps = _MAPS_LINE.search(item)
                    if not maps:
                        raise ValueError(f"could not read {item!r} as 'start-end perms'")
                    lines.append((int(maps.group(1), 16), int(maps.group(2), 16), maps.group(3)))
                elif isinstance(item, (list, tuple)) and len(item) == 3:
                    lines.append((_int(item[0]), _int(item[1]), str(item[2])))
                else:
                    raise ValueError(f"could not read {item!r} as (start, end, perms)")
            if student.get("merge") is not None:
                word = str(student["merge"]).strip()
                if not re.fullmatch(r"prev(ious)?|next|both|none|neither|no", word, re.I):
                    raise ValueError(f"could not read the merge {word!r}: say prev, next, both "
                                     "or none")
                merge = _side(word)
            for side, why in dict(student.get("reasons") or {}).items():
                if not re.fullmatch(r"prev(ious)?|next", str(side), re.I):
                    raise ValueError(f"could not read the side {side!r}: say prev or next")
                reasons[_side(str(side))] = self._reason(why)
        else:
            raise ValueError(f"could not read an answer of type {type(student).__name__}")
        return lines, merge, {s: r for s, r in reasons.items() if r is not None}

    def check(self, student):
        try:
            lines, merge, reasons = self._read_student(student)
        except ValueError as exc:
            return Feedback(False, [str(exc)])
        a = self.answer
        mistakes = []
        if not lines:
            mistakes.append("(a) list the arena's maps lines after the call")
        else:
            mistakes += self._line_mistakes(lines)
        if merge is None:
            mistakes.append("(b) say whether it merged: 'merge: prev', 'next', 'both' or 'none'")
        elif merge != a["merge"]:
            mistakes += self._merge_mistakes(merge)
        for side in _SIDES:
            said, truth = reasons.get(side), a["reasons"].get(side)
            nb = self.touching[side]
            if said == truth:
                continue
            if truth is None:
                if said is None:
                    continue
                if nb is None:
                    mistakes.append(f"no VMA touches the range on the {side} side, so there is "
                                    "nothing to refuse")
                elif merge == a["merge"]:
                    mistakes.append(f"it merged with {side}: no reason to give for {side}")
                continue
            if said is None:
                mistakes.append(f"say why it did not merge with {side} ({_line_text(nb)}): "
                                "flags, anon_vma, file or pgoff")
            else:
                mistakes.append(f"{side} ({_line_text(nb)}) did not refuse because of "
                                f"{said}: " + self._not_because(side, said))
        return Feedback(not mistakes, _unique(mistakes))

    def _line_mistakes(self, got):
        truth = self.answer["lines"]
        if got == truth:
            return []
        out = []
        for line in got:
            if line in truth:
                continue
            covering = [t for t in truth if t[0] < line[1] and line[0] < t[1]]
            if len(covering) > 1:
                out.append(f"{_line_text(line)} is {len(covering)} VMAs: "
                           + ", ".join(_line_text(t) for t in covering) + " stay apart")
            elif covering and covering[0][0] <= line[0] and line[1] <= covering[0][1]:
                whole = covering[0]
                if whole[2] != line[2]:
                    out.append(f"{_line_text(line)}: the range is {whole[2]} after the call")
                else:
                    out.append(f"{_line_text(line)} is only part of the VMA {_line_text(whole)}: "
                               "the merge made one VMA of it")
            elif covering:
                out.append(f"{_line_text(line)} does not match the VMA {_line_text(covering[0])}")
            else:
                out.append(f"nothing is mapped at {_line_text(line)} after the call")
        for line in truth:
            if not any(g[0] < line[1] and line[0] < g[1] for g in got):
                out.append(f"missing the line {_line_text(line)}")
        if not out:
            out.append("list the lines once each, in address order, as maps does")
        return out

    def _merge_mistakes(self, said):
        a = self.answer
        truth = a["merge"]
        merged = {"prev": truth in ("prev", "both"), "next": truth in ("next", "both")}
        claimed = {"prev": said in ("prev", "both"), "next": said in ("next", "both")}
        out = []
        for side in _SIDES:
            if claimed[side] == merged[side]:
                continue
            nb = self.touching[side]
            if claimed[side] and nb is None:
                out.append(f"no VMA touches the range on the {side} side: there is no {side} to "
                           "merge with")
            elif claimed[side]:
                out.append(f"it did not merge with {side} ({_line_text(nb)}): that VMA refused")
            else:
                out.append(f"it did merge with {side} ({_line_text(nb)}): they touch and "
                           "nothing keeps them apart")
        return out or [f"it merged with {truth}, not {said}"]

    def _not_because(self, side, said):
        """Why ``said`` is not what kept ``side`` apart."""
        p = self.process
        nb = p.mm.vma_lookup(self.touching[side][0])
        rng = p.mm.vma_lookup(_pg(self.op[1]))
        if said == "flags":
            return (f"the flags match ({nb.perms()} both, and no hidden VM_* flag differs)"
                    if not (nb.vm_flags ^ rng.vm_flags) & ~F.VM_SOFTDIRTY else
                    "the flags differ, but the kernel refused for another reason first")
        if said == "anon_vma":
            if nb.anon_vma is None or rng.anon_vma is None:
                return ("an anon_vma on one side only does not stop a merge (the merged VMA "
                        "takes it over)" if (nb.anon_vma or rng.anon_vma) else
                        "neither has an anon_vma yet")
            return "they share the same anon_vma"
        if said == "pgoff":
            if nb.vm_file is None:
                return ("anonymous VMAs have vm_pgoff = address >> PAGE_SHIFT, so their offsets "
                        "always continue")
            return "the file offsets continue across the boundary"
        if said == "file":
            what = nb.vm_file.path if nb.vm_file else "anonymous memory"
            return f"both map the same thing ({what})"
        return "that is not the reason"
