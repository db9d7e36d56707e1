"""The machine's history: every step logged, any earlier state rebuilt on demand.

A step is one public operation (a syscall, an access, a fork, a sysctl ...). The timeline
keeps, for every step, the :class:`Op` that ran it (a few dozen bytes), and for the most
recent steps their whole :class:`StepRecord` (result, events, call tree). Now and then it
pickles the machine (without its event log; compressed, about 12 times smaller): by default once the steps since the last
checkpoint took as long to run as a checkpoint takes to make, and at least 10 ms, so that
keeping history costs at most as much again as running the steps, and rebuilding a state
replays at most that much work. The state after step ``n`` is then the
nearest checkpoint at or before ``n`` with the ops after it run again: the model is
deterministic, so a replay reproduces the same state, results and call trees exactly.
Older step records are rebuilt the same way, so memory stays bounded by the checkpoints.

>>> import vmwidgets as vw
>>> m = vw.Machine(ram="16M")
>>> p = m.spawn()
>>> a = p.mmap(0, 8192, vw.PROT_READ | vw.PROT_WRITE, vw.MAP_PRIVATE | vw.MAP_ANONYMOUS)
>>> p.write(a, b"x")
>>> before = m.timeline.state(2)           # after spawn and mmap, before the write
>>> before.task(p.pid).pagemap(a).present, p.pagemap(a).present
(False, True)
>>> rec = m.timeline.record(2)
>>> rec.op.call, rec.op.args == (a, b"x")
('write', True)
"""

import gc
import pickle
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field

from .. import trace


@dataclass(frozen=True)
class Op:
    """One logged public call: ``target`` is 0 for the machine, else a process (or thread) id;
    ``call`` the method name. Plain data, so that a run can be saved and replayed."""

    target: int
    call: str
    args: tuple
    kwargs: dict = field(default_factory=dict)

    def shown(self, names=()):
        """The arguments as a call tree shows them, under ``names`` (the parameters of the
        method) where given."""
        names = list(names) + [f"arg{i}" for i in range(len(names), len(self.args))]
        shown = {name: trace.fmt_value(a) for name, a in zip(names, self.args)}
        shown.update((k, trace.fmt_value(v)) for k, v in self.kwargs.items())
        if self.target:
            shown = {"pid": str(self.target), **shown}
        return shown

    def __str__(self):
        who = f"pid {self.target}: " if self.target else ""
        args = [trace.fmt_value(a) for a in self.args]
        args += [f"{k}={trace.fmt_value(v)}" for k, v in self.kwargs.items()]
        return f"{who}{self.call}({', '.join(args)})"


@dataclass
class StepRecord:
    """What one step did: its op, its result (or the error it raised, as ``-ENOMEM`` or an
    exception name), the events it produced and its kernel call tree."""

    index: int
    op: Op
    result: object = None
    error: str = None
    events: list = field(default_factory=list)
    trace: object = None
    cost: float = 0.0           # seconds the step took to run
    tlb_flushes: list = field(default_factory=list)   # the step's tlb_flush records (.tlb)
    reason: str = None          # why it failed, in words (the error's ``reason`` or message)

    def function_graph(self, cpu=0):
        """The call tree in ftrace's function_graph format (empty if tracing was off)."""
        return trace.function_graph(self.trace, cpu) if self.trace is not None else ""

    def __str__(self):
        out = f"step {self.index}: {self.op}"
        return out + (f" -> {self.error}" if self.error else
                      f" = {trace.fmt_value(self.result)}" if self.result is not None else "")


class ReplayError(RuntimeError):
    """A replay did not reproduce what the step did the first time: a determinism bug."""


