"""Scenarios: a machine and a list of public calls, as plain data that round-trips through JSON.

A scenario is what a lesson, a test or a bug report needs to rebuild a machine exactly: the
machine's parameters and a list of *ops*, each one public API call. It is written to be
read and written by hand::

    {"name": "merge-prev", "title": "...", "description": "...",
     "machine": {"ram": "64M"},
     "ops": [
       {"call": "spawn", "as": "p"},
       {"call": "mmap", "proc": "p", "addr": "0x100000000000", "length": "16K",
        "prot": "rw", "flags": "private|anonymous|fixed"},
       {"call": "fork", "proc": "p", "as": "child"},
       {"call": "write", "proc": "child", "addr": "0x100000000000", "data": "hi"},
       {"call": "munmap", "proc": "p", "addr": "0x100000000001", "length": "4K",
        "expect": "EINVAL"}]}

The keys of an op:

``call``
    the method: of the :class:`~vmwidgets.Machine` (``spawn``, ``create_file``, ``reclaim``,
    ``set_sysctl`` ...) or, with ``proc``, of a process (``mmap``, ``write``, ``fork`` ...).
``proc``
    the name of the process (or thread) that makes the call.
``as``
    a name for the result: a process for ``spawn``/``fork``, a number for anything else
    (``mmap``'s address, ``open``'s fd). Later ops use the name: ``"proc": "child"``,
    ``"addr": "buf+0x2000"``, ``"fd": "fd"``.
``expect``
    the error the call must end in: an errno name (``"ENOMEM"``), ``"SIGSEGV"`` (or the
    more precise ``"SEGV_MAPERR"``/``"SEGV_ACCERR"``), ``"SIGBUS"`` or ``"SIGKILL"``.
    Without it the call must succeed.
``returns``
    the value the call must return (checked when given).
``note``
    free text, shown when the scenario is printed.

Every other key is a parameter of the call, by its Python name. Values are JSON, with
readable forms where the parameter is known: addresses and numbers as ints, hex strings
(``"0x7f0000000000"``) or bound names plus an offset; sizes also as ``"16K"``/``"2M"``;
``prot`` as letters (``"rw"``, ``"r-x"``, ``"none"``); mmap/mremap/open ``flags`` and
``advice`` as lower-case names without the prefix, joined with ``|``; ``data`` as text,
``{"hex": "00ff"}`` or ``{"fill": "A", "size": "8K"}``.

>>> import vmwidgets as vw
>>> sc = vw.scenarios.Scenario.from_dict({"name": "demo", "ops": [
...     {"call": "spawn", "as": "p"},
...     {"call": "mmap", "proc": "p", "addr": 0, "length": "8K", "prot": "rw",
...      "flags": "private|anonymous", "as": "buf"},
...     {"call": "write", "proc": "p", "addr": "buf+0x1000", "data": "hi"},
...     {"call": "read", "proc": "p", "addr": "buf+0x1000", "size": 2, "returns": "hi"},
...     {"call": "write", "proc": "p", "addr": "0x1000", "data": "x", "expect": "SIGSEGV"}]})
>>> run = sc.start()
>>> outcomes = run.finish()
>>> p, buf = run.procs["p"], run.values["buf"]
>>> p.read(buf + 0x1000, 2)
b'hi'
>>> print(outcomes[4])
[4] p.write(0x1000, "x") -> SIGSEGV
>>> vw.scenarios.Scenario.from_json(sc.to_json()) == sc
True

``sc.run()`` does the same in one call and returns the machine and the processes by name.
"""

import errno as errno_mod
import inspect
import json
import re
from dataclasses import dataclass, field

from ..core import flags as F
from ..core.errors import BusError, ProcessKilled, SegmentationFault
from ..core.machine import Machine, Process

__all__ = ["Scenario", "Step", "ScenarioRun", "StepOutcome", "ScenarioError", "error_name",
           "machine_params", "from_ops", "from_machine"]

#: The keys of an op that are not parameters of the call.
RESERVED = ("call", "proc", "as", "expect", "returns", "note")
_SIGNALS = ("SIGSEGV", "SEGV_MAPERR", "SEGV_ACCERR", "SIGBUS", "SIGKILL")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class ScenarioError(ValueError):
    """A scenario that is malformed, or a run that did not go as the scenario says."""


