"""``pagemap``: the /proc/PID/pagemap bits of each page after reads, writes and a fork."""

import re

from ...core import flags as F, pgtable
from .base import P, Exercise, Feedback, _RW, _ANON_FIXED, _machine, _pg, _unique


#: How an answer names each state: (present, exclusive, zero page) -> text.
def _state_text(state):
    present, exclusive, zero = state
    if not present:
        return "E without P" if exclusive else "-"
    return "P" + ("E" if exclusive else "") + (" zero" if zero else "")


_WORDS = {
    "p": "P", "present": "P",
    "e": "E", "excl": "E", "exclusive": "E", "exclusively": "E",
    "pe": "PE", "ep": "PE",
    "zero": "Z", "z": "Z", "zeropage": "Z", "pz": "PZ", "zp": "PZ",
    "-": "-", "absent": "-", "np": "-", "none": "-", "notpresent": "-",
    # words that only fill the sentence
    "shared": "", "mapped": "", "the": "", "and": "",
}


def _read_state(value, page):
    """``(present, exclusive, zero)`` from one page's answer; ValueError if unreadable."""
    if isinstance(value, dict):
        known = {"present", "exclusive", "zero"}
        unknown = [k for k in value if str(k).lower() not in known]
        if unknown:
            raise ValueError(f"page {page}: unknown key {unknown[0]!r} (use present, "
                             "exclusive, zero)")
        got = {str(k).lower(): bool(v) for k, v in value.items()}
        return (got.get("present", False) or got.get("zero", False),
                got.get("exclusive", False), got.get("zero", False))
    if isinstance(value, (list, tuple, set, frozenset)):
        value = " ".join(str(v) for v in value)
    if not isinstance(value, str):
        raise ValueError(f"page {page}: could not read {value!r} (write P, E, zero or -)")
    text = value.strip().lower().replace("not present", "-").replace("zero page", "zero")
    text = text.replace("zero-page", "zero").replace("zero_page", "zero")
    present = exclusive = zero = dash = False
    for token in re.findall(r"[a-z]+|-", text):
        if token not in _WORDS:
            raise ValueError(f"page {page}: could not read {token!r} (write P, E, zero or -, "
                             "e.g. 'page 0: PE')")
        code = _WORDS[token]
        present |= "P" in code
        exclusive |= "E" in code
        zero |= "Z" in code
        dash |= code == "-"
    if dash and (present or exclusive or zero):
        raise ValueError(f"page {page}: '-' means not present; do not combine it with P, E "
                         "or zero")
    if not (dash or present or exclusive or zero):
        raise ValueError(f"page {page}: no answer (write P, E, zero or -)")
    return present or zero, exclusive, zero


