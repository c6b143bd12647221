"""Bounds on the values one call builds: ``range()`` lists, ``repeat``, ``lpad``, ...

DuckDB builds such a value in one step, outside its buffer manager and deaf to
interruption, 2,048 rows at a time, so the watcher in ``query.guarded`` would see it only
once it exists. ``bound_values`` rewrites each call so its size argument is checked
first, with DuckDB's own ``error()`` in a ``CASE``; the error text carries a marker
that ``value_too_large`` turns into ``query_too_large``.

>>> from sqlglot import parse_one
>>> bound_values(parse_one("SELECT lpad(s, 9, '0') AS p FROM t"), 100).sql()
"SELECT LPAD(s, CASE WHEN (9) > 100 THEN ERROR('hw_value_too_large:lpad:100') ELSE (9) END, '0') AS p FROM t"
"""

from __future__ import annotations

import re

from sqlglot import exp

from headwater.errors import QueryError

ELEMENT_BYTES = 8  # a list element counts as 8 bytes (BIGINT, DOUBLE, TIMESTAMP)
VALUE_MARKER = "hw_value_too_large"  # the text our error() guards raise


def bound_values(tree: exp.Expr, cap: int) -> exp.Expr:
    """Rewrite calls that build one value of an argument-given size so they stay bounded.

    ``range``/``generate_series`` as lists, ``repeat``, ``lpad``/``rpad``,
    ``list_resize``/``array_resize``, ``bar`` and ``equi_width_bins`` check their size
    argument first (``error()`` in a ``CASE``); ``printf``/``format`` take only literal
    formats with small widths. Row generators in ``FROM`` stream and stay as they are.
    """
    _keep_column_names(tree)
    for node in list(tree.find_all(exp.Func)):
        if isinstance(node.parent, (exp.From, exp.Join, exp.Lateral, exp.Table)):
            continue  # row generators in FROM stream in chunks
        _bounded(node, cap)
    return tree


_SIZED = frozenset({"list_resize", "array_resize", "bar", "equi_width_bins", "printf", "sprintf"})


def _sized(node: exp.Expr) -> bool:
    """Whether ``node`` is a call whose output size an argument sets."""
    if isinstance(node, (exp.GenerateSeries, exp.Repeat, exp.Pad, exp.Format)):
        return True
    return isinstance(node, exp.Anonymous) and node.name.lower() in _SIZED


def _keep_column_names(tree: exp.Expr) -> None:
    """Name unnamed result columns that hold a bounded call as the user wrote them."""
    for select in tree.find_all(exp.Select):
        for column in select.expressions:
            named = isinstance(column, (exp.Alias, exp.Column, exp.Star))
            if not named and any(_sized(node) for node in column.find_all(exp.Func)):
                column.replace(exp.alias_(column.copy(), column.sql(dialect="duckdb"), quoted=True))


def _bounded(node: exp.Func, cap: int) -> None:
    name = node.sql_name().lower() if not isinstance(node, exp.Anonymous) else node.name.lower()
    args = [a for a in node.args.get("expressions") or []]
    if isinstance(node, exp.GenerateSeries):
        _bounded_series(node, cap)
    elif isinstance(node, exp.Repeat):
        size = exp.Mul(this=_p(node.args["times"]), expression=_length(node.this))
        node.set("times", _guard(node.args["times"], size, cap, "repeat"))
    elif isinstance(node, exp.Pad):
        pad = "lpad" if node.args.get("is_left") else "rpad"
        node.set("expression", _guard(node.args["expression"], node.args["expression"], cap, pad))
    elif name in ("list_resize", "array_resize") and len(args) >= 2:
        args[1].replace(_guard(args[1], _elements(args[1]), cap, name))
    elif name == "bar" and len(args) >= 4:
        args[3].replace(_guard(args[3], args[3], cap, name))
    elif name == "equi_width_bins" and len(args) >= 3:
        args[2].replace(_guard(args[2], _elements(args[2]), cap, name))
    elif name in ("printf", "format", "sprintf"):
        _check_format(node, cap)
    return None