# -- value codecs: JSON value <-> Python argument -----------------------------------------------

_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
_NUMBER = re.compile(r"(0[xX][0-9a-fA-F]+|\d+)([KMG]?)\Z")


def _number(text, what, units=True):
    match = _NUMBER.match(text.strip())
    if not match or (match.group(2) and not units):
        raise ScenarioError(f"{what}: {text!r} is not a number (use an int, '0x...' hex"
                            + (" or a size such as '16K'" if units else "") + ")")
    value = int(match.group(1), 0)
    return value * _UNITS[match.group(2)] if match.group(2) else value


class _Env:
    """Names bound so far: processes and numbers. (To check a scenario before it runs,
    names are bound to placeholders: ``None`` and 0.)"""

    def __init__(self):
        self.procs = {}
        self.values = {}

    def value(self, name, what):
        if name not in self.values:
            raise ScenarioError(f"{what}: {name!r} is not a bound number"
                                + (" (it names a process)" if name in self.procs else ""))
        return self.values[name]

    def proc(self, name, what):
        if not isinstance(name, str) or name not in self.procs:
            known = ", ".join(sorted(self.procs)) or "none yet"
            raise ScenarioError(f"{what}: no process is named {name!r} (bound: {known})")
        return self.procs[name]


class Int:
    """An int, a hex or decimal string, or a bound name with an optional offset
    (``"buf+0x2000"``, ``"buf-4K"``). ``units`` also allows ``"16K"``-style sizes."""

    def __init__(self, units=False, hex_from=10):
        self.units = units
        self.hex_from = hex_from

    def decode(self, raw, env, what):
        if isinstance(raw, bool) or not isinstance(raw, (int, str)):
            raise ScenarioError(f"{what}: expected a number, got {raw!r}")
        if isinstance(raw, int):
            return raw
        match = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:([+-])\s*(\S+))?\s*\Z", raw)
        if match:
            base = env.value(match.group(1), what)
            if match.group(2) is None:
                return base
            offset = _number(match.group(3), what)
            return base + offset if match.group(2) == "+" else base - offset
        return _number(raw, what, self.units)

    def encode(self, value, names):
        if not isinstance(value, int) or isinstance(value, bool):
            return _generic_encode(value, names)
        if self.units and value > 0:
            for unit in "GMK":
                if value % _UNITS[unit] == 0:
                    return f"{value // _UNITS[unit]}{unit}"
        return f"{value:#x}" if value >= self.hex_from else value

    def show(self, raw):
        return raw if isinstance(raw, str) else (f"{raw:#x}" if raw >= self.hex_from else str(raw))


class BitNames:
    """A bit mask as lower-case names joined with ``|`` (``"private|anonymous|fixed"``).

    ``type_mask`` marks a field of the mask that holds a value, not bits (``MAP_TYPE``).
    """

    def __init__(self, prefix, skip=(), aliases=None, type_mask=0):
        self.names = {}
        for key, value in vars(F).items():
            if key.startswith(prefix) and key not in skip and isinstance(value, int):
                self.names.setdefault(key[len(prefix):].lower(), value)
        self.names.update(aliases or {})
        self.type_mask = type_mask
        self.by_value = {}
        for name, value in self.names.items():
            if name not in (aliases or {}):
                self.by_value.setdefault(value, name)

    def token(self, token, what):
        token = token.strip().lower()
        if token in self.names:
            return self.names[token]
        try:
            return _number(token, what, units=False)
        except ScenarioError:
            raise ScenarioError(f"{what}: unknown name {token!r}; known: "
                                + ", ".join(sorted(self.names))) from None

    def decode(self, raw, env, what):
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if not isinstance(raw, str):
            raise ScenarioError(f"{what}: expected names such as 'private|fixed', got {raw!r}")
        value = 0
        for token in raw.split("|"):
            value |= self.token(token, what)
        return value

    def encode(self, value, names):
        if not isinstance(value, int) or isinstance(value, bool):
            return _generic_encode(value, names)
        parts = []
        if self.type_mask:
            kind = value & self.type_mask
            if kind in self.by_value:
                parts.append(self.by_value[kind])
                value &= ~self.type_mask
        for bit in range(64):
            if value >> bit & 1 and (1 << bit) in self.by_value and not (1 << bit) & self.type_mask:
                parts.append(self.by_value[1 << bit])
                value &= ~(1 << bit)
        if value:
            parts.append(f"{value:#x}")
        return "|".join(parts) if parts else (self.by_value.get(0) or "0")

    def show(self, raw):
        return raw if isinstance(raw, str) else str(raw)


