"""ftrace's function_graph output, for a :class:`~vmwidgets.trace.Call` tree.

A call with callees opens a brace and closes it after them; a leaf call ends with ``;``.
The result follows the closing brace (or the leaf) as ``= value``; state changes appear as
``/* ... */`` comment lines, as trace_printk() output does in a real function_graph trace.
"""


def function_graph(call, cpu=0, indent=2):
    """Render ``call`` and its callees; ``cpu`` fills the ``CPU)`` column."""
    lines = []
    _render(call, 0, cpu, indent, lines)
    return "\n".join(lines)


def _signature(call):
    args = ", ".join(f"{k}={v}" for k, v in call.args.items())
    return f"{call.func}({args})"


def _tail(call):
    if call.error is not None:
        return f" = {call.error}"
    return f" = {call.result}" if call.result is not None else ""


def _render(call, depth, cpu, indent, lines):
    pad = " " * (indent * depth)
    prefix = f"{cpu:>2})  "
    if not call.body:
        lines.append(f"{prefix}{pad}{_signature(call)};{_tail(call)}")
        return
    lines.append(f"{prefix}{pad}{_signature(call)} {{")
    for item in call.body:
        if isinstance(item, str):
            lines.append(f"{prefix}{pad}{' ' * indent}/* {item} */")
        else:
            _render(item, depth + 1, cpu, indent, lines)
    lines.append(f"{prefix}{pad}}}{_tail(call)}")
