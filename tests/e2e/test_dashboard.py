"""The dashboard in a real browser (Chromium) against a real ``headwater serve``.

Each test signs in, watches live elements change without a reload, and saves a
screenshot of the page to ``test-artifacts/``.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import time
from collections.abc import Callable
from typing import TypeVar

import httpx
import pytest
from browser import browser, page, screenshot, sign_in
from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from serverproc import READINGS, Server

__all__ = ["browser", "page"]  # fixtures, used by name

READINGS_FIELDS: list[dict[str, object]] = READINGS["fields"]  # type: ignore[assignment]

pytestmark = pytest.mark.slow

_seq = itertools.count()
T = TypeVar("T")


def make_stream(c: httpx.Client) -> str:
    name = f"ui_{next(_seq)}"
    r = c.post("/v1/streams", json={**READINGS, "name": name})
    assert r.status_code == 201, r.text
    return name


def ev(i: int, **over: object) -> dict[str, object]:
    return {"device_id": f"d{i % 3}", "ts": f"2026-11-21T10:{i // 60 % 60:02d}:{i % 60:02d}Z",
            "temperature": 20.0 + i % 10, "status": "ok", "event_id": f"e{i}", **over}  # fmt: skip


def post(c: httpx.Client, stream: str, events: list[dict[str, object]]) -> dict[str, object]:
    r = c.post(f"/v1/streams/{stream}/events", json=events)
    assert r.status_code == 200, r.text
    out: dict[str, object] = r.json()
    return out


def mark_page(page: Page) -> None:
    """Tag the loaded document; ``assert_not_reloaded`` fails if it was replaced."""
    page.evaluate("window.__loaded_once = true")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__loaded_once === true"), "the page reloaded"


def test_sign_in_refuses_a_bad_key_and_signs_out(server: Server, page: Page) -> None:
    page.goto(server.url + "/")
    page.get_by_label("API key").fill("not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-message")).to_contain_text("unknown API key")
    screenshot(page, "signin")
    sign_in(page, server)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('headwater.key')") is None


def test_a_revoked_key_goes_back_to_sign_in_with_the_reason(server: Server, page: Page) -> None:
    with server.client() as c:
        created = c.post("/v1/keys", json={"role": "reader", "name": "ui-test"}).json()
        sign_in(page, server, key=created["key"])
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        assert c.delete(f"/v1/keys/{created['id']}").status_code == 200
    expect(page.locator("#signin-message")).to_contain_text("revoked")
    assert page.evaluate("sessionStorage.getItem('headwater.key')") is None


def test_overview_shows_streams_health_and_live_ingest(server: Server, page: Page) -> None:
    with server.client() as c:
        name = make_stream(c)
        post(c, name, [ev(i) for i in range(5)])
        sign_in(page, server)
        row = page.get_by_test_id(f"stream-{name}")
        expect(row.locator(".total")).to_have_text("5")
        for component in ("process", "data_dir", "log", "store", "materializer"):
            expect(page.get_by_test_id(f"check-{component}").locator(".dot.ok")).to_be_visible()
        mark_page(page)
        for k in range(4):
            post(c, name, [ev(i) for i in range(5 + 25 * k, 30 + 25 * k)])
            time.sleep(0.4)
        expect(row.locator(".total")).to_have_text("105")
        expect(row.locator(".rate")).to_have_text(re.compile(r"^[1-9][\d.,]*/s$"))
        assert int(row.locator("svg.spark").get_attribute("data-points") or 0) >= 2
        # a sparkline breaks where samples are missing (a pause, a failed poll), never
        # drawing a line across the gap
        segments = page.evaluate(
            """async () => {
              const { sparkline } = await import("/ui/js/charts.js");
              const xs = [0, 1, 2, 3, 10, 11, 12], ys = [1, 2, 3, 2, 5, 4, NaN];
              const a = sparkline(null, ys, { xs });
              const b = sparkline(null, [1, 2, 3], { xs: [0, 1, 2] });
              return [a.dataset.segments, a.dataset.points, b.dataset.segments];
            }"""
        )
        assert segments == ["2", "6", "1"]
        assert_not_reloaded(page)
        screenshot(page, "overview")
        page.emulate_media(color_scheme="dark")
        screenshot(page, "overview-dark")


def test_stream_page_schema_live_tail_and_quarantine(server: Server, page: Page) -> None:
    with server.client() as c:
        name = make_stream(c)
        out = post(c, name, [ev(0), ev(1), ev(2, temperature=999), ev(3, status="boom")])
        assert out["accepted"] == 2 and out["rejected"] == 2
        sign_in(page, server, hash_=f"#/streams/{name}")
        expect(page.get_by_test_id("schema")).to_contain_text("temperature")
        tail = page.get_by_test_id("tail").locator("tbody tr")
        expect(tail).to_have_count(2)
        quarantine = page.get_by_test_id("quarantine")
        expect(quarantine.locator("tbody tr")).to_have_count(2)
        expect(quarantine).to_contain_text("above_max")
        expect(quarantine).to_contain_text("temperature is 999.0, above the maximum 150")
        expect(quarantine).to_contain_text("not_in_enum")
        mark_page(page)

        post(c, name, [ev(4), ev(5, temperature=-99)])  # both follow without a reload
        expect(tail).to_have_count(3)
        expect(page.get_by_test_id("tail").locator("tr.new")).to_have_count(1)
        expect(quarantine.locator("tbody tr")).to_have_count(3, timeout=10_000)
        assert_not_reloaded(page)
        screenshot(page, "stream")


def test_quarantine_replay_per_row_and_per_code(server: Server, page: Page) -> None:
    with server.client() as c:
        name = make_stream(c)
        post(c, name, [ev(0), ev(2, temperature=999), ev(3, status="boom")])
        sign_in(page, server, hash_=f"#/streams/{name}")
        quarantine = page.get_by_test_id("quarantine")
        expect(quarantine.locator("tbody tr")).to_have_count(2)
        tail = page.get_by_test_id("tail").locator("tbody tr")
        expect(tail).to_have_count(1)

        # Fix the schema, then replay the row it used to refuse.
        fields = [{**f, "max": 1000} if f["name"] == "temperature" else f for f in READINGS_FIELDS]
        r = c.put(f"/v1/streams/{name}", json={**READINGS, "name": name, "fields": fields})
        assert r.status_code == 200, r.text
        quarantine.locator("tr", has_text="above_max").get_by_role("button", name="Replay").click(
            timeout=3000
        )
        answer = page.get_by_test_id("replay-answer")
        expect(answer).to_contain_text("1 row(s), 1 accepted, 0 rejected again")
        expect(tail).to_have_count(2)

        # Replay every row of a code: still refused, and the answer says so.
        page.get_by_label("Replay every row with code").select_option("not_in_enum")
        page.get_by_test_id("replay-code").click()
        expect(answer).to_contain_text(
            "Replayed code not_in_enum: 1 row(s), 0 accepted, 1 rejected again"
        )
        screenshot(page, "stream-replayed")


def test_query_page_shows_table_chart_and_errors(server: Server, page: Page) -> None:
    with server.client() as c:
        name = make_stream(c)
        post(c, name, [ev(i) for i in range(30)])
    sign_in(page, server, hash_="#/query")
    sql = page.get_by_test_id("sql")
    sql.fill(
        f"SELECT device_id, count(*) AS n, avg(temperature) AS avg_t FROM {name} GROUP BY 1 ORDER BY 1"
    )
    page.get_by_test_id("run").click()
    result = page.get_by_test_id("result")
    expect(result.locator("thead th")).to_have_text(["device_id", "n", "avg_t"])
    expect(result.locator("tbody tr")).to_have_count(3)
    expect(result.locator("tbody tr").first).to_contain_text("d0")
    expect(page.get_by_test_id("query-status")).to_contain_text("3 row(s)")
    expect(page.get_by_label("chart kind")).to_have_value("bar")  # counts by device
    expect(page.get_by_label("chart x")).to_have_value("device_id")
    expect(page.locator(".legend")).to_have_text("n")
    screenshot(page, "query")

    sql.fill("SELECT * FROM no_such_table")
    page.get_by_test_id("run").click()
    expect(result.locator(".alert code")).to_have_text("unknown_table")
    expect(result.locator(".alert")).to_contain_text("no_such_table")

    sql.fill("SELECT *\nFORM no_such_table")  # the server says where: marked in the editor
    page.get_by_test_id("run").click()
    expect(result.locator(".alert code")).to_have_text("syntax_error")
    message = result.locator(".alert").inner_text()
    where = re.search(r"line (\d+), column (\d+)", message)
    assert where is not None, message
    editor = page.get_by_test_id("sql-editor")
    expect(editor).to_have_attribute("data-error-line", where[1])
    expect(editor).to_have_attribute("data-error-column", where[2])
    expect(editor.locator(".line-err")).to_have_text("FORM no_such_table")
    screenshot(page, "query-error")


def test_pipeline_page_chart_follows_the_result_table_live(server: Server, page: Page) -> None:
    with server.client() as c:
        name = make_stream(c)
        pipe = f"{name}_minute"
        sql = (f"CREATE PIPELINE {pipe} AS SELECT device_id, window_start, window_end, count(*) AS n, "
               f"avg(temperature) AS avg_t FROM TUMBLE({name}, ts, INTERVAL '1 minute') "
               f"GROUP BY device_id, window_start, window_end WITH (emit = 'changes')")  # fmt: skip
        r = c.post("/v1/pipelines", json={"sql": sql})
        assert r.status_code == 201, r.text
        post(c, name, [ev(i) for i in range(60)])
        sign_in(page, server, hash_=f"#/pipelines/{pipe}")
        expect(page.get_by_test_id("pipeline-sql")).to_contain_text("TUMBLE")
        expect(page.get_by_test_id("pipeline-status")).to_have_text("running")
        expect(page.get_by_test_id("live-mode")).to_have_text("live (server-sent events)")
        expect(page.get_by_test_id("x-column")).to_have_value("window_start")
        count = page.get_by_test_id("update-count")
        expect(count).not_to_have_attribute("data-updates", "0")
        mark_page(page)

        before = int(count.get_attribute("data-updates") or 0)
        draws = int(page.get_by_test_id("result-chart").get_attribute("data-draws") or 0)
        for k in range(1, 4):  # minutes 10:01 .. 10:03, new windows arrive over SSE
            post(c, name, [ev(i) for i in range(60 * k, 60 * k + 60)])
        page.wait_for_function(
            "n => Number(document.querySelector('[data-testid=update-count]').dataset.updates) >= n",
            arg=before + 9,
        )
        expect(page.get_by_test_id("live-mode")).to_have_text("live (server-sent events)")
        assert int(page.get_by_test_id("result-chart").get_attribute("data-draws") or 0) > draws
        expect(page.get_by_test_id("result-legend")).to_contain_text("d0")
        assert_not_reloaded(page)
        screenshot(page, "pipeline")

        page.get_by_role("button", name="Pause").click()
        expect(page.get_by_test_id("pipeline-status")).to_have_text("paused")
        page.get_by_role("button", name="Resume").click()
        expect(page.get_by_test_id("pipeline-status")).to_have_text("running")


def test_pipeline_page_stays_responsive_under_a_stream_of_updates(
    server: Server, page: Page
) -> None:
    """About 10k row changes a minute arrive over SSE; frames keep coming, draws are batched."""
    with server.client() as c:
        name = make_stream(c)
        pipe = f"{name}_per_device"
        sql = f"CREATE PIPELINE {pipe} AS SELECT device_id, count(*) AS n FROM {name} GROUP BY device_id WITH (emit = 'changes')"
        assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201
        sign_in(page, server, hash_=f"#/pipelines/{pipe}")
        expect(page.get_by_test_id("live-mode")).to_have_text("live (server-sent events)")
        page.evaluate("""() => {
            window.__gaps = [];
            let last = performance.now();
            const tick = (t) => { window.__gaps.push(t - last); last = t; if (!window.__stop) requestAnimationFrame(tick); };
            requestAnimationFrame(tick);
        }""")
        # 60 batches of 50 events with 50 distinct devices over ~6 s: 3,000 changed rows.
        for k in range(60):
            events = [ev(0, device_id=f"dev{i}", event_id=f"x{k}_{i}") for i in range(50)]
            post(c, name, events)
            time.sleep(0.1)
        page.wait_for_function(
            "() => Number(document.querySelector('[data-testid=update-count]').dataset.updates) >= 2500"
        )
        gaps = page.evaluate("() => { window.__stop = true; return window.__gaps; }")
        updates = int(page.get_by_test_id("update-count").get_attribute("data-updates") or 0)
        draws = int(page.get_by_test_id("result-chart").get_attribute("data-draws") or 0)
        assert draws < updates / 10, (draws, updates)
        assert max(gaps) < 1000, f"a frame took {max(gaps):.0f} ms"
        screenshot(page, "pipeline-load")


def wait_until(fn: Callable[[], T | None], what: str, timeout_s: float = 20.0) -> T:
    """``fn()`` once it answers something truthy; fail after ``timeout_s`` saying ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        out = fn()
        if out:
            return out
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def table_rows(c: httpx.Client, table: str, count: int) -> list[dict[str, object]] | None:
    r = c.get(f"/v1/tables/{table}/rows", params={"limit": 1000})
    rows: list[dict[str, object]] = r.json()["rows"] if r.status_code == 200 else []
    return rows if len(rows) == count else None


