from pathlib import Path

import pytest

from headwater.catalog.sqlite import Catalog, PipelineRecord
from headwater.errors import NotFound
from headwater.model.schema import Field, StreamSchema


def test_keys_tenants_streams_pipelines(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "c.sqlite")
    assert cat.ensure_tenant("a", 1) and not cat.ensure_tenant("a", 2)
    secret, key = cat.create_key("a", "writer", 5, "w")
    assert cat.key_by_secret(secret) == key
    assert secret.encode() not in (tmp_path / "c.sqlite").read_bytes()
    cat.revoke_key("a", key.id, 9)
    revoked = cat.key_by_secret(secret)
    assert revoked is not None and revoked.revoked_ms == 9
    with pytest.raises(NotFound):
        cat.revoke_key("a", key.id, 10)
    with pytest.raises(NotFound):
        cat.create_key("nope", "admin", 1)
    s1 = StreamSchema(name="s", fields=[Field("x", "int")])
    cat.add_stream_version("a", s1, 1)
    cat.add_stream_version(
        "a", StreamSchema(name="s", fields=[Field("x", "int"), Field("y", "int")], version=2), 2
    )
    assert [v.version for v in cat.stream_versions("a", "s")] == [1, 2]
    assert [(t, s.version) for t, s in cat.all_streams()] == [("a", 2)]
    cat.put_pipeline(PipelineRecord("a", "p", "SQL", "running", None, 1))
    cat.set_pipeline_status("a", "p", "failed", "boom")
    assert cat.pipelines("a")[0].reason == "boom"
    cat.close()
    again = Catalog(tmp_path / "c.sqlite")
    assert again.tenants() == ["a"] and again.pipelines()[0].status == "failed"
