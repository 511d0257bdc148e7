"""Op handler registration, shared by every importer.

A handler lowers one canonical op (ATen's name without namespace or overload: "linear", "lstm",
"view", "select", ...) on abstract values (converters/graph.py). Frontends (converters/
frontends/) translate what their capture recorded -- torch.export ATen nodes, torch.fx module
and method calls, TorchScript aten:: nodes -- into calls of these names with ATen's argument
order, so an op is handled once, whichever way it was captured:

    @handles("relu", "relu_")
    def relu(low, node, x):
        return low.activation(node, x, "relu")

`handler(name)` returns the function or None. The registry is filled by importing
converters.graph (where the handlers live).
"""
from __future__ import annotations

_HANDLERS = {}


def handles(*names):
    """Register the decorated function as the handler of each op name."""
    def deco(fn):
        for n in names:
            if n in _HANDLERS:
                raise RuntimeError(f"op {n!r} is handled twice ({_HANDLERS[n].__name__}, {fn.__name__})")
            _HANDLERS[n] = fn
        return fn
    return deco


def handler(name):
    return _HANDLERS.get(name)


def names():
    return sorted(_HANDLERS)
