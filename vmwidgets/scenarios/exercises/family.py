"""Fork families, the shared machinery of the ``cow`` and ``rmap`` exercises."""

import re

from ...core import flags as F, pgtable
from .base import P, _RW, _ANON_FIXED, _machine, _pg


class _Family:
    """Processes named ``p``, ``child``, ``grandchild`` ... running a list of events on one
    arena, with each (process, page)'s frame tracked by identity: a token ``(who, event)``
    naming the write that made the frame, passed on by fork and kept by a reusing write."""

    def __init__(self, npages):
        self.machine = _machine()
        self.npages = npages
        p = self.machine.spawn()
        p.mmap(_pg(0), npages * P, _RW, _ANON_FIXED)
        self.procs = {"p": p}
        self.parent = {"p": None}
        self.born = {"p": 0}
        self.exited = {}
        self.tokens = {"p": {}}
        self.events = []           # (kind, who, page or child name, detail)
        for i in range(npages):
            p.write(_pg(i), f"p{i}".encode())
            self.tokens["p"][i] = ("p", 0)

    def live(self):
        return [n for n in self.procs if n not in self.exited]

    def pfn(self, name, page):
        entry = self.procs[name].pagemap(_pg(page))
        return entry.pfn if entry.present else None

    def fork(self, name):
        stem = "child" if name == "p" else "grand" + name.rstrip("0123456789")
        new = stem
        k = 2
        while new in self.procs:
            new, k = f"{stem}{k}", k + 1
        self.procs[new] = self.procs[name].fork()
        self.parent[new] = name
        self.events.append(("fork", name, new, None))
        self.born[new] = len(self.events)
        self.tokens[new] = dict(self.tokens[name])
        return new

    def write(self, name, page):
        """A write: ``copy`` (COW), ``reuse`` (write fault, no copy) or ``no fault`` (the PTE
        was writable already)."""
        mm = self.procs[name].mm
        writable = pgtable.get_pte(mm, _pg(page)) & F._PAGE_RW
        before = self.pfn(name, page)
        self.procs[name].write(_pg(page), f"{name[0]}{page}".encode())
        copied = self.pfn(name, page) != before
        self.events.append(("write", name, page,
                            "copy" if copied else "no fault" if writable else "reuse"))
        if copied:
            self.tokens[name][page] = (name, len(self.events))

    def unmap(self, name, page):
        self.procs[name].munmap(_pg(page), P)
        self.events.append(("munmap", name, page, None))
        self.tokens[name].pop(page, None)

    def exit(self, name):
        self.procs[name].exit()
        self.events.append(("exit", name, None, None))
        self.exited[name] = len(self.events)

    def event_text(self, i):
        kind, who, what, detail = self.events[i - 1]
        if kind == "fork":
            return f"{who} forks {what}"
        if kind == "write":
            return f"{who} writes page {what}"
        if kind == "munmap":
            return f"{who} unmaps page {what}"
        return f"{who} exits"

    def setup_text(self):
        return (f"Process p maps {self.npages} pages at {_pg(0):#x} (pages 0-{self.npages - 1}; "
                "private, anonymous, read-write) and writes to every one of them. Then:")

    def events_text(self):
        return [f"  {i}. {self.event_text(i)}" for i in range(1, len(self.events) + 1)]

    def first_write(self, name, page, detail):
        """The number of the first write of ``name`` to ``page`` that was a ``detail``."""
        for i, (kind, who, what, how) in enumerate(self.events, 1):
            if kind == "write" and who == name and what == page and how == detail:
                return i
        return None

    def ancestors(self, name):
        out = []
        while self.parent.get(name):
            name = self.parent[name]
            out.append(name)
        return out


def _random_events(rng, fam, nevents, max_procs=3, unmap=False):
    fam.fork("p")
    for _ in range(nevents - 1):
        live = fam.live()
        r = rng.random()
        if r < 0.25 and len(fam.procs) < max_procs:
            fam.fork(rng.choice(live))
        elif r < 0.3 and len(live) > 2:
            fam.exit(rng.choice([n for n in live if n != "p"]))
        elif unmap and r < 0.38:
            name = rng.choice(live)
            mapped = [i for i in range(fam.npages) if i in fam.tokens[name]]
            if len(mapped) > 1:
                fam.unmap(name, rng.choice(mapped))
        else:
            name = rng.choice(live)
            mapped = [i for i in range(fam.npages) if i in fam.tokens[name]]
            fam.write(name, rng.choice(mapped))


def _names_text(names):
    return "+".join(names)


def _read_names(value, known):
    """Process names from a student: a list, or text such as ``"p+child"`` / ``"p, child"``
    (``-`` for none). Raises ValueError for a name that is not in ``known``."""
    if isinstance(value, str):
        value = [v for v in re.split(r"[+,\s]+", value.strip()) if v and v != "-"]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"could not read {value!r} as process names")
    names = [str(v).strip() for v in value]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"there is no process named {unknown[0]!r} "
                         f"(the processes are {', '.join(known)})")
    return names