def test_create_replace_and_drop_a_pipeline_from_the_ui(server: Server, page: Page) -> None:
    with server.client() as c:
        name = make_stream(c)
        post(c, name, [ev(i) for i in range(30)])  # temperatures 20 .. 29, three of each
        pipe = f"{name}_hot"
        sign_in(page, server)
        page.get_by_test_id("new-pipeline").click()
        sql = page.get_by_test_id("pipeline-sql-input")
        expect(sql).to_have_value(
            re.compile(r"^CREATE PIPELINE \w+ AS")
        )  # a template to start from
        sql.fill(
            f"CREATE PIPELINE {pipe} AS\nSELECT device_id, temperature\nFROM {name}\nWHERE temperature >= 25"
        )
        editor = page.get_by_test_id("pipeline-sql-input-editor")
        expect(editor.locator(".tok-kw").first).to_have_text("CREATE")  # highlighted as typed
        expect(editor.locator(".tok-num")).to_have_text(["25"])
        page.get_by_test_id("create-pipeline").click()
        expect(page).to_have_url(re.compile(rf"#/pipelines/{pipe}$"))
        expect(page.get_by_test_id("pipeline-status")).to_have_text("running")
        wait_until(lambda: table_rows(c, pipe, 15), "the created pipeline's 15 rows")
        screenshot(page, "pipeline-created")

        page.get_by_test_id("edit-sql").click()
        expect(sql).to_have_value(re.compile("temperature >= 25"))  # starts from the current SQL
        sql.fill(
            f"CREATE PIPELINE {pipe} AS\nSELECT device_id, temperature * 10 AS t10\nFROM {name}\nWHERE temperature >= 28"
        )
        page.get_by_test_id("replace").click()
        expect(page.get_by_test_id("replace-confirm")).to_contain_text("state and its tables")
        screenshot(page, "pipeline-replace-confirm")
        page.get_by_test_id("confirm-replace").click()
        expect(page.get_by_test_id("replaced")).to_contain_text("state and tables reset")
        expect(page.get_by_test_id("pipeline-sql")).to_contain_text("t10")
        rows = wait_until(lambda: table_rows(c, pipe, 6), "the replaced pipeline's 6 rows")
        assert sorted(r["t10"] for r in rows) == [280.0] * 3 + [290.0] * 3  # type: ignore[type-var]
        assert c.get(f"/v1/pipelines/{pipe}").json()["sql"].endswith(">= 28")

        page.get_by_test_id("drop").click()
        expect(page.get_by_test_id("drop-confirm")).to_contain_text(f"Drop pipeline {pipe}?")
        page.get_by_test_id("drop-tables").check()
        page.get_by_test_id("confirm-drop").click()
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        assert c.get(f"/v1/pipelines/{pipe}").status_code == 404
        assert c.get(f"/v1/tables/{pipe}/rows").status_code == 404
        expect(page.get_by_test_id(f"pipeline-{pipe}")).to_have_count(0)


