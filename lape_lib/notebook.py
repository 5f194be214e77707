"""Helpers the notebooks call right after their ``parameters`` cell.

``check(globals(), SPEC)`` validates every parameter (type, choices), applies smoke mode and
prints the values in use. Smoke mode (``LAPE_SMOKE=1``) swaps in tiny values so that tools
that inject no parameters (nbval, a plain "Run all") finish in seconds on a CPU: in smoke mode a
parameter that has a smoke value gets it whatever papermill injected, and the others keep theirs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

SMOKE_ENV = "LAPE_SMOKE"
# Set where no person can move a slider (the test suite's papermill and nbval runs): widgets are
# shown as static figures there. nbclient can also hang on a cell that creates widgets
# (jupyter/nbclient#312), which a headless run cannot afford.
NO_WIDGETS_ENV = "LAPE_NO_WIDGETS"
_UNSET: Any = object()


@dataclass(frozen=True)
class Param:
    """One notebook parameter: its type(s), allowed values (if a closed set), and its smoke value."""

    types: type | tuple[type, ...]
    choices: Sequence[Any] | None = None
    smoke: Any = _UNSET  # the value smoke mode uses (a callable: made from the notebook's); unset: keep it
    each: bool = False  # the value is a list whose *items* must be among ``choices``
    positive: bool = False  # a number must be > 0 (None, where allowed, passes)
    minimum: float | None = None  # a number must be >= this (None, where allowed, passes)
    parse: Callable[[Any], Any] | None = None  # raises ValueError on a bad value (each item, with ``each``)


def env_flag(name: str) -> bool:
    """Whether an environment switch is on: set to anything but empty, 0, false or no."""
    return os.environ.get(name, "").lower() not in ("", "0", "false", "no")


def widgets_wanted(interactive: bool) -> bool:
    """Whether to show sliders: asked for (``interactive``) and not a headless run (``NO_WIDGETS_ENV``)."""
    return interactive and not env_flag(NO_WIDGETS_ENV)


def smoke_mode() -> bool:
    return env_flag(SMOKE_ENV)


def smoke_subfolder(path: str) -> str:
    """``path/smoke``: smoke runs write beside a real run's folder, never into it (a real run
    would otherwise find a smoke run's checkpoint there and refuse it, or the reverse)."""
    return str(Path(path) / "smoke")


def _type_names(types: type | tuple[type, ...]) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join("None" if t is type(None) else t.__name__ for t in types)


def integer(value: Any) -> int:
    """``parse`` for items that must be ints (seeds): 1.5 or True is refused, not truncated."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{value!r} is not an integer")
    return value


_PLAIN = (bool, int, float, str, list, dict, tuple, type(None))


def check(namespace: Mapping[str, Any], spec: Mapping[str, Param], *, quiet: bool = False) -> SimpleNamespace:
    """Validate the notebook's parameters and return them (smoke values applied) as a namespace.

    Raises ValueError naming the first parameter that is missing, of the wrong type, not
    among its choices or not positive where it must be, with what would be valid; and for a
    plain value whose name is a near miss of a parameter's (``epoch`` for ``epochs``: papermill
    injects a misspelt ``-p`` as a new variable, which the notebook would otherwise ignore).
    In smoke mode every value it replaces is printed with the value it had.
    """
    import difflib

    for other, given in namespace.items():
        if other in spec or other.startswith("_") or other in ("In", "Out") or not isinstance(given, _PLAIN):
            continue
        near = difflib.get_close_matches(other, list(spec), n=1, cutoff=0.8)
        if near:
            raise ValueError(f"{other}={given!r} is not a parameter of this notebook; did you mean {near[0]!r}? "
                             f"The parameters are {sorted(spec)}")
    smoke = smoke_mode()
    values: dict[str, Any] = {}
    replaced: dict[str, Any] = {}
    for name, p in spec.items():
        if name not in namespace:
            raise ValueError(f"parameter {name!r} is missing; the parameters cell must define {sorted(spec)}")
        value: Any = namespace[name]
        if smoke and p.smoke is not _UNSET:
            value = p.smoke(value) if callable(p.smoke) else p.smoke
            if value != namespace[name]:
                replaced[name] = namespace[name]
        types = p.types if isinstance(p.types, tuple) else (p.types,)
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        typed = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not typed:
            raise ValueError(f"parameter {name}={value!r} has type {type(value).__name__}; expected {_type_names(p.types)}")
        if p.positive and value is not None and not value > 0:
            raise ValueError(f"parameter {name}={value!r} must be a positive number" + (" or None" if type(None) in types else ""))
        if p.minimum is not None and value is not None and not value >= p.minimum:
            raise ValueError(f"parameter {name}={value!r} must be >= {p.minimum:g}" + (" or None" if type(None) in types else ""))
        items = [] if value is None else list(value) if p.each else [value]  # None (where allowed): left to a preset
        if p.choices is not None:
            bad = [v for v in items if v not in p.choices]
            if bad:
                raise ValueError(f"parameter {name}={value!r}: {bad[0]!r} is not valid; choose from {list(p.choices)}")
        if p.parse is not None:
            for item in items:
                try:
                    p.parse(item)
                except ValueError as err:
                    raise ValueError(f"parameter {name}={value!r}: {err}") from None
        values[name] = value
    if not quiet:
        mode = f" (smoke mode: {SMOKE_ENV}=1)" if smoke else ""
        print(f"parameters{mode}:")
        for name, value in values.items():
            print(f"  {name} = {value!r}" + (f"   (smoke mode replaced {replaced[name]!r})" if name in replaced else ""))
    return SimpleNamespace(**values)
