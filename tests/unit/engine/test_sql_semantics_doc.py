"""The table of DuckDB semantics in docs/sql.md says what DuckDB really answers."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest

from headwater.engine.connection import connect_duckdb

DOC = Path(__file__).resolve().parents[3] / "docs" / "sql.md"
SECTION = DOC.read_text().split("## Expressions: DuckDB semantics")[1].split("\n## ")[0]
CODE = re.compile(r"`((?:[^`\\]|\\.)+)`")


def rows() -> list[tuple[str, str | None, str, str]]:
    """(expression, its answer or None for an error, the fix, the fix's answer)."""
    out = []
    for line in SECTION.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        code = [[m.replace("\\|", "|") for m in CODE.findall(c)] for c in cells]
        answer = code[1][0] if code[1] else None
        out.append((code[0][0], answer, code[2][0], code[3][0]))
    return out


ROWS = rows()


def test_the_table_is_there() -> None:
    assert len(ROWS) >= 15
    assert any(expr.startswith("regexp_extract") for expr, *_ in ROWS)


@pytest.mark.parametrize(("expr", "answer", "fix", "fixed"), ROWS, ids=[r[0] for r in ROWS])
def test_duckdb_answers_as_documented(expr: str, answer: str | None, fix: str, fixed: str) -> None:
    con = connect_duckdb()
    if answer is None:
        with pytest.raises(duckdb.Error):
            con.sql(f"SELECT {expr}").fetchall()
    else:
        same = con.sql(f"SELECT ({expr}) IS NOT DISTINCT FROM ({answer})").fetchall()
        assert same == [(True,)], (expr, con.sql(f"SELECT {expr}").fetchall())
    same = con.sql(f"SELECT ({fix}) IS NOT DISTINCT FROM ({fixed})").fetchall()
    assert same == [(True,)], (fix, con.sql(f"SELECT {fix}").fetchall())