def test_a_pipeline_sql_error_is_marked_at_the_servers_line_and_column(
    server: Server, page: Page
) -> None:
    with server.client() as c:
        name = make_stream(c)
        bad = f"CREATE PIPELINE {name}_bad AS\nSELECT device_id,\n  count(*) AS n\nFROM {name}\nGROUP BY device_id"
        answer = c.post("/v1/pipelines", json={"sql": bad})
        assert answer.status_code == 400
        where = re.search(
            r"line (\d+), column (\d+)", answer.json()["error"]["details"]["position"]
        )
        assert where is not None
        line, column = int(where[1]), int(where[2])
    sign_in(page, server, hash_="#/create/pipeline")
    sql = page.get_by_test_id("pipeline-sql-input")
    sql.fill(bad)
    page.get_by_test_id("create-pipeline").click()
    expect(page.get_by_test_id("pipeline-answer").locator(".alert code")).to_have_text(
        answer.json()["error"]["code"]
    )
    assert sql.input_value() == bad  # the example SQL, loaded late, never overwrote it
    editor = page.get_by_test_id("pipeline-sql-input-editor")
    expect(editor).to_have_attribute("data-error-line", str(line))
    expect(editor).to_have_attribute("data-error-column", str(column))
    expect(editor).to_contain_text(f"Error at line {line}, column {column}")
    bad_line = bad.split("\n")[line - 1]
    expect(editor.locator(".line-err")).to_have_text(bad_line)
    token = re.match(r"\w+", bad_line[column - 1 :])
    assert token is not None
    expect(editor.locator(".tok-err")).to_have_text(token[0])
    offset = sum(len(x) + 1 for x in bad.split("\n")[: line - 1]) + column - 1
    assert sql.evaluate("el => el.selectionStart") == offset  # the cursor waits at the error
    screenshot(page, "pipeline-sql-error")
    sql.press("End")
    sql.press_sequentially(" ")  # editing clears the mark
    expect(editor).not_to_have_attribute("data-error-line", str(line))
    expect(editor.locator(".tok-err")).to_have_count(0)


