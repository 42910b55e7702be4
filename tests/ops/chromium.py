"""Headless Chromium (`chromium`, `chromium-browser` or `google-chrome`), as the operator-page
tests drive it; skipped when none is found (tests/system.py)."""
from __future__ import annotations

import subprocess
from pathlib import Path

from tests import system

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def render(url: str, profile: Path, screenshot: str, height: int = 900) -> str:
    """Load `url` once: save a screenshot as test-artifacts/<screenshot>, return the DOM."""
    binary = system.chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / screenshot
    path.unlink(missing_ok=True)
    done = subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size=1280,{height}",
                           f"--screenshot={path}", "--dump-dom", url],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"no screenshot at {path}"
    return done.stdout
