"""Headless Chromium for the QC page tests (Debian's ``chromium``; skips when absent)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

PAGE_WIDTH = 1400
#: Added to a copy of the page: records, after load, every image's natural size and the
#: page's width as attributes, which --dump-dom then prints.
_PROBE = """<script>
window.addEventListener("load", () => {
  for (const img of document.images) {
    img.setAttribute("data-natural", img.complete ? img.naturalWidth + "x" + img.naturalHeight : "0x0");
  }
  document.body.setAttribute("data-scroll-width", String(document.documentElement.scrollWidth));
});
</script></body>"""


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium not installed (Debian package chromium; `make system-deps` installs it)")
    return exe


def _flags(profile: str) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--allow-file-access-from-files",
        f"--window-size={PAGE_WIDTH},1800",
    ]


def dump_dom(page: Path) -> str:
    """The DOM of ``page`` (a copy with :data:`_PROBE`) after it has loaded."""
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _PROBE), encoding="utf-8")
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [chromium(), *_flags(profile), "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    probe.unlink()
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def screenshot(page: Path, out: Path) -> Path:
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [chromium(), *_flags(profile), "--hide-scrollbars", f"--screenshot={out}", page.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out