class Prot(BitNames):
    """``prot`` as letters: ``"rw"``, ``"r-x"``, ``"none"``; names (``"read|write"``) too."""

    def __init__(self):
        super().__init__("PROT_", skip=("PROT_NONE",), aliases={"none": 0})

    def token(self, token, what):
        text = token.strip().lower()
        if text and text not in self.names and set(text) <= set("rwx-"):
            if len(set(text.replace("-", ""))) != len(text.replace("-", "")):
                raise ScenarioError(f"{what}: a letter repeats in {token!r}")
            return ((F.PROT_READ if "r" in text else 0) | (F.PROT_WRITE if "w" in text else 0)
                    | (F.PROT_EXEC if "x" in text else 0))
        return super().token(token, what)

    def encode(self, value, names):
        if not isinstance(value, int) or isinstance(value, bool):
            return _generic_encode(value, names)
        rwx = value & (F.PROT_READ | F.PROT_WRITE | F.PROT_EXEC)
        letters = "".join(c for c, bit in (("r", F.PROT_READ), ("w", F.PROT_WRITE),
                                           ("x", F.PROT_EXEC)) if rwx & bit)
        rest = BitNames.encode(self, value & ~rwx, names) if value & ~rwx else ""
        return "|".join(p for p in (letters, rest) if p) or "none"


class Choice(BitNames):
    """One named value (``advice``: ``"dontneed"``)."""

    def decode(self, raw, env, what):
        if isinstance(raw, str) and "|" in raw:
            raise ScenarioError(f"{what}: takes one name, not {raw!r}")
        return super().decode(raw, env, what)

    def encode(self, value, names):
        if isinstance(value, int) and not isinstance(value, bool) and value in self.by_value:
            return self.by_value[value]
        return _generic_encode(value, names)


class OpenFlags(BitNames):
    """open(2) flags: ``"rdonly"``, ``"rdwr|creat"`` (Linux x86-64 values)."""

    def __init__(self):
        self.names = {"rdonly": 0, "wronly": 1, "rdwr": 2, "creat": 0o100, "excl": 0o200,
                      "trunc": 0o1000, "append": 0o2000}
        self.type_mask = 3
        self.by_value = {0: "rdonly", 1: "wronly", 2: "rdwr", 0o100: "creat", 0o200: "excl",
                         0o1000: "trunc", 0o2000: "append"}


