"""Which store tables an object occupies, and which names are the system's."""

from __future__ import annotations

import pytest

from headwater.errors import BadRequest, Conflict
from headwater.model.names import check_free, tables_of


@pytest.mark.parametrize(
    ("kind", "name", "tables"),
    [
        ("stream", "mine", ["mine", "quarantine__mine"]),
        ("pipeline", "p", ["p", "p_late", "p_errors"]),
        ("reference", "sites", ["sites"]),
        ("sink", "partner", ["partner_dlq"]),
    ],
)
def test_each_kind_occupies_its_tables(kind: str, name: str, tables: list[str]) -> None:
    assert tables_of(kind, name) == tables  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["quarantine__mine", "QUARANTINE__x", "_hw", "_hw_tables", "_x"])
def test_system_prefixes_are_reserved(name: str) -> None:
    with pytest.raises(BadRequest) as err:
        check_free("stream", name, set())
    assert err.value.code == "reserved_name"


@pytest.mark.parametrize(
    ("kind", "name", "taken"),
    [
        ("stream", "p_late", tables_of("pipeline", "p")),
        ("pipeline", "s", ["s_errors"]),  # a stream named s_errors exists
        ("stream", "Mine", tables_of("stream", "mine")),  # SQL ignores ASCII case
        ("sink", "x", ["X_DLQ"]),
        ("reference", "quarantine", ["quarantine"]),
    ],
)
def test_no_two_objects_share_a_table(kind: str, name: str, taken: list[str]) -> None:
    with pytest.raises(Conflict) as err:
        check_free(kind, name, taken)  # type: ignore[arg-type]
    assert err.value.code == "name_taken"


def test_names_that_share_nothing_are_free() -> None:
    check_free("pipeline", "minute", [*tables_of("stream", "readings"), "minute_late_x"])