def _bounded_series(node: exp.GenerateSeries, cap: int) -> None:
    """``range(a, b, step)`` as a list: ``b`` may lie at most ``cap`` bytes of elements
    past ``a``. Written with ``+``, ``*`` and comparisons only, so it holds for numbers
    and for timestamps with an interval step alike."""
    start, step = _p(node.args["start"]), _p(node.args.get("step") or exp.Literal.number(1))
    end = node.args["end"]
    furthest = exp.Add(
        this=start,
        expression=exp.Mul(this=step, expression=exp.Literal.number(cap // ELEMENT_BYTES)),
    )
    ascending = exp.GT(
        this=exp.Add(this=start.copy(), expression=step.copy()), expression=start.copy()
    )
    past = exp.Case(
        ifs=[exp.If(this=ascending, true=exp.GT(this=_p(end), expression=furthest))],
        default=exp.LT(this=_p(end), expression=furthest.copy()),
    )
    name = "range" if node.args.get("is_end_exclusive") else "generate_series"
    node.set("end", _guard(end, past, 0, name, reported=cap))


def _elements(count: exp.Expr) -> exp.Expr:
    return exp.Mul(this=_p(count), expression=exp.Literal.number(ELEMENT_BYTES))


def _guard(
    value: exp.Expr, size: exp.Expr, cap: int, name: str, reported: int | None = None
) -> exp.Expr:
    """``CASE WHEN size > cap THEN error(...) ELSE value END`` (``size`` alone when
    ``cap`` is 0: a condition already)."""
    message = f"{VALUE_MARKER}:{name}:{reported or cap}"
    too_big = exp.GT(this=_p(size), expression=exp.Literal.number(cap)) if cap else size
    error = exp.Anonymous(this="error", expressions=[exp.Literal.string(message)])
    return exp.Case(ifs=[exp.If(this=too_big, true=error)], default=_p(value))


def _length(value: exp.Expr) -> exp.Expr:
    # length() takes text and lists; a BLOB is measured as its text form
    as_text = exp.Cast(this=_p(value), to=exp.DataType.build("VARCHAR"))
    return exp.Anonymous(this="length", expressions=[as_text])


def _p(value: exp.Expr) -> exp.Expr:
    return exp.Paren(this=value.copy())


def _check_format(node: exp.Func, cap: int) -> None:
    template = node.this if isinstance(node, exp.Format) else (node.expressions or [None])[0]
    if not isinstance(template, exp.Literal) or not template.is_string:
        raise QueryError(
            f"{node.sql_name().lower()}() needs a literal format string here",
            code="query_too_large",
        )
    text = template.this
    specs = re.findall(r"%[-+ #0']*(\d*)(?:\.(\d+))?", text)  # printf: width and precision
    specs += [
        (w, "")
        for spec in re.findall(r"\{[^{}]*?:([^{}]*)\}", text)
        for w in re.findall(r"\d+", spec)
    ]
    widths = [int(w) for pair in specs for w in pair if w]
    if widths and max(widths) > cap:
        raise QueryError(
            f"a width in the format string is over {cap:,} (setting query_max_value_bytes)",
            code="query_too_large",
        )


def value_too_large(message: str) -> QueryError | None:
    """The ``query_too_large`` error for a DuckDB error raised by a ``bound_values`` guard."""
    found = re.search(VALUE_MARKER + r":(\w+):(\d+)", message)
    if found is None:
        return None
    return QueryError(
        f"{found.group(1)}() would build one value over {int(found.group(2)):,} bytes "
        "(setting query_max_value_bytes); ask for a smaller size, or generate rows with "
        "FROM range(...) instead of a list",
        code="query_too_large",
        function=found.group(1),
    )