class Timeline:
    """The history of one machine. ``len(timeline)`` steps have run; :meth:`state` gives the
    machine after any number of them and :meth:`record` any step's record.

    :param checkpoint_every: a fixed number of steps between two checkpoints, or ``None``
        to choose by measured cost (see above).
    :param keep_records: how many recent step records to keep (older ones are rebuilt).
    """

    #: With ``checkpoint_every=None``: the least step time (s) between two checkpoints.
    REPLAY_BUDGET = 0.010

    def __init__(self, machine, checkpoint_every=None, keep_records=1000, cache=4):
        if checkpoint_every is not None and (not isinstance(checkpoint_every, int)
                                             or checkpoint_every < 1):
            raise ValueError("checkpoint_every must be a positive int or None, "
                             f"got {checkpoint_every!r}")
        self.machine = machine
        self.checkpoint_every = checkpoint_every
        self._since = 0.0           # step time run since the last checkpoint
        self._dump_cost = 0.0
        self.keep_records = keep_records
        self.ops = []
        self.errors = []            # per step: the error it ended with, or None
        self.records = OrderedDict()
        self.checkpoints = {}
        self._checkpoint()
        self._cache = OrderedDict()     # step -> read-only machine restored at that step
        self._cache_size = cache

    def __len__(self):
        return len(self.ops)

    @staticmethod
    def _pickle(machine):
        return _without_gc(pickle.dumps, machine, protocol=pickle.HIGHEST_PROTOCOL)

    def _checkpoint(self):
        began = time.perf_counter()
        self.checkpoints[len(self.ops)] = zlib.compress(self._pickle(self.machine), 1)
        self._dump_cost = time.perf_counter() - began
        self._since = 0.0

    def append(self, record, cost=0.0):
        """Log a finished step that took ``cost`` seconds (called by the machine)."""
        assert record.index == len(self.ops), (record.index, len(self.ops))
        self.ops.append(record.op)
        self.errors.append(record.error)
        self.records[record.index] = record
        while len(self.records) > self.keep_records:
            self.records.popitem(last=False)
        self._since += cost
        if self.checkpoint_every is not None:
            if len(self.ops) % self.checkpoint_every == 0:
                self._checkpoint()
        elif self._since >= max(self.REPLAY_BUDGET, self._dump_cost):
            self._checkpoint()

    def _check(self, n, name):
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"{name} must be an int, not {type(n).__name__}")
        if not 0 <= n <= len(self.ops):
            raise IndexError(f"{name} {n} is outside the history (0..{len(self.ops)})")

    def state(self, n):
        """The machine after the first ``n`` steps, read-only (``n == len(self)`` is the live
        machine itself). Costs one checkpoint load and at most ``checkpoint_every - 1``
        replayed steps; recently visited states are cached."""
        self._check(n, "step")
        if n == len(self.ops):
            return self.machine
        if n in self._cache:
            self._cache.move_to_end(n)
            return self._cache[n]
        machine, _ = _without_gc(self._rebuild, n, records=False)
        self._cache[n] = machine
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return machine

    def record(self, index):
        """The :class:`StepRecord` of step ``index`` (0-based), rebuilt by replay if it is no
        longer kept."""
        self._check(index, "index")
        if index == len(self.ops):
            raise IndexError(f"step {index} has not run yet (the history has {index} steps)")
        if index in self.records:
            return self.records[index]
        _, rebuilt = _without_gc(self._rebuild, index + 1, records=True, first=index)
        return rebuilt[index]

    def _rebuild(self, n, records, first=None):
        """Load the nearest checkpoint at or before ``n`` (or before step ``first``) and
        replay up to ``n``. Returns the frozen machine and, if asked, the records of the
        replayed steps (with call trees)."""
        first = n if first is None else first
        start = max(c for c in self.checkpoints if c <= first)
        best = max((s for s in self._cache if start <= s <= n), default=None)
        if best is not None and not records:
            machine = pickle.loads(self._pickle(self._cache[best]))
            start = best
        else:
            machine = pickle.loads(zlib.decompress(self.checkpoints[start]))
        machine.frozen = False
        machine.tracing = records and self.machine.tracing
        collected = {}
        machine.timeline = _Collector(collected, start) if records else None
        machine.nr_steps = start
        for index in range(start, n):
            op = self.ops[index]
            _, error = machine.apply(op)
            if error != self.errors[index]:
                raise ReplayError(f"step {index} ({op}) replayed with error {error}, "
                                  f"not {self.errors[index]}")
            if records:
                got, want = collected[index], self.records.get(index)
                if want is not None and not _same_outcome(got, want):
                    raise ReplayError(f"step {index} ({op}) replayed as {got}, not {want}")
        machine.timeline = None
        machine.events.clear()          # a past state has no event log; records carry them
        machine.frozen = True
        return machine, collected

    def __repr__(self):
        return (f"Timeline({len(self.ops)} steps, {len(self.checkpoints)} checkpoints, "
                f"{len(self.records)} records kept)")


def _without_gc(fn, *args, **kwargs):
    """Pickling and replaying make or visit tens of thousands of objects; a full cyclic-GC
    pass in the middle would scan every object of the program (the kept call trees too),
    which makes the slowest rebuilds ten times slower. The work is bounded, so the garbage
    it leaves is collected afterwards."""
    was = gc.isenabled()
    gc.disable()
    try:
        return fn(*args, **kwargs)
    finally:
        if was:
            gc.enable()


def _same_outcome(a, b):
    """Did two runs of a step end alike? (Objects such as a spawned Process compare by what
    they show, since a replay makes new ones.)"""
    return a.error == b.error and trace.fmt_value(a.result) == trace.fmt_value(b.result)


class _Collector:
    """Stands in for a timeline while a copy replays: keeps the records it produces."""

    def __init__(self, into, start):
        self.into = into

    def append(self, record, cost=0.0):
        self.into[record.index] = record
