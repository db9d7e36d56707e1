"""``rmap``: which processes' VMAs an rmap walk of one page visits."""

import re

from ...core.rmap import anon_vma_tree_text, rmap_walk, vma_address
from .base import Exercise, Feedback, _pg, _unique
from .family import _Family, _random_events, _names_text, _read_names


class Rmap(Exercise):
    """Which processes' VMAs an rmap walk of one page visits, and which of them map it.

    The answer is a dict: ``pfn``, ``anon_vma`` (its id), ``visits`` and ``mapped`` (lists
    of process names in creation order). ``check`` takes a dict with ``visits`` and/or
    ``mapped``, or just a list of names (taken as ``mapped``), or text: lines
    ``visits: p, child`` and ``mapped: p`` (``(a) ...`` / ``(b) ...`` too); text without
    such lines is read as ``mapped``.

    >>> ex = Rmap(2)
    >>> ex.check({"visits": ex.answer["visits"], "mapped": ex.answer["mapped"]}).correct
    True
    >>> ex.check("visits: " + "+".join(ex.answer["visits"]) + "\\n(b) "
    ...          + ("+".join(ex.answer["mapped"]) or "-")).correct
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
               "(b) In which of them does it find the page mapped?",
               "Answer as two lines, e.g. 'visits: p, child' and 'mapped: p' ('-' for none);",
               "a line of names alone is read as (b)."])
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

    @staticmethod
    def _read_text(text):
        """``{"visits": ..., "mapped": ...}`` from lines such as ``visits: p, child``,
        ``(b) mapped: p`` or ``a) p+child``; text with no such line is (b)'s answer."""
        found = {}
        for line in text.splitlines():
            m = _PART.match(line)
            letter, word, names = m.group(1) or m.group(2), m.group(3), m.group(4)
            if letter or word:
                part = letter.lower() if letter else "a" if word.lower().startswith("visit") else "b"
                found["visits" if part == "a" else "mapped"] = names
        return found or {"mapped": text}

    def check(self, student):
        fam = self.family
        if isinstance(student, str):
            student = self._read_text(student)
        elif isinstance(student, (list, tuple)):
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


#: One line of a typed answer: an optional ``(a)``/``b)``/``a:``, an optional ``visits:`` or
#: ``mapped:``, then the names.
_PART = re.compile(r"^\s*(?:\(?([abAB])\)|([abAB])\s*[:.])?\s*(?:(visited|visits?|mapped|maps)\s*[:=]?)?\s*(.*?)\s*$", re.I)


def _rmap(machine, pfn):
    return list(rmap_walk(machine, pfn))

