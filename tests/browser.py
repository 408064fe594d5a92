"""Headless Chromium for the browser tests: Debian's ``chromium``, driven by Playwright.

Playwright's own browser download is not used; the tests launch the system
Chromium by path, and skip (saying so) only where none is installed.
``.ci/run`` installs it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium installed (Debian: apt-get install -y chromium; .ci/run installs it)",
)

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: Generous: a loaded CI machine is slow, and every wait ends as soon as its condition holds.
WAIT_MS = 30_000


def launch(playwright, *extra: str):
    return playwright.chromium.launch(
        executable_path=CHROMIUM, args=[*FLAGS, *extra], headless=True
    )


class PageErrors:
    """The JavaScript errors and console errors a page reports."""

    def __init__(self, page) -> None:
        self.messages: list[str] = []
        page.on("pageerror", lambda error: self.messages.append(f"pageerror: {error}"))
        page.on(
            "console",
            lambda m: (
                self.messages.append(f"console.{m.type}: {m.text}") if m.type == "error" else None
            ),
        )


def screenshot_dir(tmp_path: Path) -> Path:
    """Where screenshots go: the test's own folder, or ``SCREENSHOT_DIR`` (docs/ for the README)."""
    return Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)