def test_create_a_stream_from_the_ui(server: Server, page: Page) -> None:
    name = f"ui_form_{next(_seq)}"
    sign_in(page, server)
    page.get_by_test_id("new-stream").click()
    page.get_by_label("stream name").fill(name)
    rows = page.locator("tr.field-row")
    expect(rows).to_have_count(2)  # ts (timestamp, required) and value (float) to start from
    rows.nth(1).get_by_label("min").fill("0")
    rows.nth(1).get_by_label("max").fill("100")
    for field in ("device", "level", "_eid"):
        page.get_by_test_id("add-field").click()
        rows.last.get_by_label("field name").fill(field)
    rows.nth(2).get_by_label("required").check()
    rows.nth(3).get_by_label("allowed values").fill("low, high")
    page.get_by_label("event time field").select_option("ts")
    page.get_by_test_id("key-fields").get_by_label("device").check()
    page.get_by_label("id field").select_option("_eid")
    page.get_by_test_id("create-stream").click()
    refused = page.get_by_test_id("stream-answer").locator(".alert")
    expect(refused.locator("code")).to_have_text("invalid_schema")  # the server's reason, shown
    expect(refused).to_contain_text("field name '_eid' is not valid")
    screenshot(page, "stream-create-error")

    rows.nth(4).get_by_label("field name").fill("eid")
    page.get_by_label("id field").select_option("eid")
    expect(page.get_by_test_id("stream-json")).to_contain_text('"id": "eid"')
    page.get_by_test_id("create-stream").click()
    expect(page).to_have_url(re.compile(rf"#/streams/{name}$"))
    expect(page.get_by_test_id("schema")).to_contain_text("level")
    with server.client() as c:
        s = c.get(f"/v1/streams/{name}").json()
        assert s["event_time"] == "ts" and s["key"] == ["device"] and s["id"] == "eid"
        fields = {f["name"]: f for f in s["fields"]}
        assert fields["value"]["min"] == 0 and fields["value"]["max"] == 100
        assert fields["device"]["required"] is True and fields["level"]["enum"] == ["low", "high"]
        out = post(
            c, name, [{"ts": "2026-11-21T10:00:00Z", "value": 101, "device": "a", "eid": "1"}]
        )
        assert out["rejected"] == 1  # the constraint set in the form holds
    screenshot(page, "stream-created")


