"""Support revokes a student's device in a real browser: Debian's chromium driven by Playwright
against the live server, the student's app on the other side of the same server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Browser, Page, expect, sync_playwright

from devices.models import AuditAction, AuthorizedDevice, DeviceAuditEntry
from memora.tests.support import support_group_ensure

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "support-pass-123"
REASON = "Tablet reported stolen by the parent"


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    # Playwright's sync API keeps its own event loop running in this thread, which Django takes
    # for an async context and refuses queries in. The loop only drives the browser; the test's
    # queries and the live server's requests are plain synchronous code (Playwright's documented
    # workaround for Django).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def agent() -> User:
    user = User.objects.create_user(username="agent_browser", password=PASSWORD, is_staff=True)
    user.groups.add(support_group_ensure())
    return user


def sign_in(page: Page, base: str, agent: User) -> None:
    page.goto(f"{base}/admin/")
    page.fill("#id_username", agent.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text(agent.username)


def test_support_revokes_a_device_with_a_reason_and_sees_the_audit(
    live_server: Any, page: Page, agent: User, student: Any
) -> None:
    tablet = student.on_device()
    assert tablet.login(device_name="Kitchen tablet", platform="android").status_code == 200
    assert tablet.get("/api/v1/session/").status_code == 200  # the warm path from here on
    base = live_server.url

    sign_in(page, base, agent)

    # Find the student by username.
    page.get_by_role("link", name="Students").first.click()
    page.fill("#searchbar", student.username)
    page.press("#searchbar", "Enter")
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    rows.get_by_role("link", name=student.username).click()
    expect(page.locator("body")).to_contain_text(tablet.device_id)

    # Open the student's devices, select the tablet, run revoke_devices.
    page.get_by_role("link", name="devices", exact=True).click()
    expect(page).to_have_url(re.compile(r"/admin/devices/authorizeddevice/\?player__id__exact="))
    row = page.locator("#result_list tbody tr", has_text=tablet.device_id)
    row.locator("input.action-select").check()
    page.select_option("select[name=action]", "revoke_devices")
    page.click("button[name=index]")

    # The intermediate form asks for a reason; an empty one is refused.
    expect(page.locator("h1")).to_have_text("Revoke devices")
    page.click("input[name=apply]")
    expect(page.locator(".errorlist")).to_be_visible()
    page.fill("input[name=reason]", REASON)
    page.click("input[name=apply]")
    expect(page.locator("ul.messagelist")).to_contain_text("Revoked 1 device(s)")
    expect(page.locator("#result_list tbody tr", has_text=tablet.device_id)).to_contain_text("blocked")

    # The tablet's session is refused on its next request; the slot is free again.
    refused = tablet.get("/api/v1/session/")
    assert refused.status_code == 401
    assert refused.json()["code"] == "device_revoked"
    device = AuthorizedDevice.objects.get(player_id=tablet.player_id, device_id=tablet.device_id)
    assert device.login_blocked
    entry = DeviceAuditEntry.objects.get(device=device, action=AuditAction.REVOKED)
    assert (entry.actor, entry.reason) == (agent, REASON)

    # The audit entry, on the student's page, names the agent and the reason.
    row.get_by_role("link", name=student.username).click()
    audit = page.locator("#device_audit-group tbody tr", has_text=REASON)
    expect(audit).to_contain_text("device revoked by support")
    expect(audit).to_contain_text(agent.username)


def test_support_acts_from_the_student_overview(live_server: Any, page: Page, agent: User, student: Any) -> None:
    """Search → the student's page → its overview → revoke the tablet there (with a reason) → the
    overview shows it struck, with who and why, and the audit entry; then allow it again there."""
    tablet = student.on_device()
    assert tablet.login(device_name="Kitchen tablet", platform="android").status_code == 200
    assert tablet.get("/api/v1/session/").status_code == 200
    base = live_server.url
    sign_in(page, base, agent)
    expect(page.get_by_role("link", name="View site")).to_have_attribute("href", "/api/docs/")

    # Find the student, open their page, and from it their overview.
    page.get_by_role("link", name="Students").first.click()
    expect(page.locator("h1")).to_have_text("Find a student")
    page.fill("#searchbar", student.username)
    page.press("#searchbar", "Enter")
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    rows.get_by_role("link", name=student.username).click()
    page.get_by_role("link", name="Overview and actions").click()
    overview = re.compile(rf"/admin/players/playerprofile/{tablet.player_id}/overview/$")
    expect(page).to_have_url(overview)
    expect(page.locator("h1")).to_contain_text(f"({student.username})")

    # Revoke the tablet from its row: the confirmation asks for a reason and refuses an empty one.
    device_row = page.locator("#devices tbody tr", has_text=tablet.device_id)
    expect(device_row).to_contain_text("active")
    device_row.get_by_role("link", name="Revoke…").click()
    expect(page.locator("h1")).to_have_text("Revoke device “Kitchen tablet”")
    expect(page.locator("#action-facts")).to_contain_text(tablet.device_id)
    page.click("input[name=apply]")
    expect(page.locator(".errorlist")).to_be_visible()
    page.fill("input[name=reason]", REASON)
    page.click("input[name=apply]")

    # Back on the overview: the message, the device struck with who and why, the audit entry.
    expect(page).to_have_url(overview)
    expect(page.locator("ul.messagelist")).to_contain_text("Device “Kitchen tablet” of")
    expect(device_row).to_have_class("device-blocked")
    expect(device_row.locator("s")).to_have_count(3)  # device id, name and platform struck through
    expect(device_row).to_contain_text(agent.username)
    expect(device_row).to_contain_text(REASON)
    audit = page.locator("#audit tbody tr", has_text=REASON)
    expect(audit).to_contain_text("device revoked by support")
    expect(audit).to_contain_text(agent.username)

    refused = tablet.get("/api/v1/session/")
    assert (refused.status_code, refused.json()["code"]) == (401, "device_revoked")
    entry = DeviceAuditEntry.objects.get(device__device_id=tablet.device_id, action=AuditAction.REVOKED)
    assert (entry.actor, entry.reason) == (agent, REASON)

    # Allow it again from the same row; it may sign in again.
    device_row.get_by_role("link", name="Allow again…").click()
    page.fill("input[name=reason]", "Found at home")
    page.click("input[name=apply]")
    expect(page).to_have_url(overview)
    expect(page.locator("ul.messagelist")).to_contain_text("allowed again")
    expect(page.locator("#audit tbody tr", has_text="Found at home")).to_contain_text("device allowed again")
    assert tablet.login().status_code == 200
