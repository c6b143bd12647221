"""Hostile SQL over another tenant's table names and the store's bookkeeping tables.

A Hypothesis strategy shared by the in-process property test and the HTTP test.
"""

from __future__ import annotations

import unicodedata

from hypothesis import strategies as st

# Names a hostile tenant might try: the bank's tables by their logical and former
# physical names, the bookkeeping tables, and qualified forms.
TARGETS = [
    "ledger", "quarantine__ledger", "t_bank__ledger", "t_bank__quarantine__ledger",
    "_hw_tables", "_hw_consumers", "_hw.tables", "_hw.consumers", "main._hw_tables",
    "bank.main.ledger", "bank.ledger", "main.ledger", "bank._hw.consumers",
    "information_schema.tables", "pg_catalog.pg_tables", "duckdb_tables",
]  # fmt: skip
LOOKALIKES = {
    "k": ["\u212a", "K"],  # KELVIN SIGN folds to k in Python, not in DuckDB
    "s": ["\u017f", "S"],  # LATIN SMALL LETTER LONG S
    "a": ["\uff41", "\u0430", "A"],  # FULLWIDTH a, CYRILLIC a
    "e": ["\u0435", "E"],  # CYRILLIC ie
    "l": ["\u217c", "L"],  # SMALL ROMAN NUMERAL FIFTY
    "_": ["\uff3f"],  # FULLWIDTH LOW LINE
}


@st.composite
def spelled(draw: st.DrawFn, name: str) -> str:
    """``name`` with random case, look-alike letters, normal forms and quoting."""
    out = []
    for ch in name:
        choice = draw(st.sampled_from(["keep", "keep", "keep", "upper", "lookalike"]))
        if choice == "upper":
            out.append(ch.upper())
        elif choice == "lookalike" and ch.lower() in LOOKALIKES:
            out.append(draw(st.sampled_from(LOOKALIKES[ch.lower()])))
        else:
            out.append(ch)
    text = unicodedata.normalize(
        draw(st.sampled_from(["NFC", "NFD", "NFKC", "NFKD"])), "".join(out)
    )
    if "." in text or draw(st.booleans()) is False:
        return text
    return '"' + text.replace('"', '""') + '"'


def _shapes(target: str, cte: str) -> list[str]:
    shadowing = [
        f"WITH RECURSIVE {cte} AS (SELECT * FROM {target}) SELECT * FROM {target}",
        f"WITH {cte} AS (SELECT 1 AS x) SELECT * FROM {target}",
    ]
    return shadowing * 4 + [
        f"SELECT * FROM {target}",
        f"WITH {cte} AS (SELECT * FROM {target}) SELECT * FROM {cte}",
        f"WITH RECURSIVE {cte} AS (SELECT * FROM {target} UNION ALL SELECT * FROM {cte} WHERE false) SELECT * FROM {cte}",
        f"SELECT * FROM notes, (SELECT * FROM {target}) s",
        f"SELECT note FROM notes UNION ALL SELECT CAST(x AS VARCHAR) FROM (SELECT * FROM {target}) AS t(x)",
        f"SELECT * FROM (WITH {cte} AS (SELECT 1) SELECT 1) q, {target}",
        f"SELECT (SELECT count(*) FROM {target}) AS n FROM notes",
        f"SELECT * FROM notes WHERE EXISTS (SELECT * FROM {target})",
        f"WITH a AS (SELECT * FROM notes), {cte} AS (SELECT * FROM a) SELECT * FROM {target}",
        f"FROM {target}",
    ]  # fmt: skip


@st.composite
def hostile_queries(draw: st.DrawFn) -> str:
    target = draw(st.sampled_from(TARGETS))
    spelled_target = target if "." in target else draw(spelled(target))
    base = target.split(".")[-1]
    cte = draw(
        st.sampled_from([spelled_target, spelled_target, "notes"])
        | spelled(base)
        | spelled("ledger")
    )
    return draw(st.sampled_from(_shapes(spelled_target, cte)))
