import pytest

from headwater.errors import IncompatibleSchema, InvalidSchema
from headwater.model.schema import (
    Field,
    StreamSchema,
    check_evolution,
    check_schema,
    schema_from_dict,
)

BASE = StreamSchema(
    name="s",
    fields=[Field("id", "string", required=True), Field("ts", "timestamp"), Field("v", "int")],
    event_time="ts",
    id="id",
)


def test_valid_schema_passes() -> None:
    check_schema(BASE)


@pytest.mark.parametrize(
    "data",
    [
        {"name": "1bad", "fields": [{"name": "a", "type": "int"}]},
        {"name": "s", "fields": []},
        {"name": "s", "fields": [{"name": "_x", "type": "int"}]},
        {"name": "s", "fields": [{"name": "a", "type": "int"}, {"name": "A", "type": "int"}]},
        {"name": "s", "fields": [{"name": "a", "type": "string", "min": 1}]},
        {"name": "s", "fields": [{"name": "a", "type": "int", "min": 5, "max": 1}]},
        {"name": "s", "fields": [{"name": "a", "type": "string", "regex": "("}]},
        {"name": "s", "fields": [{"name": "a", "type": "int"}], "event_time": "a"},
        {"name": "s", "fields": [{"name": "a", "type": "int"}], "key": ["b"]},
        {"name": "s", "fields": [{"name": "a", "type": "float"}], "id": "a"},
        {"name": "s", "fields": [{"name": "a", "type": "int"}], "retention": "forever"},
    ],
)
def test_invalid_schemas_are_refused(data: dict[str, object]) -> None:
    with pytest.raises(InvalidSchema):
        check_schema(schema_from_dict(data))


def test_unknown_type_or_key_refused() -> None:
    with pytest.raises(InvalidSchema):
        schema_from_dict({"name": "s", "fields": [{"name": "a", "type": "decimal"}]})
    with pytest.raises(InvalidSchema):
        schema_from_dict({"name": "s", "fields": [{"name": "a", "type": "int", "bogus": 1}]})


def test_compatible_changes() -> None:
    new = StreamSchema(name="s", fields=[*BASE.fields[:2], Field("v", "float"), Field("extra", "json")],
                       event_time="ts", id="id")  # fmt: skip
    changes = check_evolution(BASE, new)
    assert any("widened" in c for c in changes) and any("extra" in c for c in changes)


@pytest.mark.parametrize(
    "fields",
    [
        [Field("id", "string", required=True), Field("ts", "timestamp")],  # removed v
        [
            Field("id", "string", required=True),
            Field("ts", "timestamp"),
            Field("v", "string"),
            Field("n", "int", required=True),
        ],
        [Field("id", "string", required=True), Field("ts", "timestamp"), Field("v", "bool")],
        [
            Field("id", "string", required=True),
            Field("ts", "timestamp"),
            Field("v", "int", required=True),
        ],
    ],
)
def test_incompatible_changes_refused_with_reasons(fields: list[Field]) -> None:
    with pytest.raises(IncompatibleSchema) as exc:
        check_evolution(BASE, StreamSchema(name="s", fields=fields, event_time="ts", id="id"))
    assert exc.value.details["problems"]
