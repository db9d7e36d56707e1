"""``reclaim``: what reclaim does to each page of two processes: swapped out, dropped,
written back, or left alone, and what /proc/PID/pagemap shows afterwards."""

import os
import re
import textwrap

from ...core import flags as F
from ...core.machine import Machine
from ...core.swap import MAX_SWAPFILES_SHIFT
from .base import P, Exercise, Feedback, _RW, _ANON_FIXED, _numbered, _pg, _unique

#: The answer words, and what pagemap shows for each.
OUTCOMES = {
    "swap": "it went to swap: the PTE holds a swap entry (pagemap: swapped)",
    "drop": "a file page, dropped without being written (pagemap: not present)",
    "writeback": "a file page, written back to the file, then dropped (pagemap: not present)",
    "stays": "still mapped after reclaim (pagemap: present)",
    "none": "nothing was mapped there (pagemap: not present)",
}
_SYNONYMS = {
    "swap": "swap", "swapped": "swap", "swapout": "swap", "swapped-out": "swap",
    "drop": "drop", "dropped": "drop", "discard": "drop", "discarded": "drop",
    "freed": "drop",
    "writeback": "writeback", "write-back": "writeback", "written-back": "writeback",
    "written": "writeback", "write": "writeback",
    "stays": "stays", "stay": "stays", "present": "stays", "kept": "stays", "mapped": "stays",
    "none": "none", "nothing": "none", "empty": "none", "unmapped": "none", "-": "none",
}
#: Where the two regions go: the anonymous one at page 0 of the arena, the file at page 16.
FILE_PAGE = 16


def _wrap(text, indent="   "):
    return textwrap.fill(text, 92, initial_indent=indent, subsequent_indent=indent)


