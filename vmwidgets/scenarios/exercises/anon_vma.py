"""``anon_vma``: which VMAs have an anon_vma after writes, reads, mprotects and a fork, and
which of them share one."""

import re

from ...core import flags as F
from ...core.rmap import anon_vma_compatible
from .base import P, Exercise, Feedback, _ANON_FIXED, _machine, _pg, _unique

_FILLER = {"and", "anon", "vma", "vmas", "share", "shares", "sharing", "same", "one", "its",
           "own", "has", "have", "group", "is", "are", "the", "with", "of", "an", "a_"}
_NONE = {"none", "no", "nothing", "without"}
_PROTS = {"r": F.PROT_READ, "rw": F.PROT_READ | F.PROT_WRITE,
          "rwx": F.PROT_READ | F.PROT_WRITE | F.PROT_EXEC}
_PROT_C = {F.PROT_READ: "PROT_READ", F.PROT_READ | F.PROT_WRITE: "PROT_READ|PROT_WRITE",
           F.PROT_READ | F.PROT_WRITE | F.PROT_EXEC: "PROT_READ|PROT_WRITE|PROT_EXEC"}


class AnonVmaGroups(Exercise):
    """A few anonymous VMAs, then first writes, reads, mprotects and maybe a fork: which
    VMAs have an anon_vma (``vma->anon_vma``), and which share the same one?

    The VMAs at the end are labelled A, B, C ... (the parent's first, in address order).
    The answer is a dict: ``groups`` (lists of labels sharing one anon_vma, in order of
    their first label) and ``none`` (the labels without one). ``check`` takes text, one line
    per anon_vma with the labels sharing it and a line ``none: ...``, e.g.
    ``"A B\\nC\\nnone: D"`` (or ``"A B; C; none: D"``); or a dict label -> anon_vma id (None
    for none); or that answer dict.

    >>> ex = AnonVmaGroups(3)
    >>> text = "\\n".join([" ".join(g) for g in ex.answer["groups"]]
    ...                   + ["none: " + " ".join(ex.answer["none"])])
    >>> ex.check(text).correct
    True
    """

    kind = "anon_vma"
    summary = "which VMAs have an anon_vma after first writes, mprotect and fork, and which share one"
    NPAGES = 12

    def _build(self):
        rng = self.rng
        m = self.machine = _machine()
        p = m.spawn()
        self.procs = {"p": p}
        self.setup = self._setup(rng, p)
        self.steps = []            # (text, notes): what each event did to anon_vmas
        self.snaps = [self._snap()]
        self.origin = {}           # (name, page) -> (step, sentence): how the page's VMA got it
        self.extra = {}            # step -> more sentences for the worked answer (splits)
        self.refused = {}          # anon_vma id -> why its first write found none to reuse
        nevents = rng.randrange(4, 7)
        writes = 0
        for i in range(nevents):
            r = rng.random()
            if "child" not in self.procs and i >= 1 and r < 0.15:
                self._fork()
                continue
            who = rng.choice(list(self.procs))
            if r < 0.6 or writes < 2 and i >= nevents - 2:
                if self._write(rng, who):
                    writes += 1
                    continue
            if r < 0.78:
                self._read(rng, who)
            else:
                self._mprotect(rng, who)
        while writes < 2:
            if not self._write(rng, "p"):
                self._mprotect(rng, "p", prot="rw")
                continue
            writes += 1
        self._finish()

    # -- building -----------------------------------------------------------------------------------
    def _setup(self, rng, p):
        calls, page = [], rng.randrange(0, 2)
        prot = None
        while page <= self.NPAGES - 2 and len(calls) < 4:
            count = min(rng.randrange(2, 4), self.NPAGES - page)
            choices = ["rw", "rw", "rwx", "r"]
            if prot is not None and rng.random() < 0.8 and calls[-1][0] + calls[-1][1] == page:
                choices = [c for c in choices if c != prot]
            prot = rng.choice(choices if calls else ["rw", "rwx"])
            calls.append((page, count, prot))
            page += count + rng.choice([0, 0, 0, 1])
        for start, count, prot in calls:
            p.mmap(_pg(start), count * P, _PROTS[prot], _ANON_FIXED)
        return calls

    def _snap(self):
        """Per process and page: ``(vma id, anon_vma id or None)``, or None if unmapped."""
        out = {}
        for name, proc in self.procs.items():
            row = []
            for i in range(self.NPAGES):
                vma = proc.mm.vma_lookup(_pg(i))
                row.append(None if vma is None else
                           (vma.id, None if vma.anon_vma is None else vma.anon_vma.id))
            out[name] = row
        return out

    def _pages(self, name, pred):
        proc = self.procs[name]
        out = []
        for i in range(self.NPAGES):
            vma = proc.mm.vma_lookup(_pg(i))
            if vma is not None and pred(vma):
                out.append(i)
        return out

    def _record(self, text, notes=None):
        """Close a step: note the pages whose VMA got an anon_vma in it, and the splits."""
        before, after = self.snaps[-1], self._snap()
        step = len(self.steps) + 1
        notes = dict(notes or {})
        for name, row in after.items():
            old_row = before.get(name, [None] * self.NPAGES)
            for i, now in enumerate(row):
                if now is None or now[1] is None or (name, i) in self.origin:
                    continue
                old = old_row[i]
                if old is None or old[1] is None:
                    self.origin[(name, i)] = (step, notes.get(now[0]) or notes.get("*") or
                                              f"step {step} gave it anon_vma {now[1]}")
        self.steps.append(text)
        self.snaps.append(after)

    def _vma_text(self, vma):
        return f"[{vma.vm_start:#x}-{vma.vm_end:#x} {vma.perms()}]"

    def _write(self, rng, who):
        proc = self.procs[who]
        pages = self._pages(who, lambda v: v.vm_flags & F.VM_WRITE)
        if not pages:
            return False
        fresh = [i for i in pages if proc.mm.vma_lookup(_pg(i)).anon_vma is None]
        page = rng.choice(fresh if fresh and rng.random() < 0.75 else pages)
        vma = proc.mm.vma_lookup(_pg(page))
        step = len(self.steps) + 1
        note = None
        if vma.anon_vma is None:
            why = self._prepare_reasons(vma)
            known = set(self.machine.anon_vmas)
            proc.write(_pg(page), who[0].encode())
            av = vma.anon_vma
            if av.id in known:
                note = (f"step {step}: {who}'s first write fault in {self._vma_text(vma)}: "
                        f"__anon_vma_prepare() reused anon_vma {av.id}: {why[av.id]}")
            else:
                assert len(why) == 1, ("find_mergeable_anon_vma() disagrees", why)
                self.refused[av.id] = why[None]
                note = (f"step {step}: {who}'s first write fault in {self._vma_text(vma)}: "
                        f"__anon_vma_prepare() allocated anon_vma {av.id}, because "
                        f"find_mergeable_anon_vma() found nothing to reuse ({why[None]})")
        else:
            proc.write(_pg(page), who[0].encode())
        self._record(f"{who} writes page {page} ({_pg(page):#x})", {vma.id: note})
        return True

    def _prepare_reasons(self, vma):
        """Before a first write fault in ``vma``: ``{anon_vma id: why it is reusable}`` for a
        neighbour find_mergeable_anon_vma() would take, and ``{None: why none is}``."""
        mm = vma.vm_mm
        out, refusals = {}, []
        for side, nb in (("next", mm.vma_next(vma)), ("previous", mm.vma_prev(vma))):
            if nb is None or not (nb.vm_end == vma.vm_start or nb.vm_start == vma.vm_end):
                continue
            a, b = (vma, nb) if side == "next" else (nb, vma)
            where = f"the {side} VMA {self._vma_text(nb)}"
            if nb.anon_vma is None:
                refusals.append(f"{where} has no anon_vma yet")
            elif not anon_vma_compatible(a, b):
                diff = F.vm_flags_names((a.vm_flags ^ b.vm_flags)
                                        & ~(F.VM_ACCESS_FLAGS | F.VM_SOFTDIRTY))
                refusals.append(f"{where} differs in more than r/w/x ({', '.join(diff)})"
                                if diff else f"{where} is not compatible")
            elif len(nb.anon_vma_chain) != 1:
                refusals.append(f"{where} was forked (its anon_vma_chain has "
                                f"{len(nb.anon_vma_chain)} entries)")
            else:
                out.setdefault(nb.anon_vma.id,
                               f"find_mergeable_anon_vma() found {where}, which touches it, "
                               "differs from it at most in r/w/x, and whose anon_vma was never "
                               "forked")
        out[None] = "; ".join(refusals) or "no VMA touches it on either side"
        return out

    def _read(self, rng, who):
        proc = self.procs[who]
        pages = self._pages(who, lambda v: v.vm_flags & F.VM_READ)
        if not pages:
            return
        page = rng.choice(pages)
        proc.read(_pg(page), 1)
        self._record(f"{who} reads page {page} ({_pg(page):#x})")

    def _mprotect(self, rng, who, prot=None):
        proc = self.procs[who]
        vmas = proc.mm.vmas_in(_pg(0), _pg(self.NPAGES))
        vma = rng.choice(vmas)
        first, last = (vma.vm_start - _pg(0)) // P, (vma.vm_end - _pg(0)) // P
        start = rng.randrange(first, last)
        count = rng.randrange(1, last - start + 1)
        if rng.random() < 0.35:
            start, count = first, last - first
        if prot is not None:
            start, count = first, last - first
        else:
            prot = rng.choice([k for k in ("r", "rw", "rwx") if _PROTS[k] != _prot_of(vma)])
        step = len(self.steps) + 1
        old = {v.id for v in vmas}
        proc.mprotect(_pg(start), count * P, _PROTS[prot])
        notes = {}
        for v in proc.mm.vmas_in(_pg(0), _pg(self.NPAGES)):
            if v.anon_vma is not None and v.id not in old:
                self.extra.setdefault(step, []).append(
                    f"{self._vma_text(v)} was split off a VMA with anon_vma {v.anon_vma.id}: "
                    "__split_vma() gives the new piece the same anon_vma (anon_vma_clone)")
            if v.anon_vma is not None:
                notes[v.id] = (f"step {step}: {who}'s mprotect merged VMAs into "
                               f"{self._vma_text(v)}, and a merge keeps the anon_vma of the "
                               f"side that had one (dup_anon_vma): anon_vma {v.anon_vma.id}")
        self._record(f"{who}: mprotect({_pg(start):#x}, {count} * P, {_PROT_C[_PROTS[prot]]})",
                     notes)

    def _fork(self):
        p = self.procs["p"]
        step = len(self.steps) + 1
        child = p.fork()
        self.procs["child"] = child
        notes = {}
        for v in child.mm.vmas_in(_pg(0), _pg(self.NPAGES)):
            if v.anon_vma is not None:
                parent = p.mm.vma_lookup(v.vm_start).anon_vma
                notes[v.id] = (f"step {step}: fork: anon_vma_fork() gave the child's copy of "
                               f"{self._vma_text(v)} its own anon_vma {v.anon_vma.id}, a child "
                               f"of p's anon_vma {parent.id}; the VMA is chained to both")
        self._record("p forks child", notes)

    # -- the end state --------------------------------------------------------------------------------
    def _finish(self):
        m = self.machine
        self.labels = {}           # label -> (name, vma)
        letters = iter("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
        for name, proc in self.procs.items():
            for vma in proc.mm.vmas_in(_pg(0), _pg(self.NPAGES)):
                self.labels[next(letters)] = (name, vma)
        groups, none = {}, []
        for label, (_, vma) in self.labels.items():
            if vma.anon_vma is None:
                none.append(label)
            else:
                groups.setdefault(vma.anon_vma.id, []).append(label)
        self.ids = {label: (None if vma.anon_vma is None else vma.anon_vma.id)
                    for label, (_, vma) in self.labels.items()}
        self.answer = {"groups": list(groups.values()), "none": none}
        self.params.update(pid=self.procs["p"].pid, arena=f"{_pg(0):#x}-{_pg(self.NPAGES):#x}",
                           events=len(self.steps), processes="+".join(self.procs))
        self.question = self._question()
        self.worked_answer = self._explain()
        del m

    def _label_line(self, label):
        name, vma = self.labels[label]
        return f"{label}  {name:<5}  {vma.vm_start:08x}-{vma.vm_end:08x} {vma.perms()}"

    def _question(self):
        p = self.procs["p"]
        lines = [f"Process p (pid {p.pid}) maps, in its arena {_pg(0):#x}-{_pg(self.NPAGES):#x} "
                 f"(pages 0-{self.NPAGES - 1}, P = {P:#x}):"]
        for start, count, prot in self.setup:
            lines.append(f"  mmap({_pg(start):#x}, {count} * P, {_PROT_C[_PROTS[prot]]}, "
                         "MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, -1, 0)")
        lines.append("Then (a write or read touches one byte of the page):")
        lines += [f"  {i}. {text}" for i, text in enumerate(self.steps, 1)]
        lines.append("At the end the arena's VMAs are:")
        lines += ["  " + self._label_line(label) for label in self.labels]
        lines += ["Which of these VMAs have an anon_vma (vma->anon_vma is set), and which share "
                  "the same one?",
                  "Write one line per anon_vma with the VMAs that share it, then 'none:' and the "
                  "VMAs without one, e.g. (made up)"]
        lines += ["  " + line for line in self._example().splitlines()]
        return "\n".join(lines)

    def _example(self):
        labels = list(self.labels)
        for cut in range(len(labels), 0, -1):
            guess = {"groups": [labels[:cut - 1]] if cut > 1 else [], "none": labels[cut - 1:]}
            guess["groups"] = [g for g in guess["groups"] if g]
            if guess != self.answer and cut > 1:
                return _answer_text(guess)
        return _answer_text({"groups": [[l] for l in labels], "none": []}) \
            if self.answer["none"] else _answer_text({"groups": [], "none": labels})

    def _explain(self):
        out = ["What each step did to anon_vmas:"]
        notes = {}
        for (name, page), (step, text) in self.origin.items():
            notes.setdefault(step, [])
            if text not in notes[step]:
                notes[step].append(text)
        for i, text in enumerate(self.steps, 1):
            out.append(f"  {i}. {text}")
            for note in notes.get(i, []):
                out.append(f"       {note.split(': ', 1)[1]}")
            for note in self.extra.get(i, []):
                out.append(f"       {note}")
        out += ["", "At the end (each VMA's anon_vma, and the anon_vmas its anon_vma_chain "
                "links it to):"]
        for label, (name, vma) in self.labels.items():
            own = "no anon_vma" if vma.anon_vma is None else f"anon_vma {vma.anon_vma.id}"
            chain = ", ".join(str(avc.anon_vma.id) for avc in vma.anon_vma_chain)
            out.append(f"  {self._label_line(label)}  {own}" + (f"; chained to {chain}" if chain else ""))
        out += ["", "Answer:"] + ["  " + l for l in _answer_text(self.answer).splitlines()]
        out += ["", "A VMA gets its anon_vma at its first write fault (anon_vma_prepare), not at "
                "mmap, and a read fault maps the zero page without one. The first write reuses a "
                "touching neighbour's anon_vma when find_mergeable_anon_vma() allows it; a split "
                "keeps the anon_vma on both pieces; fork gives each child VMA an anon_vma of its "
                "own, chained to the parent's."]
        return "\n".join(out)

    # -- explaining a label -------------------------------------------------------------------------
    def _first_origin(self, label):
        name, vma = self.labels[label]
        pages = range((vma.vm_start - _pg(0)) // P, (vma.vm_end - _pg(0)) // P)
        found = [self.origin[(name, i)] for i in pages if (name, i) in self.origin]
        return min(found) if found else None

    def _why_none(self, label):
        name, vma = self.labels[label]
        pages = set(range((vma.vm_start - _pg(0)) // P, (vma.vm_end - _pg(0)) // P))
        reads = [i for i, text in enumerate(self.steps, 1) if _touches(text, name, "reads", pages)
                 or name == "child" and _touches(text, "p", "reads", pages)
                 and i < self._fork_step()]
        who = f"{name} never wrote to it" + (" (nor p before the fork)" if name == "child" else "")
        if reads:
            return (f"{label} has no anon_vma: {who}, it was only read (step {reads[0]}): a read "
                    "fault maps the shared zero page and needs no anon_vma")
        return (f"{label} has no anon_vma: {who}, and a VMA gets its anon_vma at the first "
                "write fault (anon_vma_prepare), not at mmap")

    def _fork_step(self):
        return next((i for i, t in enumerate(self.steps, 1) if t == "p forks child"), 10**6)

    def _why_has(self, label):
        origin = self._first_origin(label)
        return f"{label} has anon_vma {self.ids[label]}, from {origin[1]}"

    def _why_shared(self, x, y):
        """Why ``x`` and ``y`` (labels) share one anon_vma."""
        ox, oy = self._first_origin(x), self._first_origin(y)
        if ox[0] == oy[0]:
            split = self._split_step(x, y, ox[0])
            if split:
                return (f"{x} and {y} share anon_vma {self.ids[x]}: they were one VMA when it got "
                        f"its anon_vma ({ox[1]}); step {split} split it, and __split_vma() leaves "
                        "the same anon_vma on both pieces (anon_vma_clone)")
        later = max((ox, x), (oy, y))
        return (f"{x} and {y} share anon_vma {self.ids[x]}; {later[1]} got it at "
                f"{later[0][1]}")

    def _split_step(self, x, y, since):
        (nx, vx), (ny, vy) = self.labels[x], self.labels[y]
        if nx != ny:
            return None
        px, py = (vx.vm_start - _pg(0)) // P, (vy.vm_start - _pg(0)) // P
        for step in range(since + 1, len(self.snaps)):
            row = self.snaps[step][nx]
            if row[px] and row[py] and row[px][0] != row[py][0]:
                return step
        return None

    def _why_apart(self, x, y):
        (nx, _), (ny, _) = self.labels[x], self.labels[y]
        if nx != ny:
            c, par = (x, y) if nx == "child" else (y, x)
            return (f"{c} (child) and {par} (p) have different anon_vmas: after fork the child's "
                    f"VMA gets its own anon_vma chained to the parent's (anon_vma_fork); "
                    f"{self._why_has(c)}")
        (sx, tx), (sy, ty) = self._first_origin(x), self._first_origin(y)
        later, step, text = (y, sy, ty) if (sy, y) > (sx, x) else (x, sx, tx)
        head = (f"{x} and {y} have different anon_vmas ({self.ids[x]} and {self.ids[y]}): "
                f"{later} got its own at step {step}")
        reason = self.refused.get(self.ids[later])
        if reason is not None:
            return (f"{head}, when its first write fault found no anon_vma to reuse: "
                    f"{reason} (find_mergeable_anon_vma)")
        return f"{head}: {text.split(': ', 1)[1]}"

    # -- checking ---------------------------------------------------------------------------------
    def _read_student(self, student):
        """``{label: group key or None}`` from any accepted form."""
        if isinstance(student, dict) and ("groups" in student or "none" in student):
            groups = [list(g) for g in student.get("groups", [])]
            return self._from_groups(groups, list(student.get("none", [])))
        if isinstance(student, dict):
            out = {}
            for k, v in student.items():
                out[self._label(k)] = None if v is None or v == "none" else ("id", v)
            return out
        if isinstance(student, (list, tuple)):
            return self._from_groups([g if isinstance(g, (list, tuple)) else [g] for g in student],
                                     [])
        if not isinstance(student, str):
            raise ValueError(f"could not read an answer of type {type(student).__name__}: write "
                             "one line per anon_vma, e.g. 'A B', and 'none: C'")
        groups, none = [], []
        for part in re.split(r"[\n;]", student):
            words = re.findall(r"[A-Za-z_]+", part)
            labels, is_none = [], False
            for word in words:
                low = word.lower()
                if low in _NONE:
                    is_none = True
                elif len(word) == 1:
                    labels.append(self._label(word))
                elif low.strip("_") in _FILLER or set(low.split("_")) <= _FILLER:
                    continue
                else:
                    raise ValueError(f"could not read {word!r} in {part.strip()!r}: give VMA "
                                     f"labels ({', '.join(self.labels)}) and 'none:'")
            if is_none:
                none += labels
            elif labels:
                groups.append(labels)
        return self._from_groups(groups, none)

    def _label(self, text):
        label = str(text).strip().upper()
        if label not in self.labels:
            raise ValueError(f"there is no VMA {str(text).strip()!r}: the VMAs are "
                             f"{', '.join(self.labels)}")
        return label

    def _from_groups(self, groups, none):
        out = {}
        for k, group in enumerate(groups):
            for item in group:
                label = self._label(item)
                if label in out:
                    raise ValueError(f"{label} is named twice: put each VMA in one line")
                out[label] = ("group", k)
        for item in none:
            label = self._label(item)
            if label in out:
                raise ValueError(f"{label} is named twice: put each VMA in one line")
            out[label] = None
        return out

    def check(self, student):
        try:
            got = self._read_student(student)
        except (ValueError, TypeError) as exc:
            return Feedback(False, [str(exc)])
        mistakes = []
        missing = [l for l in self.labels if l not in got]
        for label in self.labels:
            if label not in got:
                continue
            truth, said = self.ids[label], got[label]
            if truth is None and said is not None:
                mistakes.append(self._why_none(label))
            elif truth is not None and said is None:
                mistakes.append(self._why_has(label))
        labels = [l for l in self.labels if l in got and got[l] is not None
                  and self.ids[l] is not None]
        for i, x in enumerate(labels):
            for y in labels[i + 1:]:
                same_truth = self.ids[x] == self.ids[y]
                same_said = got[x] == got[y]
                if same_truth and not same_said:
                    mistakes.append(self._why_shared(x, y))
                elif same_said and not same_truth:
                    mistakes.append(self._why_apart(x, y))
        if missing:
            mistakes.append(f"you did not place {', '.join(missing)} (list VMAs without an "
                            "anon_vma after 'none:')")
        return Feedback(not mistakes, _unique(mistakes))


def _prot_of(vma):
    return vma.vm_flags & (F.PROT_READ | F.PROT_WRITE | F.PROT_EXEC)


def _touches(text, name, verb, pages):
    m = re.match(rf"{name} {verb} page (\d+) ", text)
    return m is not None and int(m.group(1)) in pages


def _answer_text(answer):
    lines = [" ".join(g) for g in answer["groups"]]
    if answer["none"]:
        lines.append("none: " + " ".join(answer["none"]))
    return "\n".join(lines)