class Data:
    """Bytes: text (UTF-8), ``{"hex": "00ff"}`` or ``{"fill": "AB", "size": "8K"}``."""

    def decode(self, raw, env, what):
        if isinstance(raw, str):
            return raw.encode()
        if isinstance(raw, dict) and set(raw) == {"hex"} and isinstance(raw["hex"], str):
            try:
                return bytes.fromhex(raw["hex"])
            except ValueError:
                raise ScenarioError(f"{what}: {raw['hex']!r} is not hex") from None
        if isinstance(raw, dict) and set(raw) == {"fill", "size"} and isinstance(raw["fill"], str):
            pattern = raw["fill"].encode()
            size = Int(units=True).decode(raw["size"], env, what)
            if not pattern or size < 0:
                raise ScenarioError(f"{what}: fill needs a non-empty pattern and a size >= 0")
            return (pattern * (size // len(pattern) + 1))[:size]
        raise ScenarioError(f"{what}: expected text, {{'hex': ...}} or {{'fill': ..., 'size': ...}},"
                            f" got {raw!r}")

    def encode(self, value, names):
        if not isinstance(value, (bytes, bytearray)):
            return _generic_encode(value, names)
        value = bytes(value)
        for n in range(1, 17):
            if len(value) >= 64 and len(value) % n == 0 and value == value[:n] * (len(value) // n) \
                    and _printable(value[:n]):
                return {"fill": value[:n].decode(), "size": Int(units=True).encode(len(value), names)}
        if _printable(value):
            return value.decode()
        return {"hex": value.hex()}

    def show(self, raw):
        if isinstance(raw, dict) and "fill" in raw:
            return f"{json.dumps(raw['fill'])} * {raw['size']}"
        return json.dumps(raw)


def _printable(data):
    return all(32 <= b < 127 for b in data)


class ProcName:
    """A process or thread, by the name a spawn/fork/clone op bound (``None`` and a
    plain task id pass through: ``switch_to(cpu, None)`` idles a CPU)."""

    def decode(self, raw, env, what):
        if isinstance(raw, dict) and set(raw) == {"proc"}:
            raw = raw["proc"]
        if raw is None or (isinstance(raw, int) and not isinstance(raw, bool)):
            return raw
        return env.proc(raw, what)

    def encode(self, value, names):
        if _is_task(value):
            return names[_tid(value)]
        if isinstance(value, int) and not isinstance(value, bool) and value in names:
            return names[value]          # the timeline logs a task as its id
        return _generic_encode(value, names)

    def show(self, raw):
        return raw if isinstance(raw, str) else json.dumps(raw)


class Plain:
    """Any other JSON value; bytes as ``{"hex": ...}``, processes as ``{"proc": name}``."""

    def decode(self, raw, env, what):
        if isinstance(raw, dict) and set(raw) == {"proc"}:
            return env.proc(raw["proc"], what)
        if isinstance(raw, dict) and set(raw) == {"hex"}:
            return Data().decode(raw, env, what)
        return raw

    def encode(self, value, names):
        return _generic_encode(value, names)

    def show(self, raw):
        return json.dumps(raw)


def _generic_encode(value, names):
    if _is_task(value):
        return {"proc": names[_tid(value)]}
    if isinstance(value, (bytes, bytearray)):
        return {"hex": bytes(value).hex()}
    if isinstance(value, (list, tuple)):
        return [_generic_encode(v, names) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ScenarioError(f"{value!r} ({type(value).__name__}) has no JSON form")


_ADDR = Int(hex_from=0)
_SIZE = Int(units=True)
_PLAIN = Plain()
#: How each parameter is written, by name; ``(call, name)`` entries take precedence.
CODECS = {
    "addr": _ADDR, "old_addr": _ADDR, "new_addr": _ADDR, "fd": Int(),
    "length": _SIZE, "old_size": _SIZE, "new_size": _SIZE, "size": _SIZE, "offset": _SIZE,
    "nr_pages": Int(), "prot": Prot(), "advice": Choice("MADV_"), "data": Data(),
    "task": ProcName(), "thread": ProcName(),
    ("mmap", "flags"): BitNames("MAP_", skip=("MAP_TYPE", "MAP_ANON"), aliases={"anon": F.MAP_ANONYMOUS},
                                type_mask=F.MAP_TYPE),
    ("mremap", "flags"): BitNames("MREMAP_"),
    ("open", "flags"): OpenFlags(),
}


def codec(call, param):
    """The codec of one parameter of a call."""
    return CODECS.get((call, param)) or CODECS.get(param) or _PLAIN


# -- errors as a scenario names them -----------------------------------------------------------

def error_name(exc):
    """The name a scenario's ``expect`` uses for an exception (``"ENOMEM"``, ``"SIGSEGV"``),
    or ``None`` when the exception is not an outcome of the simulated system (a bug, a bad
    argument, a process that has exited).

    >>> error_name(OSError(12, "Cannot allocate memory"))
    'ENOMEM'
    """
    if isinstance(exc, SegmentationFault):
        return "SIGSEGV"
    if isinstance(exc, BusError):
        return "SIGBUS"
    if isinstance(exc, ProcessKilled):
        return "SIGKILL"
    if isinstance(exc, OSError) and not isinstance(exc, ProcessLookupError) \
            and isinstance(exc.errno, int):
        return errno_mod.errorcode.get(exc.errno, str(exc.errno))
    return None


def _matches(expect, exc):
    got = error_name(exc)
    if expect in ("SEGV_MAPERR", "SEGV_ACCERR"):
        return got == "SIGSEGV" and exc.si_code == getattr(F, expect)
    return got == expect


# -- ops ------------------------------------------------------------------------------------------

def _signature(call, on_machine):
    cls = Machine if on_machine else Process
    fn = getattr(cls, call, None)
    if call.startswith("_") or not callable(fn) or isinstance(fn, (type, property)):
        raise ScenarioError(f"{'Machine' if on_machine else 'Process'} has no public call "
                            f"{call!r}")
    params = list(inspect.signature(fn).parameters.values())[1:]   # without self
    return inspect.Signature(params)


@dataclass
class Step:
    """One op: ``call`` made by process ``proc`` (``None``: the machine) with ``args``,
    a dict of parameter name -> JSON value, in the readable forms the module describes."""

    call: str
    proc: str = None
    args: dict = field(default_factory=dict)
    bind: str = None
    expect: str = None
    returns: object = None
    note: str = None

    @classmethod
    def from_dict(cls, data):
        if not isinstance(data, dict):
            raise ScenarioError(f"an op is a JSON object, got {data!r}")
        if not isinstance(data.get("call"), str):
            raise ScenarioError(f"an op needs 'call' (a method name): {data!r}")
        args = {k: v for k, v in data.items() if k not in RESERVED}
        return cls(data["call"], data.get("proc"), args, data.get("as"), data.get("expect"),
                   data.get("returns"), data.get("note"))

    def to_dict(self):
        out = {"call": self.call}
        if self.proc is not None:
            out["proc"] = self.proc
        out.update(self.args)
        for key, value in (("as", self.bind), ("expect", self.expect),
                           ("returns", self.returns), ("note", self.note)):
            if value is not None:
                out[key] = value
        return out

    def signature(self):
        return _signature(self.call, self.proc is None)

    def resolve(self, env):
        """The Python ``(args, kwargs)`` for the call, names resolved in ``env``."""
        sig = self.signature()
        unknown = [k for k in self.args if k not in sig.parameters]
        if unknown:
            raise ScenarioError(f"{self.call}() has no parameter {unknown[0]!r}; it takes "
                                + ", ".join(sig.parameters))
        values = {k: codec(self.call, k).decode(v, env, f"{self.call} {k}")
                  for k, v in self.args.items()}
        try:
            bound = sig.bind(**values)
        except TypeError as exc:
            raise ScenarioError(f"{self.call}(): {exc}") from None
        return bound.args, bound.kwargs

    def __str__(self):
        sig_params = list(self.signature().parameters)
        shown, gap = [], False
        for name in sig_params:
            if name not in self.args:
                gap = True
                continue
            text = codec(self.call, name).show(self.args[name])
            shown.append(f"{name}={text}" if gap else text)
        who = f"{self.proc}." if self.proc is not None else ""
        out = f"{who}{self.call}({', '.join(shown)})"
        if self.bind is not None:
            out += f" as {self.bind}"
        if self.expect is not None:
            out += f" -> {self.expect}"
        return out


@dataclass
class StepOutcome:
    """What one op of a run did: ``result`` (or ``error``, as ``expect`` names it)."""

    index: int
    step: Step
    result: object = None
    error: str = None
    target: object = None

    def __str__(self):
        text = f"[{self.index}] {self.step}"
        if self.error is None and self.result is not None:
            shown = self.result
            if _is_task(shown):
                shown = (f"pid {shown.pid}" if _tid(shown) == shown.pid else
                         f"tid {_tid(shown)}")
            elif isinstance(shown, int) and not isinstance(shown, bool):
                shown = f"{shown:#x}" if shown > 9 else str(shown)
            elif isinstance(shown, bytes):
                shown = repr(shown)
            text += f" = {shown}"
        return text


# -- scenarios --------------------------------------------------------------------------------------

_MACHINE_PARAMS = [p for p in inspect.signature(Machine).parameters]


@dataclass
class Scenario:
    """A named, described machine and a list of :class:`Step` ops.

    ``machine`` holds keyword arguments for :class:`~vmwidgets.Machine` (``{"ram": "64M",
    "swap": "1M"}``). Building a scenario checks it: calls exist, parameters are known and
    readable, names are bound before use; errors name the op.
    """

    name: str
    title: str = ""
    description: str = ""
    machine: dict = field(default_factory=dict)
    ops: list = field(default_factory=list)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ScenarioError(f"a scenario needs a name, got {self.name!r}")
        if not isinstance(self.machine, dict):
            raise ScenarioError(f"machine must be an object of Machine() arguments, got "
                                f"{self.machine!r}")
        for key in self.machine:
            if key not in _MACHINE_PARAMS:
                raise ScenarioError(f"machine: Machine() has no parameter {key!r}; it takes "
                                    + ", ".join(_MACHINE_PARAMS))
        self.ops = [op if isinstance(op, Step) else Step.from_dict(op) for op in self.ops]
        self._check()

    def _check(self):
        env = _Env()
        for index, step in enumerate(self.ops):
            try:
                if step.proc is not None:
                    env.proc(step.proc, "proc")
                step.resolve(env)
                if step.expect is not None and step.expect not in _SIGNALS \
                        and not hasattr(errno_mod, step.expect):
                    raise ScenarioError(f"expect: {step.expect!r} is not an errno name or one of "
                                        + ", ".join(_SIGNALS))
                if step.bind is not None:
                    if step.expect is not None:
                        raise ScenarioError("an op that expects an error binds no result")
                    if not isinstance(step.bind, str) or not _NAME.match(step.bind):
                        raise ScenarioError(f"as: {step.bind!r} is not a name (letters, digits, _)")
                    if step.bind in env.procs or step.bind in env.values:
                        raise ScenarioError(f"as: {step.bind!r} is already bound")
                    if step.call in ("spawn", "fork") or step.call.startswith("clone"):
                        env.procs[step.bind] = None
                    else:
                        env.values[step.bind] = 0
            except ScenarioError as exc:
                raise ScenarioError(f"{self.name}: op {index} ({step.call}): {exc}") from None

    # -- JSON -------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data):
        if not isinstance(data, dict):
            raise ScenarioError(f"a scenario is a JSON object, got {type(data).__name__}")
        unknown = set(data) - {"name", "title", "description", "machine", "ops"}
        if unknown:
            raise ScenarioError(f"unknown scenario key(s): {', '.join(sorted(unknown))}")
        if not isinstance(data.get("ops", []), list):
            raise ScenarioError("ops must be a list")
        return cls(data.get("name"), data.get("title", ""), data.get("description", ""),
                   dict(data.get("machine", {})), list(data.get("ops", [])))

    def to_dict(self):
        return {"name": self.name, "title": self.title, "description": self.description,
                "machine": dict(self.machine), "ops": [op.to_dict() for op in self.ops]}

    @classmethod
    def from_json(cls, text):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScenarioError(f"not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def to_json(self, indent=1):
        """JSON text, one op per line."""
        head = {k: v for k, v in self.to_dict().items() if k != "ops"}
        text = json.dumps(head, indent=indent)[:-2]
        ops = ",\n  ".join(json.dumps(op.to_dict()) for op in self.ops)
        return f'{text},\n "ops": [\n  {ops}\n ]\n}}\n' if self.ops else text + ',\n "ops": []\n}\n'

    @classmethod
    def load(cls, path):
        with open(path, encoding="utf-8") as f:
            return cls.from_json(f.read())

    def save(self, path):
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json())

    # -- running --------------------------------------------------------------------------------
    def start(self, **machine_kwargs):
        """A :class:`ScenarioRun` on a fresh machine, to run op by op. ``machine_kwargs``
        add to or override the scenario's machine parameters (``trace=False``)."""
        return ScenarioRun(self, **machine_kwargs)

    def run(self, **machine_kwargs):
        """Run every op on a fresh machine; returns ``(machine, {name: process})``.
        Raises :class:`ScenarioError` when an op fails unexpectedly or an expected error
        does not happen."""
        run = self.start(**machine_kwargs)
        run.finish()
        return run.machine, run.procs

    def __str__(self):
        lines = [f"{self.name}: {self.title}" if self.title else self.name]
        if self.machine:
            lines.append("machine: " + ", ".join(f"{k}={v}" for k, v in self.machine.items()))
        for index, step in enumerate(self.ops):
            lines.append(f"[{index}] {step}" + (f"   # {step.note}" if step.note else ""))
        return "\n".join(lines)


class ScenarioRun:
    """A scenario being run one op at a time: ``step()`` runs the next op and returns its
    :class:`StepOutcome` (``None`` when all have run); iterating runs the rest.

    >>> import vmwidgets as vw
    >>> run = vw.scenarios.get("merge-prev").start()
    >>> [str(o) for o in run][:2]
    ['[0] spawn() as p = pid 1', '[1] p.mmap(0x100000000000, 16K, rw, private|anonymous|fixed) = 0x100000000000']
    >>> run.done, len(run.procs["p"].mm.vmas_in(0x100000000000, 0x100000008000))
    (True, 1)
    """

    def __init__(self, scenario, **machine_kwargs):
        self.scenario = scenario
        self.machine = Machine(**{**scenario.machine, **machine_kwargs})
        self.env = _Env()
        self.index = 0
        self.outcomes = []

    @property
    def procs(self):
        """Name -> process (or thread) bound so far."""
        return self.env.procs

    @property
    def values(self):
        """Name -> number bound so far (``"as"`` on an mmap, an open ...)."""
        return self.env.values

    @property
    def done(self):
        return self.index >= len(self.scenario.ops)

    def step(self):
        if self.done:
            return None
        index, step = self.index, self.scenario.ops[self.index]
        where = f"{self.scenario.name}: op {index} ({step})"
        try:
            target = self.machine if step.proc is None else self.env.proc(step.proc, "proc")
            args, kwargs = step.resolve(self.env)
        except ScenarioError as exc:
            raise ScenarioError(f"{where}: {exc}") from None
        outcome = StepOutcome(index, step, target=target)
        try:
            outcome.result = getattr(target, step.call)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - sorted into expected outcomes and failures
            name = error_name(exc)
            if name is None:
                raise ScenarioError(f"{where} failed: {type(exc).__name__}: {exc}") from exc
            if step.expect is None:
                raise ScenarioError(f"{where} failed unexpectedly with {name}: {exc}") from exc
            if not _matches(step.expect, exc):
                raise ScenarioError(f"{where} was expected to fail with {step.expect}, "
                                    f"but failed with {name}: {exc}") from exc
            outcome.error = name if step.expect not in ("SEGV_MAPERR", "SEGV_ACCERR") else step.expect
        else:
            if step.expect is not None:
                raise ScenarioError(f"{where} was expected to fail with {step.expect}, but "
                                    f"returned {outcome.result!r}")
            self._check_returns(step, outcome.result, where)
            self._bind(step, outcome.result, where)
        self.index += 1
        self.outcomes.append(outcome)
        return outcome

    def _check_returns(self, step, result, where):
        if step.returns is None:
            return
        if isinstance(result, bytes):
            want = Data().decode(step.returns, self.env, "returns")
        elif isinstance(result, int):
            want = Int(units=True).decode(step.returns, self.env, "returns")
        else:
            want = step.returns
        if result != want:
            raise ScenarioError(f"{where} returned {result!r}, the scenario says {want!r}")

    def _bind(self, step, result, where):
        if step.bind is None:
            return
        if hasattr(result, "pid") and hasattr(result, "mm"):
            self.env.procs[step.bind] = result
        elif isinstance(result, int) and not isinstance(result, bool):
            self.env.values[step.bind] = result
        else:
            raise ScenarioError(f"{where}: cannot bind {result!r} to {step.bind!r}")

    def finish(self):
        """Run every op that is left; returns the outcomes of all ops run."""
        while not self.done:
            self.step()
        return self.outcomes

    def __iter__(self):
        while not self.done:
            yield self.step()


# -- from a machine's history ----------------------------------------------------------------------

def _size_text(nbytes):
    return Int(units=True).encode(nbytes, {})


def machine_params(machine):
    """The :class:`~vmwidgets.Machine` arguments that rebuild ``machine`` as it was created
    (those that differ from the defaults, and ``ram``)."""
    from ..core.flags import PAGE_SHIFT
    params = {"ram": _size_text(machine.phys.nr_pages << PAGE_SHIFT)}
    if machine.swap_pages:
        params["swap"] = _size_text(machine.swap_pages << PAGE_SHIFT)
    cpu0 = machine.cpus[0]
    given = {"read_ahead_kb": machine.read_ahead_kb, "cpus": len(machine.cpus),
             "tlb_entries": cpu0.tlb.size, "tlb_policy": cpu0.tlb.policy,
             "pcid": machine.pcid, "seed": getattr(machine, "seed", 0)}
    defaults = inspect.signature(Machine).parameters
    params.update((k, v) for k, v in given.items() if v != defaults[k].default)
    return params


def _is_task(value):
    return hasattr(value, "pid") and hasattr(value, "mm")


def _tid(task):
    """The id the timeline logs for a task: a thread's tid, a process's pid."""
    return getattr(task, "tid", task.pid)


def from_ops(ops, machine=None, *, name="replay", title="", description=""):
    """A scenario that makes exactly the calls ``ops`` (a machine's ``timeline.ops``).

    The ops run once on a fresh machine built with ``machine`` (a dict of Machine
    arguments): processes get names (``p``, ``p2`` ... for spawns, ``child``, ``child2`` ...
    for forks, ``t``, ``t2`` ... for threads), calls that failed get their ``expect``, and
    non-zero numbers and bytes returned are kept as ``returns``, so that running the
    scenario checks it replays exactly.
    """
    params = dict(machine or {})
    m = Machine(**params, history=False, trace=False)
    names, counts, steps = {}, {}, []

    def new_name(call):
        stem = "p" if call == "spawn" else "child" if call == "fork" else "t"
        counts[stem] = counts.get(stem, 0) + 1
        return stem + ("" if counts[stem] == 1 else str(counts[stem]))

    for index, op in enumerate(ops):
        target = m if op.target == 0 else m.task(op.target)
        fn = getattr(target, op.call)
        try:
            bound = inspect.signature(fn).bind(*op.args, **op.kwargs)
        except TypeError as exc:
            raise ScenarioError(f"op {index} ({op}): {exc}") from None
        args = {k: codec(op.call, k).encode(v, names) for k, v in bound.arguments.items()}
        step = Step(op.call, None if op.target == 0 else names[op.target], args)
        try:
            result = fn(*op.args, **op.kwargs)
        except Exception as exc:  # noqa: BLE001 - recorded as the op's expected outcome
            step.expect = error_name(exc)
            if step.expect is None:
                raise ScenarioError(f"op {index} ({op}) fails on replay: "
                                    f"{type(exc).__name__}: {exc}") from exc
        else:
            if _is_task(result):
                names[_tid(result)] = step.bind = new_name(op.call)
            elif isinstance(result, (bytes, bytearray)):
                step.returns = Data().encode(result, names)
            elif isinstance(result, int) and not isinstance(result, bool) and result:
                step.returns = Int().encode(result, names)
        steps.append(step)
    return Scenario(name, title, description, params, steps)


def from_machine(machine, *, name="replay", title="", description=""):
    """The scenario that rebuilds ``machine`` from scratch: its parameters and every step of
    its timeline (see :func:`from_ops`).

    >>> import vmwidgets as vw
    >>> m = vw.Machine(ram="32M")
    >>> p = m.spawn()
    >>> a = p.mmap(0, 8192, vw.PROT_READ | vw.PROT_WRITE, vw.MAP_PRIVATE | vw.MAP_ANONYMOUS)
    >>> c = p.fork()
    >>> c.write(a, b"hello")
    >>> sc = vw.scenarios.from_machine(m, name="bug-1234")
    >>> print(sc)
    bug-1234
    machine: ram=32M
    [0] spawn() as p
    [1] p.mmap(0x0, 8K, rw, private|anonymous)
    [2] p.fork() as child
    [3] child.write(0x7ffff7ff5000, "hello")
    >>> m2, procs = sc.run()
    >>> procs["child"].read(a, 5), m2.processes[1].proc_maps() == c.proc_maps()
    (b'hello', True)
    """
    if machine.timeline is None:
        raise ScenarioError("this machine keeps no history (Machine(history=False)): "
                            "there are no ops to export")
    return from_ops(machine.timeline.ops, machine_params(machine), name=name, title=title,
                    description=description)