class Pagemap(Exercise):
    """The pagemap bits of each page of one process after reads, writes, a fork and writes.

    p maps a few private anonymous pages at the arena (MAP_FIXED), reads some (the shared
    zero page), writes some, forks ``child``, then one of them reads or writes more pages
    (and sometimes the other exits). For each page of one of them the question asks what
    /proc/PID/pagemap shows: present (bit 63), exclusively mapped (bit 56) and whether the
    frame is the zero page (KPF_ZERO_PAGE in /proc/kpageflags).

    The answer is a list, one dict per page: ``present``, ``exclusive``, ``zero``. ``check``
    takes text such as ``"page 0: PE; page 1: P zero; page 2: -"`` (``;`` or new lines
    between pages), or a dict or list page -> ``"PE"`` / ``{"present": True, ...}``.

    >>> ex = Pagemap(3)
    >>> ex.check(ex.answer_text()).correct
    True
    >>> ex.check("page 0: PE P").correct
    False
    """

    kind = "pagemap"
    summary = "the pagemap bits (present, exclusive, zero page) of each page after a fork"

    def _build(self):
        rng = self.rng
        for _attempt in range(50):
            self._run(rng)
            states = [tuple(s.values()) for s in self.answer]
            if any(s[0] for s in states) and len(set(states)) >= 2:
                break
        self.params.update(pages=self.npages, events=len(self.events), process=self.who)
        self.question = self._question()
        self.worked_answer = self._explain()

    # -- building -----------------------------------------------------------------------------
    def _run(self, rng):
        m = self.machine = _machine()
        self.npages = n = rng.randrange(3, 6)
        p = m.spawn()
        p.mmap(_pg(0), n * P, _RW, _ANON_FIXED)
        self.procs = {"p": p}
        self.events, self.effects = [], []
        self.exited = set()
        # Before the fork: sometimes reads only (the VMA then has no anon_vma), otherwise a
        # mix of writes, reads, reads then writes, and pages left alone.
        ops = []
        if rng.random() < 0.2:
            for i in rng.sample(range(n), rng.randrange(1, n)):
                ops.append(("read", i))
        else:
            for i in range(n):
                r = rng.random()
                if r < 0.4:
                    ops.append(("write", i))
                elif r < 0.7:
                    ops.append(("read", i))
                elif r < 0.8:
                    ops += [("read", i), ("write", i)]
            if not any(op == "write" for op, _ in ops):
                ops.append(("write", rng.randrange(n)))
            rng.shuffle(ops)
            # a read and a write of the same page keep their order: read first
            for i in range(n):
                mine = [k for k, o in enumerate(ops) if o[1] == i]
                kinds = sorted(ops[k][0] for k in mine)
                for k, kind in zip(mine, kinds):
                    ops[k] = (kind, i)
        for op, i in ops:
            self._access("p", op, i)
        self._fork()
        for _ in range(rng.randrange(1, 5)):
            who = rng.choice(["p", "child"])
            self._access(who, "write" if rng.random() < 0.65 else "read", rng.randrange(n))
        live = ["p", "child"]
        if rng.random() < 0.15:
            gone = rng.choice(live)
            self._exit(gone)
            live.remove(gone)
        self.who = rng.choice(live)
        self.answer = [dict(zip(("present", "exclusive", "zero"), self._state(self.who, i)))
                       for i in range(n)]

    def _state(self, name, page):
        """What pagemap and kpageflags show for ``name``'s page: (present, exclusive, zero)."""
        entry = self.procs[name].pagemap(_pg(page))
        if not entry.present:
            return (False, False, False)
        zero = bool(self.machine.kpageflags(entry.pfn) >> F.KPF_ZERO_PAGE & 1)
        return (True, entry.exclusive, zero)

    def _pfn(self, name, page):
        entry = self.procs[name].pagemap(_pg(page))
        return entry.pfn if entry.present else None

    def _sharers(self, pfn, but):
        """The other live processes whose arena maps ``pfn`` (a real frame, not the zero page)."""
        return [n for n in self.procs if n != but and n not in self.exited
                and pfn in [self._pfn(n, i) for i in range(self.npages)]]

    def _access(self, who, op, page):
        proc = self.procs[who]
        before = self._state(who, page)
        old_pfn = self._pfn(who, page)
        writable = pgtable.get_pte(proc.mm, _pg(page)) & F._PAGE_RW
        sharers = self._sharers(old_pfn, who) if before[0] and not before[2] else []
        if op == "read":
            proc.read(_pg(page), 1)
            kind = "hit" if before[0] else "zero-fault"
        else:
            proc.write(_pg(page), f"{who[0]}{page}".encode())
            if not before[0]:
                kind = "new"
            elif before[2]:
                kind = "zero-copy"
            elif writable:
                kind = "no-fault"
            elif self._pfn(who, page) != old_pfn:
                kind = "copy"
            else:
                kind = "reuse"
        self.events.append((who, op, page))
        # ``alone``: who is left as the only mapper of the old frame by this step.
        alone = sharers if kind == "copy" and len(sharers) == 1 else []
        self.effects.append({"kind": kind, "alone": alone})

    def _fork(self):
        p = self.procs["p"]
        vma = p.mm.vma_lookup(_pg(0))
        had = [self._state("p", i) for i in range(self.npages)]
        self.procs["child"] = p.fork()
        got = [self._state("child", i) for i in range(self.npages)]
        self.events.append(("p", "fork", "child"))
        self.effects.append({
            "kind": "fork", "anon_vma": vma.anon_vma is not None,
            "shared": [i for i in range(self.npages) if got[i][0] and not got[i][2]],
            "zero": [i for i in range(self.npages) if got[i][2]],
            "skipped": [i for i in range(self.npages) if had[i][0] and not got[i][0]],
        })

    def _exit(self, who):
        other = "child" if who == "p" else "p"
        alone = [i for i in range(self.npages)
                 if self._state(other, i)[0] and not self._state(other, i)[2]
                 and self._pfn(other, i) == self._pfn(who, i)]
        self.procs[who].exit()
        self.exited.add(who)
        self.events.append((who, "exit", None))
        self.effects.append({"kind": "exit", "alone_pages": alone, "other": other})

    # -- text ---------------------------------------------------------------------------------
    def event_text(self, step):
        who, op, arg = self.events[step - 1]
        if op == "fork":
            return f"{who} forks {arg}"
        if op == "exit":
            return f"{who} exits"
        return f"{who} {op}s page {arg}"

    def answer_text(self):
        """The answer as a student would type it: ``page 0: PE; page 1: P zero; ...``."""
        return "; ".join(f"page {i}: {_state_text(tuple(s.values()))}"
                         for i, s in enumerate(self.answer))

    def _question(self):
        n = self.npages
        lines = [f"Process p maps {n} pages at {_pg(0):#x} (pages 0-{n - 1}; private, "
                 "anonymous, read-write, MAP_FIXED).", "Then, in this order:"]
        lines += [f"  {k}. {self.event_text(k)}" for k in range(1, len(self.events) + 1)]
        lines += ["",
                  f"What does /proc/PID/pagemap of {self.who} show for each page (with "
                  "/proc/kpageflags of the frame)?",
                  "  P     present (bit 63)",
                  "  E     exclusively mapped: the only mapping of its frame (bit 56, "
                  "PM_MMAP_EXCLUSIVE)",
                  "  zero  the frame is the shared zero page (KPF_ZERO_PAGE in /proc/kpageflags)",
                  "  -     not present",
                  "Answer one page per line (or separate pages with ';'), e.g.",
                  "'page 0: PE; page 1: P zero; page 2: -'."]
        return "\n".join(lines)

    def _explain(self):
        out = []
        for k in range(1, len(self.events) + 1):
            out.append(f"{k}. {self.event_text(k)}: {self._effect_text(k)}")
        out += ["", f"What {self.who}'s pagemap shows (pfn and kpagecount of each frame):"]
        for i, s in enumerate(self.answer):
            text = f"page {i}: {_state_text(tuple(s.values()))}"
            if s["present"]:
                pfn = self._pfn(self.who, i)
                what = "the zero page" if s["zero"] else f"kpagecount {self.machine.kpagecount(pfn)}"
                text += f"   (pfn {pfn:#x}, {what})"
            out.append(text)
        out += ["", "Answer: " + self.answer_text()]
        return "\n".join(out)

    def _effect_text(self, step):
        who, op, arg = self.events[step - 1]
        eff = self.effects[step - 1]
        kind = eff["kind"]
        if kind == "fork":
            if not eff["anon_vma"]:
                return ("nothing in the VMA was ever written, so it has no anon_vma and "
                        "copy_page_range() copies none of its PTEs: the child starts with "
                        "no page present there.")
            parts = ["dup_mmap() copies the VMA and copy_page_range() its PTEs"]
            if eff["shared"]:
                parts.append(f"page(s) {_list(eff['shared'])} now map one frame in both "
                             "processes (mapcount 2, not exclusive), write-protected in both")
            if eff["zero"]:
                parts.append(f"page(s) {_list(eff['zero'])} map the zero page in both")
            return "; ".join(parts) + "."
        if kind == "exit":
            text = f"{who}'s mappings are gone."
            if eff["alone_pages"]:
                text += (f" {eff['other']} is left the only mapper of the frames of page(s) "
                         f"{_list(eff['alone_pages'])}: mapcount 1, exclusive again.")
            return text
        return {
            "hit": "already present: no fault, nothing changes.",
            "zero-fault": ("a read fault on a never-written page: do_anonymous_page() maps the "
                           "shared zero page, read-only (present, not exclusive)."),
            "new": ("a write fault on an empty PTE: do_anonymous_page() maps a new zeroed page "
                    "(present, exclusive, mapcount 1)."),
            "zero-copy": ("the PTE maps the zero page read-only: do_wp_page() -> wp_page_copy() "
                          "gives a new page of its own (present, exclusive)."),
            "no-fault": "the PTE is writable already (its own page): no fault.",
            "copy": ("the frame is shared (write-protected since the fork): do_wp_page() -> "
                     "wp_page_copy() gives the writer a new exclusive copy"
                     + (f"; {eff['alone'][0]} is now the only mapper of the old frame "
                        "(mapcount 1, exclusive again, though its PTE is still read-only)."
                        if eff["alone"] else ".")),
            "reuse": ("the PTE is read-only but nobody else maps the frame any more: "
                      "do_wp_page() reuses it (wp_can_reuse_anon_folio), no copy; still "
                      "exclusive."),
        }[kind]

    # -- checking -----------------------------------------------------------------------------
    def _read_student(self, student):
        if isinstance(student, str):
            marks = list(re.finditer(r"page\s*(\d+)\s*[:=]?", student, re.I))
            if not marks:
                raise ValueError("no answer found: write 'page N: ...' for each page, e.g. "
                                 "'page 0: PE; page 1: P zero; page 2: -'")
            if student[:marks[0].start()].strip(" \t\n;,"):
                raise ValueError(f"could not read {student[:marks[0].start()].strip()!r} "
                                 "(write 'page N: ...' for each page)")
            pages = {}
            for mark, nxt in zip(marks, marks[1:] + [None]):
                page = int(mark.group(1))
                if page in pages:
                    raise ValueError(f"page {page} is given twice")
                pages[page] = student[mark.end():nxt.start() if nxt else len(student)]
            student = pages
        if isinstance(student, (list, tuple)):
            student = dict(enumerate(student))
        if not isinstance(student, dict):
            raise ValueError(f"could not read an answer of type {type(student).__name__}")
        out = {}
        for key, value in student.items():
            page = key
            if isinstance(key, str):
                match = re.fullmatch(r"\s*(?:page\s*)?(\d+)\s*", key, re.I)
                if not match:
                    raise ValueError(f"could not read {key!r} as a page number")
                page = int(match.group(1))
            if isinstance(page, bool) or not isinstance(page, int):
                raise ValueError(f"could not read {key!r} as a page number")
            out[page] = _read_state(value, page)
        return out

    def check(self, student):
        try:
            got = self._read_student(student)
        except ValueError as exc:
            return Feedback(False, [str(exc)])
        mistakes = []
        for page, item in enumerate(self.answer):
            if page not in got:
                mistakes.append(f"page {page}: no answer")
                continue
            true = (item["present"], item["exclusive"], item["zero"])
            if got[page] != true:
                mistakes.append(self._mistake(page, true, got[page]))
        extra = sorted(k for k in got if not 0 <= k < self.npages)
        if extra:
            mistakes.append(f"there is no page {extra[0]}: the arena has pages "
                            f"0-{self.npages - 1}")
        return Feedback(not mistakes, _unique(mistakes))

    def _history(self, name, page):
        """The steps that decided what ``name`` maps at ``page``: (step, kind, who)."""
        out = []
        for k, ((who, op, arg), eff) in enumerate(zip(self.events, self.effects), 1):
            kind = eff["kind"]
            if op in ("read", "write") and arg == page:
                if who == name and kind not in ("hit", "no-fault"):
                    out.append((k, kind, who))
                elif who != name and name in eff["alone"]:
                    out.append((k, "other-copy", who))
            elif kind == "fork" and page in eff["shared"]:
                out.append((k, "fork", who))
            elif kind == "fork" and name == "child" and page in eff["zero"] + eff["skipped"]:
                out.append((k, "fork-skip" if page in eff["skipped"] else "fork-zero", who))
            elif kind == "exit" and who != name and page in eff["alone_pages"]:
                out.append((k, "other-exit", who))
        return out

    def _fork_step(self):
        return next(k for k, e in enumerate(self.effects, 1) if e["kind"] == "fork")

    def _mistake(self, page, true, said):
        name = self.who
        head = f"page {page}: "
        hist = self._history(name, page)
        last = hist[-1] if hist else (None, None, None)
        step, kind, who = last
        present, exclusive, zero = true
        if said[1] and not said[0]:
            return head + ("E without P cannot be: the exclusive bit is only set for a "
                           "present page")
        if not present:
            if kind == "fork-skip":
                return head + ("p mapped the zero page there when it forked, but the child got "
                               "no PTE for it: "
                               "nothing in the VMA had been written before the fork, so it had "
                               "no anon_vma and copy_page_range() copied none of its PTEs (a "
                               "fault will fill them); not present (-)")
            if name == "child":
                return head + ("p had not touched this page when it forked and child has not "
                               "touched it since: no PTE, not present (-)")
            return head + (f"{name} never touched this page: mmap() only promises memory; "
                           "with no PTE it is not present (-)")
        if not said[0]:
            how = {"zero-fault": f"{name} read it at step {step}: the read fault mapped the "
                                 "zero page",
                   "fork-zero": (f"fork (step {step}) copied p's zero-page PTE: the VMA had "
                                 "an anon_vma, so copy_page_range() copied all its PTEs"),
                   "fork": f"fork (step {step}) copied p's PTE: both map the same frame",
                   "other-copy": (f"{who}'s write at step {step} copied the page for {who} "
                                  f"only; {name} keeps the old frame"),
                   "other-exit": f"{who}'s exit at step {step} took only {who}'s PTEs away"}
            return head + how.get(kind, f"{name} wrote it at step {step}") + ", so it is present"
        if zero:
            if said[1]:
                return head + ("a read of a never-written anonymous page maps the shared zero "
                               "page: present but not exclusive (the zero page is never "
                               "counted as mapped: kpagecount 0)")
            origin = (f"{name} read it at step {step}" if kind == "zero-fault" else
                      f"fork (step {step}) copied p's PTE for it, which mapped the zero page")
            return head + (f"nobody wrote this page in {name}: {origin}, so it still maps the "
                           "shared zero page (KPF_ZERO_PAGE)")
        if said[2]:
            if kind in ("new", "zero-copy", "copy", "reuse"):
                return head + (f"{name}'s write at step {step} gave it a real page of its own "
                               "(a write never leaves the zero page mapped): not the zero page")
            return head + ("this frame is the page p wrote before the fork: a real page, not "
                           "the zero page")
        if exclusive:
            if kind == "other-copy":
                return head + (f"{who} wrote this page at step {step} and got its own copy; "
                               f"{name} is now the only process that maps the old frame "
                               "(mapcount 1), so pagemap shows it exclusive again, even though "
                               f"its PTE stays read-only until {name} writes")
            if kind == "other-exit":
                return head + (f"{who} exited at step {step}: its PTEs are gone, so {name} is "
                               "the only one mapping the frame (mapcount 1): exclusive")
            what = {"copy": "the writer gets a new exclusive copy (wp_page_copy)",
                    "reuse": ("nobody else mapped the frame any more, so do_wp_page() reused "
                              "it"),
                    "zero-copy": ("the write replaced the zero page with a new page of its own "
                                  "(wp_page_copy)"),
                    "new": "the write fault mapped a new page (do_anonymous_page)"}
            return head + (f"{name} wrote it at step {step}: " + what.get(kind, "its own page")
                           + "; mapcount 1, so it is exclusive (PE)")
        # present, shared, not the zero page
        fork = self._fork_step()
        return head + (f"after fork both processes map the frame (mapcount 2), so it is no "
                       "longer exclusively mapped until a write copies it; neither p nor "
                       f"child wrote this page after the fork (step {fork})")


def _list(pages):
    return ", ".join(str(i) for i in pages)