def test_quarantine_filter_and_replay_by_code_are_separate_labelled_tools(
    server: Server, page: Page
) -> None:
    with server.client() as c:
        name = make_stream(c)
        post(c, name, [ev(0), ev(1, temperature=999), ev(2, temperature=998), ev(3, status="boom")])
        sign_in(page, server, hash_=f"#/streams/{name}")
        quarantine = page.get_by_test_id("quarantine").locator("tbody tr")
        expect(quarantine).to_have_count(3)
        show = page.get_by_label("Show rows with code")
        expect(page.get_by_test_id("quarantine-filter-tool")).to_contain_text("changes nothing")
        expect(page.get_by_test_id("quarantine-replay-tool")).to_contain_text("validation again")

        show.select_option("not_in_enum")  # filtering only narrows the list
        expect(quarantine).to_have_count(1)
        expect(quarantine.first).to_contain_text("not_in_enum")
        expect(page.get_by_test_id("replay-answer")).to_be_empty()
        show.select_option("")
        expect(quarantine).to_have_count(3)
        assert len(c.get(f"/v1/streams/{name}/quarantine").json()["rows"]) == 3

        page.get_by_label("Replay every row with code").select_option("above_max")
        replay = page.get_by_test_id("replay-code")
        expect(replay).to_have_text("Replay every above_max row")  # says what it will do
        screenshot(page, "quarantine-tools")
        replay.click()
        expect(page.get_by_test_id("replay-answer")).to_contain_text(
            "Replayed code above_max: 2 row(s), 0 accepted, 2 rejected again"
        )


