"""``cow``: after fork(s) and writes, who shares each page's frame."""

import re

from .base import Exercise, Feedback, _int, _unique
from .family import _Family, _random_events, _names_text, _read_names


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

