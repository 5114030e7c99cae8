"""The status page in a real headless Chromium (Debian's), driven by Playwright, against a real bridge.

Screenshots go to tests/screenshots/ (git-ignored; docs/screenshot.png is a copy of one).
"""

import contextlib
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from bridge.mqtt import Endpoint
from tests.conftest import Mosquitto, RunningBridge, make_config, start_bridge

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run"]  # fmt: skip
SHOTS = Path(__file__).parent / "screenshots"
WAIT = 10_000  # ms, for anything the page shows after a hit

A, B, C = "00:15:65:aa:bb:01", "00:15:65:aa:bb:02", "00:04:13:aa:bb:03"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (scripts/test installs it: apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, running: RunningBridge) -> Iterator[Page]:
    """A fresh browser tab; it closes before the bridge stops, so no event stream is left open."""
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    tab = context.new_page()
    tab.set_default_timeout(WAIT)
    yield tab
    context.close()


def shoot(tab: Page, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    tab.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def send(rb: RunningBridge, path: str) -> None:
    response = rb.hit(path)
    assert response.status_code == 200, response.text


@contextlib.contextmanager
def bridge_with(
    mosquitto: Mosquitto, base_topic: str, extra: Mapping[str, Mapping[str, object]]
) -> Iterator[RunningBridge]:
    rb = start_bridge(make_config(base_topic, mosquitto.url, extra), Endpoint("127.0.0.1", mosquitto.port))
    try:
        yield rb
    finally:
        rb.stop()


@contextlib.contextmanager
def tab_in(context: BrowserContext) -> Iterator[Page]:
    """A tab of `context`; the context closes (and its event streams with it) on the way out."""
    try:
        tab = context.new_page()
        tab.set_default_timeout(WAIT)
        yield tab
    finally:
        context.close()


def test_phone_appears_and_its_call_changes_on_screen_without_reload(
    page: Page, running: RunningBridge
) -> None:
    page.goto(running.url + "/")
    expect(page.locator("#no-phones")).to_be_visible()
    expect(page.locator("#live")).to_have_text("Live")
    page.evaluate("window.sameDocument = true")

    send(running, f"/offhook/yealink?device={A}&local=100&model=SIP-T46S&firmware=66.86.0.15")
    phone = page.locator("#phone-001565aabb01")
    expect(phone).to_be_visible()
    expect(phone.locator("h2")).to_have_text("001565aabb01")
    expect(phone.locator(".state-name")).to_have_text("offhook")
    expect(phone).to_contain_text("SIP-T46S")
    expect(page.locator("#no-phones")).to_be_hidden()

    send(running, f"/onhook/yealink?device={A}")
    send(running, f"/incomingcall/yealink?device={A}&local=100&remote=sip:5551234@pbx&displayremote=Alice")
    expect(phone.locator(".state-name")).to_have_text("ringing")
    expect(phone.locator(".number")).to_have_text("5551234")
    expect(phone.locator(".caller")).to_have_text("Alice")
    expect(phone.locator(".direction")).to_have_text("incoming")
    shoot(page, "ringing")

    send(running, f"/callestablished/yealink?device={A}&local=100&remote=sip:5551234@pbx")
    expect(phone.locator(".state-name")).to_have_text("talking")
    expect(phone.locator(".number")).to_have_text("5551234")
    expect(phone.locator(".duration")).to_have_text("0:01", timeout=5000)  # it ticks
    shoot(page, "talking")

    send(running, f"/callterminated/yealink?device={A}&local=100&remote=sip:5551234@pbx")
    expect(phone.locator(".state-name")).to_have_text("idle")
    expect(phone.locator(".number")).to_have_count(0)
    row = page.locator("#recent tr").first
    expect(row).to_contain_text("5551234")
    expect(row).to_contain_text("Alice")
    expect(row.locator(".result")).to_have_text("answered")
    assert page.evaluate("window.sameDocument") is True  # all of it without a reload


def test_debug_page_shows_refused_hits_with_their_reason(
    browser: Browser, mosquitto: Mosquitto, base_topic: str
) -> None:
    with (
        bridge_with(mosquitto, base_topic, {"http": {"token": "s3cret"}}) as rb,
        tab_in(browser.new_context(viewport={"width": 1100, "height": 700})) as tab,
    ):
        send(rb, f"/offhook/yealink?device={B}&token=s3cret")  # before the page: rendered by the server
        tab.goto(rb.url + "/debug")
        expect(tab.locator("#live")).to_have_text("Live")

        assert rb.hit(f"/incomingcall/yealink?device={A}&remote=5551234&token=guess").status_code == 403
        refused = tab.locator("#hits tr.refused").first
        expect(refused.locator(".outcome")).to_have_text("403 missing or wrong token")
        expect(refused).to_contain_text("/incomingcall/yealink")
        expect(refused).to_contain_text("token=***")
        expect(refused).not_to_contain_text("guess")
        send(rb, f"/incomingcall/yealink?device={A}&remote=5551234&token=s3cret")
        expect(tab.locator("#hits tr").first.locator(".outcome")).to_have_text("200")
        expect(tab.locator("#hits tr")).to_have_count(3)
        shoot(tab, "debug")

        tab.select_option("#filter-device", "001565aabb02")  # the phone that was only accepted
        expect(tab.locator("#hits tr:visible")).to_have_count(1)
        expect(tab.locator("#hits tr:visible")).to_contain_text("/offhook/yealink")
        tab.select_option("#filter-device", "")
        tab.check("#filter-refused")
        expect(tab.locator("#hits tr:visible")).to_have_count(1)
        expect(tab.locator("#hits tr:visible")).to_contain_text("missing or wrong token")


def test_the_page_says_while_the_broker_is_away(
    browser: Browser, own_mosquitto: Mosquitto, base_topic: str
) -> None:
    with (
        bridge_with(own_mosquitto, base_topic, {}) as rb,
        tab_in(browser.new_context(viewport={"width": 1100, "height": 600})) as tab,
    ):
        tab.goto(rb.url + "/")
        expect(tab.locator("#live")).to_have_text("Live")
        problems = tab.locator("#health .problem")
        expect(problems).to_have_count(0)

        own_mosquitto.stop()
        away = f"Not connected to the MQTT broker (127.0.0.1:{own_mosquitto.port}): hits are still"
        expect(problems).to_have_text(
            [f"{away} answered, and their messages wait in the queue until it is back."]
        )
        send(rb, f"/offhook/yealink?device={A}")  # answered meanwhile, as it says
        expect(tab.locator("#phone-001565aabb01 .state-name")).to_have_text("offhook")
        shoot(tab, "broker-away")
        tab.reload()  # rendered by the server too
        expect(problems).to_have_count(1)

        own_mosquitto.start()
        expect(problems).to_have_count(0, timeout=20_000)  # the bridge's next try: 1-8 s after it went


def test_setup_page_shows_the_urls_with_the_server_filled_in(
    browser: Browser, mosquitto: Mosquitto, base_topic: str
) -> None:
    extra = {"http": {"public_url": "http://192.0.2.10:8080", "token": "s3cret"}}
    with (
        bridge_with(mosquitto, base_topic, extra) as rb,
        tab_in(browser.new_context(viewport={"width": 1100, "height": 900})) as tab,
    ):
        tab.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=rb.url)
        tab.goto(rb.url + "/setup")
        tab.get_by_role("link", name="Yealink").click()
        expect(tab).to_have_url(rb.url + "/setup/yealink")
        expect(tab.locator("h1")).to_have_text("Set-up: Yealink")
        first = tab.locator("code.url").first
        expect(first).to_have_text(
            "http://192.0.2.10:8080/incoming_call/yealink?device=$mac&local=$local&remote=$remote"
            "&displayremote=$display_remote&callid=$call_id&line=$active_user&token=s3cret"
        )
        expect(tab.locator("ol").first).to_contain_text("Features > Action URL")
        expect(tab.locator("#lines")).to_contain_text(
            "action_url.off_hook = http://192.0.2.10:8080/off_hook/yealink?"
        )
        copy = tab.get_by_role("button", name="Copy the incoming_call URL")
        copy.click()
        expect(copy).to_have_text("Copied")
        assert tab.evaluate("navigator.clipboard.readText()") == first.text_content()
        shoot(tab, "setup")


