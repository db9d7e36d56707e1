"""The base of every exercise kind: :class:`Exercise`, :class:`Feedback`, and the small
helpers the kinds share (the arena, reading numbers and maps lines from a student)."""

import random
import re
from dataclasses import dataclass, field

from ...core import flags as F
from ...core.machine import Machine


P = F.PAGE_SIZE
#: Where the maps, cow and rmap exercises put their arena: short addresses, far from the rest.
ARENA = 0x10000000
_RW = F.PROT_READ | F.PROT_WRITE
_ANON_FIXED = F.MAP_PRIVATE | F.MAP_ANONYMOUS | F.MAP_FIXED


@dataclass
class Feedback:
    """The verdict on an answer: ``correct``, and one sentence per mistake found."""

    correct: bool
    mistakes: list = field(default_factory=list)

    def __bool__(self):
        return self.correct

    def __str__(self):
        if self.correct:
            return "Correct."
        return "Not quite:\n" + "\n".join(f"- {m}" for m in self.mistakes)


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, not {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return seed


class Exercise:
    """One generated exercise. ``params`` (echoed first, as OSTEP's simulators do),
    ``question`` text, ``answer`` (structured, for checking), ``worked_answer`` text.

    ``machine`` is the model the answer was read from, for a closer look (and for tests
    that check the answer by other routes).

    Subclasses set ``kind`` and ``summary`` and implement ``_build()`` (which fills the
    four fields using ``self.rng`` only) and ``check()``.
    """

    kind = None
    summary = ""

    def __init__(self, seed=0):
        self.seed = _check_seed(seed)
        self.rng = random.Random(seed)
        self.params = {"kind": self.kind, "seed": seed}
        self.question = ""
        self.answer = None
        self.worked_answer = ""
        self._build()
        del self.rng

    def _build(self):
        raise NotImplementedError

    def check(self, student):
        """A :class:`Feedback` for ``student``'s answer."""
        raise NotImplementedError

    def params_text(self):
        """The parameters, one ``ARG name value`` line each."""
        return "\n".join(f"ARG {k} {v}" for k, v in self.params.items())

    def text(self, answer=False):
        """Parameters, question, and with ``answer`` the worked answer: what the command
        line prints."""
        out = [self.params_text(), "", self.question]
        if answer:
            out += ["", "ANSWER", "", self.worked_answer]
        return "\n".join(out)

    def __eq__(self, other):
        return (type(other) is type(self) and self.params == other.params
                and self.question == other.question and self.answer == other.answer
                and self.worked_answer == other.worked_answer)

    def __repr__(self):
        return f"vw.exercise({self.kind!r}, {self.seed})"


def _machine():
    return Machine(ram="64M", history=False, trace=False)


def _pg(n):
    return ARENA + n * P


def _int(text):
    """A number from a student: int, '0x..' hex, or decimal text; None if it is not one."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        return text
    if isinstance(text, str):
        try:
            return int(text.strip().replace("_", ""), 0)
        except ValueError:
            try:
                return int(text.strip(), 16)
            except ValueError:
                return None
    return None



def _numbered(items, n, noun):
    """Answers a student gave by number (``{1: ..., 2: ...}``) as a list in order 1..n;
    ValueError naming the numbers left out."""
    missing = [i for i in range(1, n + 1) if i not in items]
    if missing:
        raise ValueError(f"give an answer for every {noun}; missing: "
                         + ", ".join(map(str, missing)))
    return [items[i] for i in range(1, n + 1)]


def _unique(items):
    out = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


_PROTS = {"r": F.PROT_READ, "rw": _RW, "rx": F.PROT_READ | F.PROT_EXEC, "none": F.PROT_NONE}
_PROT_C = {F.PROT_NONE: "PROT_NONE", F.PROT_READ: "PROT_READ", _RW: "PROT_READ|PROT_WRITE",
           F.PROT_READ | F.PROT_EXEC: "PROT_READ|PROT_EXEC"}
_MAPS_LINE = re.compile(r"(?:0x)?([0-9a-fA-F]+)\s*-\s*(?:0x)?([0-9a-fA-F]+)\s+([r-][w-][x-][ps])")


def _arena_state(p, npages):
    """Per page of the arena: ``(vma id, perms)`` or None."""
    out = []
    for i in range(npages):
        vma = p.mm.vma_lookup(_pg(i))
        out.append(None if vma is None else (vma.id, vma.perms()))
    return out


def _arena_lines(p, npages):
    return [(v.vm_start, v.vm_end, v.perms()) for v in p.mm.vmas_in(_pg(0), _pg(npages))]


def _line_text(line):
    return f"{line[0]:08x}-{line[1]:08x} {line[2]}"