def test_stateless_pipeline_shows_a_dash_for_event_time_lag_with_the_reason(
    server: Server, page: Page
) -> None:
    with server.client() as c:
        name = make_stream(c)
        pipe = f"{name}_proj"
        sql = f"CREATE PIPELINE {pipe} AS SELECT device_id, temperature FROM {name}"
        assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201
        post(c, name, [ev(i) for i in range(5)])
        wait_until(lambda: table_rows(c, pipe, 5), "the pipeline's 5 rows")
        sign_in(page, server)
        lag = page.get_by_test_id(f"pipeline-{pipe}").get_by_test_id("event-time-lag")
        expect(lag).to_have_text("—")
        expect(lag).to_have_attribute(
            "title", re.compile("stateless pipeline .* no event-time lag")
        )
        page.get_by_role("link", name=pipe).click()
        fact = page.get_by_test_id("event-time-lag")
        expect(fact).to_have_text("—")
        expect(fact).to_have_attribute("title", re.compile("no watermark"))
        expect(page.get_by_test_id("no-lag")).to_contain_text("log lag")
        screenshot(page, "pipeline-stateless")


def at(minute: int, **over: object) -> dict[str, object]:
    return ev(0, ts=f"2026-11-21T10:{minute:02d}:00Z", event_id=f"m{minute}", **over)


def test_query_chart_breaks_lines_at_gaps_and_draws_categories_as_bars(
    server: Server, page: Page
) -> None:
    with server.client() as c:
        name = make_stream(c)
        events = [at(m, temperature=20.0 + m % 7) for m in [*range(10), *range(30, 40)]]
        events[5]["temperature"] = None  # 10:05 has no value
        post(c, name, events)
    sign_in(page, server, hash_="#/query")
    page.get_by_test_id("sql").fill(f"SELECT ts, temperature FROM {name} ORDER BY ts")
    page.get_by_test_id("run").click()
    chart = page.get_by_test_id("query-chart").locator(".chart")
    expect(chart).to_have_attribute("data-kind", "line")
    expect(chart).to_have_attribute("data-segments", "3")  # 10:00-10:04 | 10:06-10:09 | 10:30-10:39
    first = page.get_by_test_id("result").locator("tbody tr").first.locator("time")
    expect(first).to_have_text("2026-11-21 10:00:00Z")  # one format: ISO, UTC
    expect(first).to_have_attribute("title", re.compile(r"\(local time\)$"))
    screenshot(page, "query-gaps")

    page.get_by_test_id("sql").fill(
        f"SELECT status, count(*) AS n FROM {name} GROUP BY status ORDER BY status"
    )
    page.get_by_test_id("run").click()
    expect(page.get_by_test_id("query-status")).to_contain_text("1 row(s)")
    expect(chart).to_have_attribute("data-kind", "bar")
    expect(page.get_by_label("chart kind")).to_have_value("bar")


