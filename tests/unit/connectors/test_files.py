"""File readers: chunks cut at line ends, positions to resume from, directory listing."""

import gzip
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from headwater.catalog.sqlite import SourceRecord
from headwater.connectors.sources.files import DONE, DirectorySource, FileReader
from headwater.connectors.sources.ports import Chunk, End
from headwater.errors import BadRequest


def chunks(reader: FileReader) -> list[Chunk]:
    out = []
    while not isinstance(c := reader.read(0), End):
        assert c is not None
        out.append(c)
    reader.close()
    return out


@pytest.mark.parametrize("gz", [False, True])
def test_text_chunks_end_at_line_ends_and_resume_exactly(tmp_path: Path, gz: bool) -> None:
    lines = [b'{"seq": %d, "pad": "%s"}\n' % (i, b"x" * (i % 50)) for i in range(3000)]
    path = tmp_path / ("f.ndjson.gz" if gz else "f.ndjson")
    path.write_bytes(gzip.compress(b"".join(lines)) if gz else b"".join(lines))
    fmt = "ndjson+gzip" if gz else "ndjson"
    got = chunks(FileReader(path, fmt, "p", None, chunk_bytes=4096))
    assert len(got) > 10 and got[-1].position == DONE
    assert b"".join(c.data for c in got) == b"".join(lines)  # type: ignore[misc]
    assert all(c.fmt == "ndjson" for c in got)
    middle = got[5].position  # resume after the sixth chunk
    rest = chunks(FileReader(path, fmt, "p", middle, chunk_bytes=4096))
    assert b"".join(c.data for c in got[:6] + rest) == b"".join(lines)  # type: ignore[misc]


def test_csv_chunks_repeat_the_header(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(b"a,b\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(2000)))
    got = chunks(FileReader(path, "csv", "p", None, chunk_bytes=2048))
    assert len(got) > 3 and all(isinstance(c.data, bytes) for c in got)
    assert all(c.data.startswith(b"a,b\n") for c in got)  # type: ignore[union-attr]
    rows = [line for c in got for line in c.data.splitlines()[1:]]  # type: ignore[union-attr]
    assert rows == [b"%d,%d" % (i, i) for i in range(2000)]


def test_parquet_goes_by_row_group(tmp_path: Path) -> None:
    path = tmp_path / "f.parquet"
    pq.write_table(pa.table({"seq": list(range(250))}), path, row_group_size=100)
    got = chunks(FileReader(path, "parquet", "p", None))
    assert [(c.position, c.data.num_rows, c.lag) for c in got] == [  # type: ignore[union-attr]
        ("1", 100, 150), ("2", 100, 50), (DONE, 50, 0),
    ]  # fmt: skip
    assert [c.data.num_rows for c in chunks(FileReader(path, "parquet", "p", "2"))] == [50]  # type: ignore[union-attr]
    assert chunks(FileReader(path, "parquet", "p", DONE)) == []


def test_a_directory_lists_new_files_once_and_only_inside_its_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "in" / "sub").mkdir(parents=True)
    (root / "in" / "sub" / "a.csv").write_bytes(b"x\n1\n")
    (root / "in" / "b.csv").write_bytes(b"x\n2\n")
    (root / "in" / ".hidden.csv").write_bytes(b"x\n3\n")
    (tmp_path / "secret.csv").write_bytes(b"x\n4\n")
    (root / "in" / "link.csv").symlink_to(tmp_path / "secret.csv")
    config = {"path": str(root / "in"), "pattern": "**/*.csv", "settle_ms": 0}
    src = DirectorySource(SourceRecord("t", "s", "file", "st", config, "running", 1), root)
    parts = src.partitions({})
    assert sorted(p.split("|")[0] for p in parts) == ["b.csv", "sub/a.csv"]
    done = {parts[0]: (DONE, 1)}
    assert src.partitions(done) == parts[1:]
    first = chunks(src.open(parts[1], None))  # type: ignore[arg-type]
    assert first[0].data in (b"x\n1\n", b"x\n2\n")
    outside = {"path": str(tmp_path), "settle_ms": 0}
    with pytest.raises(BadRequest, match="file_source_root"):
        DirectorySource(SourceRecord("t", "s", "file", "st", outside, "running", 1), root)