class Reclaim(Exercise):
    """Process p maps an anonymous region and a file (shared or private), forks a child c,
    and the two read and write some pages; then reclaim frees everything it can, on a
    machine whose swap has room for it all. For each page the processes used: does it go
    to swap (the PTE of every process mapping it becomes a swap entry), is it a file page
    dropped (clean) or written back first (dirty, shared), does it stay (the zero page),
    or was nothing there?

    The answer is a dict: ``items`` (``(process, page)`` pairs, pages named ``A0``... and
    ``F0``...), ``outcomes`` (one of :data:`OUTCOMES` per item) and ``slots`` (the swap slot
    each swapped item's PTE names, else None). ``check`` takes the text a student types
    (``1 swap, 2 stays, 3 drop`` ...; the items' numbers, each with its word), a list of
    words in item order, or a dict item number (or ``"p A0"``) -> word.

    >>> ex = Reclaim(2)
    >>> ex.check(ex.answer_text()).correct
    True
    >>> ex.check(ex.answer["outcomes"]).correct
    True
    """

    kind = "reclaim"
    summary = "what reclaim does to each page: swap, drop, write back, and pagemap afterwards"

    # -- building ---------------------------------------------------------------------------------
    def _build(self):
        rng = self.rng
        self.na = na = rng.randrange(2, 5)
        self.nf = nf = rng.randrange(2, 5)
        self.shared = rng.random() < 0.5
        m = self.machine = Machine(ram="64M", swap="4M", history=False, trace=False)
        data = b"".join(bytes([97 + i]) * P for i in range(nf))
        m.create_file("/data", data)
        self.file = m.files["/data"]
        p = m.spawn()
        p.mmap(_pg(0), na * P, _RW, _ANON_FIXED)
        fd = p.open("/data", os.O_RDWR)
        p.mmap(_pg(FILE_PAGE), nf * P, _RW,
               (F.MAP_SHARED if self.shared else F.MAP_PRIVATE) | F.MAP_FIXED, fd, 0)
        self.procs = {"p": p}
        self.events = []                # (who, kind, page) with kind read/write/fork
        self.used = {"p": set()}        # the pages each process accessed itself
        before_fork = rng.randrange(2, 4)
        after_fork = rng.randrange(2, 5)
        # Before the fork: at least one anonymous write (a page the child will share).
        plan = [("p", "write", f"A{rng.randrange(na)}")]
        plan += [("p",) + self._random_access(rng) for _ in range(before_fork - 1)]
        plan.append(("p", "fork", "c"))
        plan += [(rng.choice(["p", "c", "c"]),) + self._random_access(rng)
                 for _ in range(after_fork)]
        if not any(page.startswith("F") for _, kind, page in plan if kind != "fork"):
            plan.append((rng.choice(["p", "c"]), rng.choice(["read", "write"]),
                         f"F{rng.randrange(nf)}"))
        for who, kind, page in plan:
            self._do(who, kind, page)
        # The items: for each process, the anonymous pages anyone touched and the file
        # pages it used itself.
        touched = set().union(*self.used.values())
        self.items = [(who, f"A{i}") for who in self.procs for i in range(na)
                      if f"A{i}" in touched]
        self.items += [(who, f"F{j}") for who in self.procs for j in range(nf)
                       if f"F{j}" in self.used[who]]
        self.before = {item: self._state(item) for item in self.items}
        disk = bytes(self.file.data)
        freed = m.reclaim(1000)
        assert not [pg for pg in m.phys.pages.values() if pg.kind in ("anon", "file")
                    and pg.mapping is not None], "reclaim left a page it could free"
        self.freed = freed
        outcomes, slots = [], []
        for item in self.items:
            who, page = item
            after = self.procs[who].pagemap(self._addr(page))
            b = self.before[item]
            if after.swapped:
                assert b["kind"] == "anon", (item, b)
                outcome, slot = "swap", after.pfn >> MAX_SWAPFILES_SHIFT
            elif after.present:
                assert b["kind"] == "zero", (item, b)
                outcome, slot = "stays", None
            elif b["kind"] is None:
                outcome, slot = "none", None
            else:
                assert b["kind"] == "file", (item, b)
                index = int(page[1:])
                lo, hi = index * P, (index + 1) * P
                outcome = "writeback" if bytes(self.file.data[lo:hi]) != disk[lo:hi] else "drop"
                slot = None
            outcomes.append(outcome)
            slots.append(slot)
        self.answer = {"items": [f"{who} {page}" for who, page in self.items],
                       "outcomes": outcomes, "slots": slots}
        self.params.update(anon_pages=na, file_pages=nf,
                           file_mapping="shared" if self.shared else "private",
                           events=len(self.events), items=len(self.items))
        self.question = self._question()
        self.worked_answer = self._explain()

    def _random_access(self, rng):
        r = rng.random()
        if r < 0.35:
            return ("write", f"A{rng.randrange(self.na)}")
        if r < 0.52:
            return ("read", f"A{rng.randrange(self.na)}")
        if r < 0.76:
            return ("read", f"F{rng.randrange(self.nf)}")
        return ("write", f"F{rng.randrange(self.nf)}")

    @staticmethod
    def _addr(page):
        index = int(page[1:])
        return _pg(index) if page[0] == "A" else _pg(FILE_PAGE + index)

    def _do(self, who, kind, page):
        proc = self.procs[who]
        if kind == "fork":
            child = self.procs[page] = proc.fork()
            self.used[page] = set()
            # What the child got from the fork alone (fork copies a private mapping's PTEs
            # once it has anonymous pages; a shared file mapping's are left to faults).
            self.inherited = {f"F{j}" for j in range(self.nf)
                              if child.pagemap(self._addr(f"F{j}")).present}
        elif kind == "read":
            proc.read(self._addr(page), 1)
            self.used[who].add(page)
        else:
            proc.write(self._addr(page), f"{who.upper()}{page}".encode())
            self.used[who].add(page)
        self.events.append((who, kind, page))

    def _state(self, item):
        """What ``item``'s PTE maps before reclaim: ``kind`` (anon, zero, file or None),
        the PFN and which processes map that same frame at the same page."""
        who, page = item
        e = self.procs[who].pagemap(self._addr(page))
        if not e.present:
            return {"kind": None, "pfn": None, "sharers": []}
        frame = self.machine.phys.pages[e.pfn]
        sharers = [n for n, proc in self.procs.items()
                   if proc.pagemap(self._addr(page)).present
                   and proc.pagemap(self._addr(page)).pfn == e.pfn]
        return {"kind": frame.kind, "pfn": e.pfn, "sharers": sharers}

    # -- text ------------------------------------------------------------------------------------
    def _event_text(self, event):
        who, kind, page = event
        if kind == "fork":
            return f"{who} forks {page}"
        return f"{who} {kind}s page {page}"

    def _question(self):
        na, nf = self.na, self.nf
        how = "MAP_SHARED" if self.shared else "MAP_PRIVATE"
        lines = [
            f"A machine with swap space. The file /data has {nf} pages (F0 is full of the "
            "letter a, F1 of b, and so on).",
            "Process p opens /data read-write and maps two regions:",
            f"  A: {na} pages at {_pg(0):#x}, private anonymous, read-write: pages A0-A{na - 1}",
            f"  F: /data, {nf} pages at {_pg(FILE_PAGE):#x}, {how}, read-write: pages "
            f"F0-F{nf - 1}",
            "Then, in this order:"]
        lines += [f"  {i}. {self._event_text(e)}" for i, e in enumerate(self.events, 1)]
        lines += [
            "Now memory runs short and the kernel reclaims (m.reclaim(1000)): it goes through "
            "every page on", "the LRU lists and frees every one it can; swap has room for all "
            "of them.", "What happens to each of these pages (a process's page at that "
            "address), and so what does", "its /proc/PID/pagemap entry show afterwards?"]
        lines += [f"  {i}. {who} {page}" for i, (who, page) in enumerate(self.items, 1)]
        lines += ["Answer with one word per item:"]
        lines += [f"  {word:<9}  {text}" for word, text in OUTCOMES.items()]
        lines += ["For example: 1 swap, 2 stays, 3 drop, 4 none"]
        return "\n".join(lines)

    def answer_text(self):
        """The answer in the form the question asks for."""
        return ", ".join(f"{i} {o}" for i, o in enumerate(self.answer["outcomes"], 1))

    def _first(self, who, page, kind=None):
        """The number of the first event in which ``who`` accessed ``page`` (a ``kind``
        access if given), or None."""
        for i, (w, k, pg) in enumerate(self.events, 1):
            if w == who and pg == page and (kind is None or k == kind):
                return i
        return None

    def _origin(self, index):
        """What the anonymous page of swapped item ``index`` is, as a phrase."""
        who, page = item = self.items[index]
        other = [n for n in self.before[item]["sharers"] if n != who]
        if page[0] == "A":
            return self._anon_story(who, page, other)
        mine = self._first(who, page, "write")
        if mine:
            return f"a private copy of the file page, made when {who} wrote it (event {mine})"
        return (f"a private copy of the file page, made when p wrote it before the fork (event "
                f"{self._first('p', page, 'write')}), and {who} inherited it at the fork")

    def _first_write(self, who, page, after=0):
        """The number of ``who``'s first write to ``page`` after event ``after``, or None."""
        for i, (w, k, pg) in enumerate(self.events, 1):
            if i > after and w == who and pg == page and k == "write":
                return i
        return None

    def _anon_story(self, who, page, other):
        """Where the anonymous page ``who`` maps at ``page`` came from, as a phrase."""
        fork = self._fork_at()
        pre = next((i for i in range(fork - 1, 0, -1) if self.events[i - 1][0] == "p"
                    and self.events[i - 1][1:] == ("write", page)), None)
        if other:
            return (f"the anonymous page p wrote before the fork (event {pre}), still shared "
                    "by p and c (neither has written it since)")
        mine = self._first_write(who, page, fork if pre is not None else 0)
        theirs = self._first_write("c" if who == "p" else "p", page, fork)
        if pre is None:
            return f"{who}'s own anonymous page, since its write at event {mine}"
        if mine is not None and (theirs is None or mine < theirs):
            return (f"{who}'s own copy, made by its write at event {mine} (copy-on-write of "
                    f"the page p wrote before the fork)")
        them = "c" if who == "p" else "p"
        later = (f"; {who}'s own write at event {mine} then reused it, no copy needed"
                 if mine is not None else "")
        return (f"the anonymous page p wrote before the fork (event {pre}); {them} got its own "
                f"copy at event {theirs}, so only {who} maps it now{later}")

    def _fork_at(self):
        return next(i for i, e in enumerate(self.events, 1) if e[1] == "fork")

    def _why(self, index):
        """Why item ``index`` (0-based) ends as it does: one or two sentences."""
        who, page = item = self.items[index]
        outcome = self.answer["outcomes"][index]
        b = self.before[item]
        other = [n for n in b["sharers"] if n != who]
        fork = self._fork_at()
        if outcome == "none":
            if page[0] == "A":
                late = (" (p touched it only after the fork)" if who != "p"
                        and self._first("p", page) else "")
                return (f"{who} never touched {page}" + (" and did not inherit it" if who != "p"
                                                         else "")
                        + f"{late}: no frame is mapped there, so there is nothing to reclaim")
            return f"{who}'s PTE for {page} was empty: nothing to reclaim"
        if outcome == "stays":
            return (f"{who}'s {page} was only read, never written, so it maps the shared zero "
                    "page; the zero page is not on the LRU, and reclaim never touches it: "
                    "still present")
        if outcome == "swap":
            slot = self.answer["slots"][index]
            head = f"{who}'s {page} is {self._origin(index)}"
            head += (": an anonymous page now (COW), so it goes to swap, not to the file"
                     if page[0] == "F" else
                     ": reclaim writes it to a swap slot and the PTE becomes a swap entry")
            if other:
                head += (f"; {' and '.join(other)} maps the same frame, and try_to_unmap() "
                         "walks the anon_vma chain to unmap it there too: the same swap entry "
                         f"(slot {slot}) in both PTEs")
            else:
                head += f" (slot {slot})"
            return head
        writers = [w for w, k, pg in self.events if pg == page and k == "write"]
        maps = " and ".join(b["sharers"]) + self._how_mapped(page, b["sharers"])
        unmap = (f"try_to_unmap() walks the file's i_mmap to clear the PTE in {maps}"
                 if len(b["sharers"]) > 1 else
                 f"try_to_unmap() (rmap through the file's i_mmap) clears {who}'s PTE")
        if outcome == "writeback":
            return (f"{page} is a page of /data, written through the MAP_SHARED mapping by "
                    f"{' and '.join(_unique(writers))}: it is dirty, so {unmap}, pageout() "
                    "writes it back to the file, and it is dropped from the page cache")
        why = ("writes through a MAP_PRIVATE mapping go to private copies, never to the "
               "page cache" if not self.shared else "nobody wrote it")
        return (f"{who}'s {page} maps the page-cache page of /data, which is clean ({why}): "
                f"{unmap} and the page is simply dropped; the file still has the data")

    def _how_mapped(self, page, sharers):
        """A note on the sharers of a file page that never accessed it themselves."""
        notes = []
        for name in sharers:
            if page in self.used[name]:
                continue
            if name != "p" and page in self.inherited:
                notes.append(f"{name} inherited its PTE at the fork: fork copies the PTEs of a "
                             "private mapping that has anonymous pages")
            else:
                notes.append(f"{name}'s PTE was filled by fault-around when it read a nearby "
                             "page")
        return f" ({'; '.join(notes)})" if notes else ""

    def _explain(self):
        out = ["Before reclaim:"]
        for i, item in enumerate(self.items, 1):
            b = self.before[item]
            what = {None: "nothing", "zero": "the zero page", "anon": "an anonymous page",
                    "file": "a page-cache page of /data"}[b["kind"]]
            share = (f", shared with {' and '.join(n for n in b['sharers'] if n != item[0])}"
                     if len(b["sharers"]) > 1 else "")
            pfn = f" (PFN {b['pfn']:#x}{share})" if b["pfn"] is not None else ""
            out.append(f"  {i}. {item[0]} {item[1]}: {what}{pfn}")
        out += ["", f"Reclaim freed {self.freed} frames in all, counting some not asked about "
                "(such as pages that", "read-around brought into the page cache). Item by item:"]
        for i, outcome in enumerate(self.answer["outcomes"]):
            out.append(f"  {i + 1}. {' '.join(self.items[i])}: {outcome}")
            out.append(_wrap(self._why(i) + ".", "     "))
        shared = {}
        for item, slot in zip(self.items, self.answer["slots"]):
            if slot is not None:
                shared.setdefault(slot, []).append(" ".join(item))
        if shared:
            out += ["", "Swap slots in the PTEs afterwards (pagemap's swap offset, as root): "
                    + "; ".join(f"slot {s}: {', '.join(names)}" for s, names in shared.items())]
        out += ["", "Answer: " + self.answer_text()]
        return "\n".join(out)

    # -- checking ---------------------------------------------------------------------------------
    def _word(self, value):
        word = str(value).strip().lower().replace("_", "-")
        word = re.sub(r"\s+", "-", word)
        if word in _SYNONYMS:
            return _SYNONYMS[word]
        if word.startswith("written-back") or word.startswith("write-back"):
            return "writeback"
        raise ValueError(f"could not read {value!r}: answer with one of "
                         + ", ".join(OUTCOMES))

    def _key(self, key):
        """An item number (1-based) from a key: a number, or "p A0"."""
        n = len(self.items)
        if isinstance(key, int) and not isinstance(key, bool):
            number = key
        elif isinstance(key, str) and key.strip().isdigit():
            number = int(key)
        elif isinstance(key, (str, tuple)):
            text = " ".join(key) if isinstance(key, tuple) else key
            parts = text.replace(":", " ").split()
            match = [i for i, (who, page) in enumerate(self.items, 1)
                     if len(parts) == 2 and parts[0].lower() == who
                     and parts[1].upper() == page]
            if not match:
                raise ValueError(f"there is no item {key!r}: the items are 1 to {n}")
            number = match[0]
        else:
            raise ValueError(f"there is no item {key!r}: the items are 1 to {n}")
        if not 1 <= number <= n:
            raise ValueError(f"there is no item {number}: the items are 1 to {n}")
        return number

    def _read(self, student):
        """The student's words in item order; raises ValueError."""
        n = len(self.items)
        if isinstance(student, dict) and "outcomes" in student:
            student = student["outcomes"]
        if isinstance(student, str):
            text = student.lower()
            text = re.sub(r"written\s+back|write\s+back", "writeback", text)
            pairs = re.findall(r"(\d+)\s*[:.)=\-]?\s*([a-z][a-z\-]*)", text)
            if pairs:
                student = {}
                for number, word in pairs:
                    key = self._key(int(number))
                    if key in student:
                        raise ValueError(f"item {key} is answered twice")
                    student[key] = word
            else:
                student = re.findall(r"[a-z][a-z\-]*", text)
        if isinstance(student, dict):
            items = {self._key(k): v for k, v in student.items()}
            student = _numbered(items, n, "item")
        if not isinstance(student, (list, tuple)):
            raise ValueError("give one word per item, e.g. '1 swap, 2 stays, 3 drop'")
        if len(student) != n:
            raise ValueError(f"give one word for each of the {n} items")
        return [self._word(v) for v in student]

    def check(self, student):
        try:
            given = self._read(student)
        except (ValueError, TypeError) as exc:
            return Feedback(False, [str(exc)])
        mistakes = []
        for i, (word, truth) in enumerate(zip(given, self.answer["outcomes"])):
            if word != truth:
                mistakes.append(f"item {i + 1} ({' '.join(self.items[i])}): "
                                + self._mistake(i, word, truth))
        return Feedback(not mistakes, _unique(mistakes))

    def _mistake(self, index, word, truth):
        """The sentence naming what is wrong with ``word`` for item ``index``."""
        who, page = item = self.items[index]
        b = self.before[item]
        other = " and ".join(n for n in b["sharers"] if n != who)
        slot = self.answer["slots"][index]
        if truth == "swap":
            if page[0] == "F" and word in ("drop", "writeback"):
                return ("a private file page that was written is anonymous now (COW) and goes "
                        f"to swap; the file never sees the write. {who}'s {page} is "
                        f"{self._origin(index)} (slot {slot})")
            if other and word in ("stays", "none"):
                return ("an anonymous page mapped by two processes is unmapped from both "
                        f"(try_to_unmap walks the anon_vma chain): {who} and {other} get the "
                        f"same swap entry (slot {slot}). It is {self._origin(index)}")
            if word in ("drop", "writeback"):
                return ("an anonymous page has no file to go back to: it goes to swap (slot "
                        f"{slot}). It is {self._origin(index)}")
            return (f"it goes to swap (slot {slot}): reclaim frees written anonymous pages by "
                    f"swapping them out. It is {self._origin(index)}")
        why = self._why(index)
        if truth == "drop":
            if word == "writeback":
                return ("a clean file page is simply dropped: the file still has the data "
                        + ("(writes through a MAP_PRIVATE mapping go to private copies, never "
                           "to the page cache)" if not self.shared else "(nobody wrote it)"))
            if word == "swap":
                return ("a page-cache page never goes to swap: its file is where it lives, and "
                        "a clean one is simply dropped")
            if word == "stays":
                return f"reclaim frees file pages too. {why}"
            return (f"{who} accessed {page} (event {self._first(who, page)}), so its PTE mapped "
                    f"the page-cache page. {why}")
        if truth == "writeback":
            if word == "drop":
                return ("the page is dirty: it was written through the MAP_SHARED mapping, so "
                        "pageout() writes it back to the file before it is dropped")
            if word == "swap":
                return ("a MAP_SHARED file page goes back to its file, not to swap: it is "
                        "dirty, so pageout() writes it back first")
            return why
        if truth == "stays":
            return (f"{who} only read {page}: it maps the shared zero page, which reclaim never "
                    "touches, so pagemap still shows it present")
        return why