def test_password_protects_the_pages_and_the_live_stream(
    browser: Browser, mosquitto: Mosquitto, base_topic: str
) -> None:
    credentials = {"username": "office", "password": "letmein"}
    with (
        bridge_with(mosquitto, base_topic, {"http": {"ui_password": "letmein"}}) as rb,
        tab_in(browser.new_context(http_credentials=credentials)) as staff,  # type: ignore[arg-type]
    ):
        for path in ("/", "/debug", "/calls", "/setup/yealink", "/api/devices", "/api/calls", "/api/events"):
            refused = rb.hit(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"].startswith("Basic ")
            assert rb.hit(path, auth=("", "guess")).status_code == 401, path
        assert rb.hit("/healthz").status_code == 200
        response = staff.goto(rb.url + "/")
        assert response is not None
        assert response.status == 200
        expect(staff.locator("#live")).to_have_text("Live")
        send(rb, f"/incomingcall/yealink?device={C}&remote=5550000&displayremote=Bob")  # phones need none
        expect(staff.locator("#phone-000413aabb03 .caller")).to_have_text("Bob")


OFFICE = {
    "devices": {
        "001565aabb01": {"name": "Front desk"},
        "001565aabb02": {"name": "Sales"},
        "000413aabb03": {"name": "Workshop"},
        "001565aabb04": {"name": "Meeting room", "phone_type": "yealink"},
    }
}
VIEWS = {
    "screenshot": {"viewport": {"width": 1100, "height": 760}, "color_scheme": "light"},
    "screenshot-dark": {"viewport": {"width": 1100, "height": 760}, "color_scheme": "dark"},
    "screenshot-phone": {"viewport": {"width": 390, "height": 844}, "color_scheme": "light"},
}


@pytest.mark.parametrize("view", VIEWS)
def test_an_office_at_a_glance(browser: Browser, mosquitto: Mosquitto, base_topic: str, view: str) -> None:
    options = VIEWS[view]
    with bridge_with(mosquitto, base_topic, OFFICE) as rb:
        send(rb, f"/registered/yealink?device={A}&local=sip:100@pbx&model=SIP-T46U")
        send(rb, f"/incomingcall/yealink?device={A}&local=100&remote=%2B4930123456&displayremote=Carol")
        send(rb, f"/offhook/yealink?device={A}&local=100")
        send(rb, f"/callestablished/yealink?device={A}&local=100&remote=%2B4930123456")
        send(rb, f"/registered/snom?device={B}&local=sip:101@pbx&model=snomD785")
        send(rb, f"/incomingcall/snom?device={B}&local=101&remote=5551234&displayremote=Alice")
        send(rb, f"/registered/yealink?device={C}&local=sip:102@pbx&model=SIP-T54W")
        send(rb, f"/incomingcall/yealink?device={C}&local=102&remote=5557777&displayremote=Dave")
        send(rb, f"/missedcall/yealink?device={C}&local=102&remote=5557777")
        send(rb, f"/dndon/yealink?device={C}&local=102")
        with tab_in(browser.new_context(**options)) as tab:  # type: ignore[arg-type]
            tab.goto(rb.url + "/")
            expect(tab.locator("#live")).to_have_text("Live")
            expect(tab.locator(".phone h2")).to_have_text(["Front desk", "Sales", "Workshop", "Meeting room"])
            expect(tab.locator("#phone-001565aabb01 .state-name")).to_have_text("talking")
            expect(tab.locator("#phone-001565aabb01 .number")).to_have_text("+4930123456")
            expect(tab.locator("#phone-001565aabb02 .state-name")).to_have_text("ringing")
            expect(tab.locator("#phone-000413aabb03 .state-name")).to_have_text("idle")
            expect(tab.locator("#phone-000413aabb03 .dnd")).to_have_text("on")
            expect(tab.locator("#phone-000413aabb03 .lines")).to_have_text("102: registered")
            expect(tab.locator("#phone-001565aabb04 .badge")).to_have_text("never seen")
            expect(tab.locator("#recent .result")).to_have_text(["missed"])
            width = tab.evaluate("document.documentElement.scrollWidth")
            assert width <= options["viewport"]["width"], "the page scrolls sideways"  # type: ignore[index]
            shoot(tab, view)
