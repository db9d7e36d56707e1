"""Reading what a student types into a control: numbers, sizes, protections, flags.

Each parser raises :class:`InputError` with a sentence that names the field and says what
was expected, so that a widget can show it instead of a traceback.

>>> parse_int("0x1000", "addr"), parse_int("8K", "length"), parse_int("2", "n")
(4096, 8192, 2)
>>> parse_prot("rw-") == 3, parse_prot("PROT_READ|PROT_EXEC") == 5, parse_prot("none")
(True, True, 0)
>>> parse_flags("private|anonymous") == 0x22
True
>>> parse_int("12q", "length")
Traceback (most recent call last):
...
vmwidgets.widgets.inputs.InputError: length: '12q' is not a number (write e.g. 4096, 0x1000 or 16K)
"""

from ..core import flags as F

_SUFFIX = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


class InputError(ValueError):
    """A control holds text that cannot be used; the message names the field."""


def parse_int(text, name, minimum=0):
    """An integer from ``text``: decimal, ``0x`` hex, or with a K/M/G suffix."""
    s = str(text).strip().replace("_", "")
    if not s:
        raise InputError(f"{name}: empty (write e.g. 4096, 0x1000 or 16K)")
    scale = 1
    if s[-1].upper() in _SUFFIX and not s.lower().startswith("0x"):
        scale, s = _SUFFIX[s[-1].upper()], s[:-1]
    try:
        value = int(s, 0) * scale
    except ValueError:
        raise InputError(f"{name}: {text!r} is not a number (write e.g. 4096, 0x1000 or 16K)") from None
    if value < minimum:
        raise InputError(f"{name}: {value} is below {minimum}")
    if value >= 1 << 64:
        raise InputError(f"{name}: {text!r} does not fit in 64 bits")
    return value


def _names(text, prefix, name):
    value = 0
    for part in str(text).replace(",", "|").split("|"):
        part = part.strip().upper()
        if not part or part == "0":
            continue
        key = part if part.startswith(prefix) else prefix + part
        if not hasattr(F, key):
            known = ", ".join(sorted(k[len(prefix):].lower() for k in vars(F)
                                     if k.startswith(prefix) and isinstance(getattr(F, k), int))[:14])
            raise InputError(f"{name}: unknown {prefix}* name {part!r} (known: {known}, ...)")
        value |= getattr(F, key)
    return value


def parse_prot(text):
    """``"rw-"``-style letters, ``"none"``, or ``PROT_*`` names joined by ``|``."""
    s = str(text).strip()
    if s.lower() in ("none", "---", "0", ""):
        return F.PROT_NONE
    if len(s) <= 3 and set(s.lower()) <= set("rwx-") and "_" not in s:
        if any(c != "-" and "rwx"[i] != c for i, c in enumerate(s.lower())):
            raise InputError(f"prot: {text!r}: letters go in the order r, w, x (e.g. 'rw-', 'r-x')")
        value = 0
        for letter, bit in zip(s.lower(), (F.PROT_READ, F.PROT_WRITE, F.PROT_EXEC)):
            value |= bit if letter != "-" else 0
        return value
    return _names(s, "PROT_", "prot")


def parse_flags(text):
    """``MAP_*`` names (with or without the prefix) joined by ``|``."""
    value = _names(text, "MAP_", "flags")
    if not value & (F.MAP_PRIVATE | F.MAP_SHARED):
        raise InputError("flags: need 'private' or 'shared' (e.g. 'private|anonymous')")
    return value


def parse_advice(text):
    """One ``MADV_*`` name, with or without the prefix."""
    return _names(text, "MADV_", "advice")


def parse_data(text):
    """Bytes to write: the text as UTF-8 (at least one byte)."""
    data = str(text).encode()
    if not data:
        raise InputError("data: empty; type the bytes to write (e.g. hello)")
    return data
