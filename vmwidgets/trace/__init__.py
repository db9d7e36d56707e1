"""Kernel call trees: what each step of a machine did, function by function.

While a :class:`~vmwidgets.Machine` runs a step (a syscall, an access, a fork ...), every
model function marked :func:`traced` adds a :class:`Call` to a tree, named as in the kernel
(``do_mmap`` > ``mmap_region`` > ``vma_merge_new_range``), with its arguments, its result
and the state changes it made (:func:`note`). The tree of a step is ``step.trace``;
:func:`function_graph` renders it in the style of ftrace's function_graph tracer.

One recorder is active at a time (the simulation is single-threaded): ``_active`` is the
recorder of the step being run, or ``None`` when tracing is off, which makes a traced
function cost one global lookup more than a plain one.
"""

import functools

from .format import fmt_value

_active = None


class Note(str):
    """A state change, in the order it happened among a call's callees."""

    __slots__ = ()


class Call:
    """One kernel function call: ``func(args) = result``, its callees and state changes.

    :param func: the kernel function's name.
    :param args: ``{name: text}``, already formatted for reading.
    ``body`` holds the callees (:class:`Call`) and state changes (:class:`Note`) in the
    order they happened; :attr:`children` and :attr:`changes` split them.
    """

    __slots__ = ("func", "args", "result", "error", "body", "nnotes", "dropped", "ncalls",
                 "dropped_calls")

    def __init__(self, func, args=None):
        self.func = func
        self.args = args or {}
        self.result = None
        self.error = None
        self.body = []
        self.nnotes = 0
        self.dropped = 0     # state changes beyond MAX_NOTES, counted but not kept
        self.ncalls = 0
        self.dropped_calls = 0   # callees beyond MAX_CALLS: run untraced, counted

    @property
    def children(self):
        return [c for c in self.body if isinstance(c, Call)]

    @property
    def changes(self):
        """The state changes made by this call itself (not by its callees)."""
        return [str(c) for c in self.body if isinstance(c, Note)]

    def walk(self, depth=0):
        """Yield ``(depth, call)`` for this call and every call below it, in call order."""
        yield depth, self
        for child in self.body:
            if isinstance(child, Call):
                yield from child.walk(depth + 1)

    def find(self, func):
        """The first call named ``func`` in this tree (call order), or ``None``."""
        return next((c for _, c in self.walk() if c.func == func), None)

    def find_all(self, func):
        return [c for _, c in self.walk() if c.func == func]

    def names(self):
        """The tree as nested tuples of names: ``("do_mmap", (("mmap_region", ...),))``."""
        return (self.func, tuple(c.names() for c in self.children))

    def all_changes(self):
        """Every state change made in this call and below it, in the order they happened."""
        out = []
        for item in self.body:
            if isinstance(item, Call):
                out.extend(item.all_changes())
            else:
                out.append(str(item))
        return out

    def compact(self, depth=None):
        """The tree as indented names, one call a line (see :func:`~.graph.compact`)."""
        from .graph import compact
        return compact(self, depth)

    def __eq__(self, other):
        return (isinstance(other, Call) and self.func == other.func and self.args == other.args
                and self.result == other.result and self.error == other.error
                and self.dropped == other.dropped and self.dropped_calls == other.dropped_calls
                and self.body == other.body)

    __hash__ = None

    def __repr__(self):
        return f"Call({self.func!r}, children={len(self.children)})"


class Recorder:
    """The call tree being built for one step."""

    __slots__ = ("root", "stack")

    def __init__(self, root):
        self.root = root
        self.stack = [root]


def begin(func, args=None):
    """Start recording a step whose top-level call is ``func``. Returns the previous recorder
    (pass it to :func:`end`)."""
    global _active
    previous = _active
    _active = Recorder(Call(func, args))
    return previous


def end(previous):
    """Stop recording; return the finished tree and re-activate ``previous``."""
    global _active
    root = _active.root if _active is not None else None
    _active = previous
    return root


