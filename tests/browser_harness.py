"""The Chromium harness of the dashboard's browser tests (a pytest plugin, see tests/conftest.py): Debian's
headless Chromium driven by Playwright, against a real Depot server on a real port. Screenshots go to
tests/artifacts/ (not committed)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app import users
from app.dashboard import queries
from app.main import create_app

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
# The marks of a browser test module.
BROWSER = [pytest.mark.browser, pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian's chromium is not installed")]
PASSWORD = "s3cret-pass"


@pytest.fixture(scope="module")
async def browser():
    playwright_api = pytest.importorskip("playwright.async_api")
    ARTIFACTS.mkdir(exist_ok=True)
    async with playwright_api.async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        await b.close()


@pytest.fixture
async def site(aiohttp_server, settings, pool):
    """The server's base URL; users olivia (operator), victor (viewer) and uma (uploader), password PASSWORD."""
    queries.clear_cache()  # every test starts from empty tables
    server = await aiohttp_server(create_app(settings))
    for name, role in (("olivia", "operator"), ("victor", "viewer"), ("uma", "uploader")):
        await users.create_user(pool, name, role, password=PASSWORD)
    return f"http://127.0.0.1:{server.port}"


@pytest.fixture
async def new_page(browser, site):
    """new_page() -> a page in a fresh browser context (its own cookies) that records every error."""
    contexts = []

    async def make():
        context = await browser.new_context(viewport={"width": 1360, "height": 900}, base_url=site)
        contexts.append(context)
        pg = await context.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        pg.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        pg.errors = errors
        return pg

    yield make
    for context in contexts:
        await context.close()


@pytest.fixture
async def page(new_page):
    return await new_page()


async def sign_in(pg, username: str, password: str = PASSWORD, then: str = "/") -> None:
    await pg.goto("/login?next=" + then.replace("/", "%2F"))
    await pg.fill("#login-password input[name=username]", username)
    await pg.fill("#login-password input[name=password]", password)
    await pg.click("#login-password button")
    await pg.wait_for_selector("#whoami")
    assert username in await pg.inner_text("#whoami")
