"""The Chromium that browser tests drive (tests/browser.py) leaves nothing behind: no helper
process still running (a renderer left spinning takes a core from the tests after it) and
no profile directory."""

from __future__ import annotations

from pathlib import Path

from tests.browser import _using_profile, chromium


def test_a_browser_stopped_leaves_no_process_and_no_profile() -> None:
    with chromium() as page:
        page.open("data:text/html,<p id=x>hello</p>", 640)
        assert page.wait_for("document.getElementById('x').textContent") == "hello"
        profile = page.profile
        helpers = _using_profile(profile)
        assert len(helpers) > 1, f"the browser and its helpers run with the profile: {helpers}"
    assert _using_profile(profile) == []
    assert not Path(profile).exists()
