"""The dashboard's Alerts page in a real browser (Chromium) against a real server: the
rules, what fires now, a rule's keys and history, and the snooze buttons."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from browser import browser, page, screenshot, sign_in
from playwright.sync_api import Page, expect

from alert_services import HttpStandIn, webhook_receiver
from serverproc import READINGS, Server

__all__ = ["browser", "page"]  # fixtures, used by name

pytestmark = pytest.mark.slow
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def hook() -> Iterator[HttpStandIn]:
    h = webhook_receiver(SECRET)
    yield h
    h.close()


def test_alerts_page_shows_rules_firing_keys_history_and_snoozes(
    tmp_path: Path, page: Page, hook: HttpStandIn
) -> None:
    srv = Server(tmp_path / "data", HEADWATER_ALERT_EVAL_INTERVAL_S="0.2").start()
    try:
        with srv.client() as c:
            assert c.post("/v1/streams", json=READINGS).status_code == 201
            for name, cond in (("too_hot", "temperature > 40"), ("too_cold", "temperature < -20")):
                rule = {"name": name, "from": "readings", "key": "device_id", "condition": cond,
                        "severity": "critical" if name == "too_hot" else "warning",
                        "summary": "$device_id is at $temperature",
                        "channels": [{"kind": "webhook", "url": hook.url, "secret": SECRET}]}  # fmt: skip
                assert c.post("/v1/alerts", json=rule).status_code == 201
            now = datetime.now(UTC).isoformat()
            events = [{"device_id": "dev-7", "ts": now, "temperature": 55.5},
                      {"device_id": "dev-8", "ts": now, "temperature": 20.0}]  # fmt: skip
            assert c.post("/v1/streams/readings/events", json=events).status_code == 200

            sign_in(page, srv)
            page.get_by_role("link", name="Alerts").click()
            expect(page.get_by_role("heading", name="Alerts")).to_be_visible()
            rules = page.get_by_test_id("alert-rules")
            expect(rules.locator("tr[data-rule]")).to_have_count(2)
            hot_row = rules.locator('tr[data-rule="too_hot"]')
            expect(hot_row.locator("td").nth(4)).to_have_text("1")  # firing, live
            firing = page.get_by_test_id("alerts-firing")
            expect(firing).to_contain_text("dev-7 is at 55.5")
            expect(firing).not_to_contain_text("dev-8")
            screenshot(page, "alerts")

            # snooze the whole rule from the list: the API says so, the page shows it
            hot_row.get_by_role("combobox").select_option(label="8 hours")
            hot_row.get_by_role("button", name="Snooze").click()
            expect(hot_row.get_by_test_id("snoozed")).to_contain_text("until")
            snoozed = c.get("/v1/alerts/too_hot").json()["snoozed"]
            assert len(snoozed) == 1 and snoozed[0]["key"] is None
            until = datetime.fromisoformat(snoozed[0]["until"])
            assert 7.9 * 3600 < (until - datetime.now(UTC)).total_seconds() <= 8 * 3600

            # one rule: its firing key, the history, a key's snooze
            hot_row.get_by_role("link", name="too_hot").click()
            expect(page.get_by_role("heading", name="too_hot")).to_be_visible()
            keys = page.get_by_test_id("alert-keys")
            key_row = keys.locator('tr[data-key="dev-7"]')
            expect(key_row).to_contain_text("firing")
            history = page.get_by_test_id("alert-history")
            expect(history).to_contain_text("fired")
            expect(history).to_contain_text("notified")  # the webhook took it
            key_row.get_by_role("button", name="Snooze key").click()
            expect(page.locator(".answer .alert")).to_have_count(0)
            keyed = [s for s in c.get("/v1/alerts/too_hot").json()["snoozed"] if s["key"]]
            assert [s["key"] for s in keyed] == ["dev-7"]

            # a new change shows up without a reload
            cool = {"device_id": "dev-7", "ts": datetime.now(UTC).isoformat(), "temperature": 10.0}
            assert c.post("/v1/streams/readings/events", json=cool).status_code in (200, 202)
            expect(keys).to_contain_text("No key is pending or firing.")
            expect(history).to_contain_text("resolved")
            screenshot(page, "alert-rule")
    finally:
        srv.stop()
