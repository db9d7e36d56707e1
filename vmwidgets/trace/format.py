"""How values read in a call tree: addresses in hex, VMAs as ranges, pages as PFNs.

>>> fmt_value(0x7ffff7ff5000), fmt_value(7), fmt_value(None), fmt_value(b"abc")
('0x7ffff7ff5000', '7', 'NULL', '<3 bytes>')
"""


def _fmt_int(value):
    return hex(value) if value > 9 or value < -9 else str(value)


def _fmt_str(value):
    return value if len(value) <= 60 else value[:57] + "..."


def _fmt_bytes(value):
    return f"<{len(value)} bytes>"


def _fmt_seq(value):
    inner = ", ".join(fmt_value(v) for v in value[:4])
    more = ", ..." if len(value) > 4 else ""
    return f"({inner}{more})" if isinstance(value, tuple) else f"[{inner}{more}]"


#: type -> formatter, filled on first use of each type (a traced call formats every
#: argument, so the lookup is on the hot path while tracing).
_BY_TYPE = {type(None): lambda value: "NULL", bool: str, int: _fmt_int, str: _fmt_str,
            bytes: _fmt_bytes, bytearray: _fmt_bytes, memoryview: _fmt_bytes,
            tuple: _fmt_seq, list: _fmt_seq}


def _formatter(cls):
    own = getattr(cls, "__trace__", None)
    if own is not None:
        return own
    for base, fmt in ((bool, str), (int, _fmt_int), (str, _fmt_str), (bytes, _fmt_bytes),
                      (bytearray, _fmt_bytes), (memoryview, _fmt_bytes), (tuple, _fmt_seq),
                      (list, _fmt_seq)):
        if issubclass(cls, base):
            return fmt
    return lambda value: type(value).__name__


def fmt_value(value):
    """A short text for ``value``; objects may define ``__trace__()`` to choose their own."""
    fmt = _BY_TYPE.get(type(value))
    if fmt is None:
        fmt = _BY_TYPE[type(value)] = _formatter(type(value))
    return fmt(value)