def pause():
    """Turn recording off (for a replay that must not trace); returns what to :func:`end`."""
    global _active
    previous = _active
    _active = None
    return previous


def resume(previous):
    global _active
    _active = previous


def recording():
    return _active is not None


#: State changes kept per call; a loop over many pages (zap, fork, mprotect of a large range)
#: records the first ones and counts the rest, so a step's tree stays small.
MAX_NOTES = 32
#: Callees recorded per call; further ones run untraced (with their state changes) and
#: are only counted, for the same reason.
MAX_CALLS = 256


def note(text):
    """Record a state change made by the innermost running kernel function.

    Callers that build the text at some cost check :func:`recording` first (or
    ``trace._active``), so that nothing is formatted while tracing is off."""
    if _active is not None:
        call = _active.stack[-1]
        if call.nnotes < MAX_NOTES:
            call.body.append(Note(text))
            call.nnotes += 1
        else:
            call.dropped += 1


def traced(fn=None, *, name=None, hide=(), result=None, null=False):
    """Decorate a model function so that it appears in call trees under the kernel's ``name``
    (default: its own name). Arguments named in ``hide`` are left out of the tree;
    ``result``, if given, maps the return value to what the tree shows (e.g. the address
    out of an ``(address, outcome)`` pair; ``None`` shows nothing, as for a void function).
    With ``null``, a ``None`` result shows as ``NULL`` (a function returning a pointer)."""
    if fn is None:
        return functools.partial(traced, name=name, hide=hide, result=result, null=null)
    func_name = name or fn.__name__
    code = fn.__code__
    params = code.co_varnames[:code.co_argcount]
    shown_params = [(i, k) for i, k in enumerate(params) if k not in hide]
    show_result = result

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        global _active
        rec = _active
        if rec is None:
            return fn(*args, **kwargs)
        parent = rec.stack[-1]
        if parent.ncalls >= MAX_CALLS:
            parent.dropped_calls += 1
            _active = None
            try:
                return fn(*args, **kwargs)
            finally:
                _active = rec
        parent.ncalls += 1
        n = len(args)
        shown = {k: fmt_value(args[i]) for i, k in shown_params if i < n}
        if kwargs:
            shown.update((k, fmt_value(v)) for k, v in kwargs.items() if k not in hide)
        call = Call(func_name, shown)
        parent.body.append(call)
        rec.stack.append(call)
        try:
            value = fn(*args, **kwargs)
        except BaseException as exc:
            call.error = _call_error(exc)
            raise
        finally:
            rec.stack.pop()
        if show_result is not None:
            shown_value = show_result(value)
        else:
            shown_value = value
        if shown_value is not None:
            call.result = fmt_value(shown_value)
        elif null:
            call.result = "NULL"
        return value

    wrapper.__traced__ = func_name
    return wrapper


def errno_result(value):
    """A result mapper for functions returning an address or a negative errno (and None for
    "no room"): ``-ENOMEM`` instead of ``-0xc``."""
    import errno as errno_mod
    if value is None:
        return "-ENOMEM"
    if isinstance(value, int) and value < 0 and -value in errno_mod.errorcode:
        return "-" + errno_mod.errorcode[-value]
    return value


def _error_text(exc):
    import errno as errno_mod
    code = getattr(exc, "errno", None)
    if isinstance(code, int):
        return f"-{errno_mod.errorcode.get(code, code)}"
    return type(exc).__name__


#: How a call that ended in a signal or an allocation failure shows its outcome.
_SIGNALS = {"SegmentationFault": "SIGSEGV", "BusError": "SIGBUS", "ProcessKilled": "SIGKILL",
            "OutOfMemory": "-ENOMEM"}


def _call_error(exc):
    return _SIGNALS.get(type(exc).__name__) or _error_text(exc)


from .graph import compact, function_graph, structure_diff  # noqa: E402  (uses Call)

__all__ = ["Call", "Note", "Recorder", "begin", "end", "note", "traced", "function_graph", "recording",
           "pause", "resume", "compact", "structure_diff", "MAX_NOTES", "MAX_CALLS", "errno_result"]