def test_pipeline_result_chart_breaks_each_series_at_missing_windows(
    server: Server, page: Page
) -> None:
    with server.client() as c:
        name = make_stream(c)
        pipe = f"{name}_gaps"
        sql = (f"CREATE PIPELINE {pipe} AS SELECT device_id, window_start, count(*) AS n "
               f"FROM TUMBLE({name}, ts, INTERVAL '1 minute') GROUP BY device_id, window_start "
               f"WITH (emit = 'changes')")  # fmt: skip
        assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201
        minutes = [0, 1, 2, 3, 20, 21, 22, 23]  # nothing from 10:04 to 10:19
        post(c, name, [ev(0, device_id=d, ts=f"2026-11-21T10:{m:02d}:00Z", event_id=f"{d}{m}")
                       for m in minutes for d in ("d0", "d1")])  # fmt: skip
        wait_until(lambda: table_rows(c, pipe, 16), "16 windows")
        sign_in(page, server, hash_=f"#/pipelines/{pipe}")
        chart = page.get_by_test_id("result-chart")
        expect(chart).to_have_attribute("data-kind", "line")
        expect(chart).to_have_attribute("data-segments", "2,2")  # one break per device
        screenshot(page, "pipeline-gaps")


def test_query_page_never_overflows_the_window(fresh_server: Server, page: Page) -> None:
    with fresh_server.client() as c:
        for i in range(30):
            r = c.post(
                "/v1/streams", json={**READINGS, "name": f"a_long_stream_name_for_chips_{i}"}
            )
            assert r.status_code == 201, r.text
        post(c, "a_long_stream_name_for_chips_0", [ev(i) for i in range(20)])
    sign_in(page, fresh_server, hash_="#/query")
    chips = page.get_by_test_id("tables").locator(".chip")
    expect(chips).to_have_count(30)
    page.get_by_test_id("sql").fill(
        "SELECT *, repeat('wide ', 40) AS w1, repeat('x', 300) AS w2, 1 AS c1, 2 AS c2, 3 AS c3, "
        "4 AS c4, 5 AS c5 FROM a_long_stream_name_for_chips_0"
    )
    page.get_by_test_id("run").click()
    expect(page.get_by_test_id("result").locator("tbody tr")).to_have_count(20)
    for width in (1360, 760):
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_function("w => window.innerWidth === w", arg=width)
        tops = chips.evaluate_all("els => new Set(els.map((e) => e.offsetTop)).size")
        assert tops > 1, "the table chips should wrap onto several lines"
        # the chart redraws for the new width on the next frame: wait for the layout to settle
        with contextlib.suppress(PlaywrightTimeout):
            page.wait_for_function(
                "() => document.documentElement.scrollWidth <= window.innerWidth", timeout=10_000
            )
        sizes = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert sizes[0] <= sizes[1], f"the page overflows the window: {sizes}"
        wrap = page.get_by_test_id("result").locator(".table-wrap")
        assert wrap.evaluate("el => el.scrollWidth > el.clientWidth")  # the table scrolls inside
        screenshot(page, f"query-overflow-{width}")


def test_the_overview_refreshes_its_pipelines_in_place_so_a_click_is_never_lost(
    server: Server, page: Page
) -> None:
    """The table is refreshed every 2 s; a link replaced mid-click would lose the click."""
    with server.client() as c:
        name = make_stream(c)
        pipe = f"{name}_kept"
        sql = f"CREATE PIPELINE {pipe} AS SELECT device_id, temperature FROM {name}"
        assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201
        post(c, name, [ev(i) for i in range(3)])
        wait_until(lambda: table_rows(c, pipe, 3), "the pipeline's 3 rows")
        sign_in(page, server)
        row = page.get_by_test_id(f"pipeline-{pipe}")
        expect(row).to_contain_text("3")
        link = row.get_by_role("link", name=pipe).element_handle()
        post(c, name, [ev(i, event_id=f"more-{i}") for i in range(3, 10)])
        expect(row.locator("td").nth(5)).to_have_text("10", timeout=20_000)  # rows in
        assert link.evaluate("a => a.isConnected")  # the same link, changed in place
        link.click()
        expect(page).to_have_url(re.compile(f"#/pipelines/{pipe}$"))
