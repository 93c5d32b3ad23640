"""Headless Chromium driven through chromedriver's W3C WebDriver protocol, over httpx.

A few calls the desk's browser tests need (open a page, find, click, type, press keys,
read the focused element, run a line of script, take a screenshot), with no client
library: Debian's `chromium` and `chromium-driver` are all it takes. `browser()` skips
the test, saying why, where either is missing.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

from moments.stack import free_port

_ELEMENT: Final = "element-6066-11e4-a52e-4f735466cecf"
#: WebDriver key codes.
TAB: Final = "\ue004"
SHIFT: Final = "\ue008"
ENTER: Final = "\ue007"
SPACE: Final = "\ue00d"
ARROW_DOWN: Final = "\ue015"


class WebDriverError(AssertionError):
    """chromedriver answered with an error (names the command and the error)."""


class Element:
    """One element of the page."""

    def __init__(self, browser: Browser, element_id: str) -> None:
        self.browser = browser
        self.id = element_id

    def click(self) -> None:
        self.browser.call("POST", f"element/{self.id}/click", {})

    def find(self, css: str) -> Element:
        """The first element matching CSS inside this one."""
        found = self.browser.call(
            "POST", f"element/{self.id}/element", {"using": "css selector", "value": css}
        )
        return Element(self.browser, found[_ELEMENT])

    def type(self, text: str) -> None:
        self.browser.call("POST", f"element/{self.id}/value", {"text": text})

    @property
    def text(self) -> str:
        return str(self.browser.call("GET", f"element/{self.id}/text"))

    def attribute(self, name: str) -> str | None:
        value = self.browser.call("GET", f"element/{self.id}/attribute/{name}")
        return None if value is None else str(value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Element) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


class Browser:
    """One WebDriver session of headless Chromium."""

    def __init__(self, driver_url: str, session_id: str) -> None:
        self.base = f"{driver_url}/session/{session_id}"
        self.http = httpx.Client(timeout=60.0)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        answer = self.http.request(method, f"{self.base}/{path}", json=body)
        value = answer.json().get("value")
        if answer.status_code != 200:
            error = value.get("error") if isinstance(value, dict) else value
            message = value.get("message", "") if isinstance(value, dict) else ""
            raise WebDriverError(f"{method} {path}: {error}: {message[:300]}")
        return value

    def go(self, url: str) -> None:
        self.call("POST", "url", {"url": url})

    @property
    def url(self) -> str:
        return str(self.call("GET", "url"))

    @property
    def source(self) -> str:
        return str(self.call("GET", "source"))

    def find(self, css: str) -> Element:
        return Element(
            self, self.call("POST", "element", {"using": "css selector", "value": css})[_ELEMENT]
        )

    def find_all(self, css: str) -> list[Element]:
        found = self.call("POST", "elements", {"using": "css selector", "value": css})
        return [Element(self, item[_ELEMENT]) for item in found]

    def active(self) -> Element:
        return Element(self, self.call("GET", "element/active")[_ELEMENT])

    def keys(self, *keys: str) -> None:
        """Press and release each key in turn (on the focused element)."""
        actions: list[dict[str, str]] = []
        for key in keys:
            actions += [{"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]
        self.call(
            "POST", "actions", {"actions": [{"type": "key", "id": "keyboard", "actions": actions}]}
        )

    def type_text(self, text: str) -> None:
        self.keys(*text)

    def script(self, code: str, *args: Any) -> Any:
        return self.call("POST", "execute/sync", {"script": code, "args": list(args)})

    def size(self, width: int, height: int) -> None:
        self.call("POST", "window/rect", {"width": width, "height": height})

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.call("GET", "screenshot")))
        return path

    def wait_for(self, check: Any, timeout_s: float = 60.0, what: str = "") -> Any:
        """Poll CHECK() until it returns something true; its value."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or check}")
            time.sleep(0.25)


def _binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip(
            "headless browser tests need Debian's chromium and chromium-driver"
            " (apt-get install chromium chromium-driver; .ci/run installs them)"
        )
    return chromium, driver


@contextlib.contextmanager
def browser(
    log_path: Path, width: int = 1280, height: int = 900, *, phone: bool = False
) -> Iterator[Browser]:
    """A headless Chromium session (skips the test where chromium or chromedriver is missing).
    `phone`: a viewport of WIDTH x HEIGHT CSS pixels by device emulation (a window is never
    narrower than 500 pixels)."""
    chromium, driver = _binaries()
    port = free_port()
    with open(log_path, "ab") as log:
        process = subprocess.Popen([driver, f"--port={port}"], stdout=log, stderr=subprocess.STDOUT)
    driver_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{driver_url}/status", timeout=2).json()["value"]["ready"]:
                    break
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        options: dict[str, Any] = {
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--disable-gpu",
                f"--window-size={max(width, 500)},{height}",
            ],
        }
        if phone:
            options["mobileEmulation"] = {
                "deviceMetrics": {"width": width, "height": height, "pixelRatio": 1.0}
            }
        answer = httpx.post(
            f"{driver_url}/session",
            json={
                "capabilities": {
                    "alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}
                }
            },
            timeout=60,
        ).json()["value"]
        if "sessionId" not in answer:
            raise WebDriverError(f"no session: {answer.get('message', answer)}")
        session = Browser(driver_url, answer["sessionId"])
        try:
            yield session
        finally:
            with contextlib.suppress(httpx.HTTPError):
                session.http.delete(session.base)
            session.http.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
