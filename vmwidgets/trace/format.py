"""How values read in a call tree: addresses in hex, VMAs as ranges, pages as PFNs."""


def fmt_value(value):
    """A short text for ``value``; objects may define ``__trace__()`` to choose their own."""
    own = getattr(type(value), "__trace__", None)
    if own is not None:
        return own(value)
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return hex(value) if value > 9 or value < -9 else str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, str):
        return value if len(value) <= 60 else value[:57] + "..."
    if isinstance(value, (tuple, list)):
        inner = ", ".join(fmt_value(v) for v in value[:4])
        more = ", ..." if len(value) > 4 else ""
        return f"({inner}{more})" if isinstance(value, tuple) else f"[{inner}{more}]"
    return type(value).__name__
