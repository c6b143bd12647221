"""Python scalar functions for pipeline SQL, vectorized over Arrow: ``@headwater.udf``.

A function takes one ``pyarrow`` array per argument (a micro-batch's values, NULLs
already answered NULL) and returns an array of the same length; DuckDB calls it once per
vector of rows, not once per row. Registered functions can be called by name in any
pipeline's SQL (row expressions, WHERE, aggregate arguments); a call that raises sends
its rows to the pipeline's error table with the message.

>>> import pyarrow as pa
>>> import pyarrow.compute as pc
>>> @udf
... def fahrenheit(celsius: float) -> float:
...     return pc.add(pc.multiply(celsius, 1.8), 32)
>>> fahrenheit.name, fahrenheit.params, fahrenheit.returns
('fahrenheit', ('DOUBLE',), 'DOUBLE')
>>> fahrenheit(pa.array([0.0, 100.0])).to_pylist()
[32.0, 212.0]
>>> from headwater.engine import Pipeline
>>> schema = pa.schema([("device_id", pa.string()), ("temperature", pa.float64())])
>>> p = Pipeline.from_sql("CREATE PIPELINE f AS SELECT device_id, "
...     "fahrenheit(temperature) AS temp_f FROM readings", schema)
>>> p.process(pa.table({"device_id": ["a"], "temperature": [20.0]}), 0).appends.to_pylist()
[{'device_id': 'a', 'temp_f': 68.0}]

Functions come from Python code the operator runs: in a server, the modules named by
the ``udf_modules`` setting, imported at start (``load_modules``). Nothing that arrives
over HTTP ever defines or loads one. Ad-hoc queries (``POST /v1/query``) run in the
store's sandboxed database, where these functions do not exist.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, get_type_hints

import duckdb
from duckdb import func

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TYPES = {float: "DOUBLE", int: "BIGINT", str: "VARCHAR", bool: "BOOLEAN", bytes: "BLOB"}
_lock = threading.Lock()
_registry: dict[str, Udf] = {}
_installed: dict[str, Udf] = {}  # in the engine's database


@dataclass(frozen=True, slots=True)
class Udf:
    """A registered function: ``fn`` over Arrow arrays, DuckDB type names in and out."""

    name: str
    fn: Callable[..., Any]
    params: tuple[str, ...]
    returns: str

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


def udf(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    params: Sequence[str] | None = None,
    returns: str | None = None,
) -> Any:
    """Register ``fn`` as a scalar function of pipeline SQL (a decorator, with or without
    arguments). Types are DuckDB type names (``'DOUBLE'``, ``'VARCHAR'``, ``'TIMESTAMP
    WITH TIME ZONE'``...), or read from the annotations (float, int, str, bool, bytes).
    Registering a name again replaces the function."""

    def register(f: Callable[..., Any]) -> Udf:
        hints = get_type_hints(f)
        fname = name or f.__name__
        if not NAME.match(fname):
            raise ValueError(f"function name {fname!r} must be letters, digits and '_'")
        args = [a for a in f.__code__.co_varnames[: f.__code__.co_argcount]]
        ins = tuple(params) if params is not None else tuple(_type(hints.get(a), a) for a in args)
        out = returns if returns is not None else _type(hints.get("return"), "the result")
        if len(ins) != len(args):
            raise ValueError(f"{fname} takes {len(args)} arguments but {len(ins)} types were given")
        made = Udf(fname.lower(), f, ins, out)
        with _lock:
            _registry[made.name] = made
        return made

    return register(fn) if fn is not None else register


def _type(hint: Any, what: str) -> str:
    if hint not in TYPES:
        raise ValueError(
            f"no DuckDB type for {what} (annotation {hint!r}): annotate it with float, int, "
            "str, bool or bytes, or pass params=[...] / returns='...'"
        )
    return TYPES[hint]


def registered() -> dict[str, Udf]:
    with _lock:
        return dict(_registry)


def install(con: duckdb.DuckDBPyConnection) -> None:
    """Create the registered functions (new or replaced ones) in ``con``'s database."""
    with _lock:
        if not _installed:  # Python functions hold the database: close it before Python
            atexit.register(_close, con)
        todo = [u for n, u in _registry.items() if _installed.get(n) is not u]
        for u in todo:
            if u.name in _installed:
                con.remove_function(u.name)
            con.create_function(
                u.name, u.fn, [duckdb.sqltype(p) for p in u.params], duckdb.sqltype(u.returns),
                type=func.PythonUDFType.ARROW, side_effects=False,
            )  # fmt: skip
            _installed[u.name] = u


def _close(con: duckdb.DuckDBPyConnection) -> None:
    with contextlib.suppress(Exception):
        con.close()


def pending() -> bool:
    """Whether a function was registered (or replaced) since the last ``install``."""
    with _lock:
        return any(_installed.get(n) is not u for n, u in _registry.items())


def load_modules(modules: str) -> list[str]:
    """Import the comma-separated ``modules`` (their ``@udf`` functions register)."""
    names = [m.strip() for m in modules.split(",") if m.strip()]
    for module in names:
        importlib.import_module(module)
    return names
