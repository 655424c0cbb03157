"""Shared fixtures: the rendered website served on 127.0.0.1, and a headless Chromium driven by Playwright; and the
helpers of the tests that kill a process and look for the workers it leaves behind."""
import functools, http.server, os, shutil, signal, subprocess, threading, time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = os.environ.get("EIB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def children(pid: int) -> list[str]:
    "The process ids of `pid`'s children."
    return subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()


def wait_children(p, n: int, timeout: float = 60.0) -> list[str]:
    "The children of the running process `p` once it has at least `n` (an assertion error if not within `timeout` s)."
    deadline, kids = time.time() + timeout, []
    while time.time() < deadline:
        kids = children(p.pid)
        if len(kids) >= n: return kids
        time.sleep(0.1)
    raise AssertionError(f"{len(kids)} children, expected {n}; exit status {p.poll()}")


def _cmdline(pid: str) -> str | None:
    try: return Path(f"/proc/{pid}/cmdline").read_text(errors="replace").replace("\0", " ")
    except OSError: return None  # gone


def survivors_of_kill_9(p, kids, match: str = "", timeout: float = 15.0) -> list[str]:
    "SIGKILL `p`, then the `kids` whose command line holds `match` that are still alive after `timeout` s."
    os.kill(p.pid, signal.SIGKILL); p.wait(timeout=30)
    alive = lambda: [k for k, c in ((k, _cmdline(k)) for k in kids) if c is not None and match in c]
    deadline = time.time() + timeout
    while time.time() < deadline and alive(): time.sleep(0.1)
    return alive()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass


def serve(folder):
    "Serve `folder` on 127.0.0.1 at a free port; return (base url, server)."
    h = functools.partial(_Quiet, directory=str(folder))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), h)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{srv.server_address[1]}", srv


@pytest.fixture(scope="session")
def site():
    "The website, built as `make book` builds it (chapters executed), in artifacts/site."
    from eib.book import build_site
    out = ARTIFACTS / "site"
    build_site(out, execute=True, quiet=True)
    return out


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    "Headless Debian Chromium (no browser download), with a fresh profile."
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium (as root)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        prof = tmp_path_factory.mktemp("chromium-profile")
        ctx = p.chromium.launch_persistent_context(str(prof), executable_path=CHROMIUM, headless=True,
                                                   args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900})
        yield ctx
        ctx.close()


def offline_page(browser):
    """A new page on which nothing may leave 127.0.0.1: such requests are recorded in the returned list, then aborted
    (data:, blob: and about: URLs are not network requests). -> (page, outside)."""
    from urllib.parse import urlparse
    outside = []
    local = lambda url: url.startswith(("data:", "blob:", "about:")) or urlparse(url).hostname == "127.0.0.1"
    page = browser.new_page()
    page.on("request", lambda req: None if local(req.url) else outside.append(req.url))
    page.route("**/*", lambda route: route.continue_() if local(route.request.url) else route.abort())
    return page, outside
