"""The web page in headless Chromium (Debian's ``chromium``, driven by Playwright): sign in
with a key, submit an edit through the form, see it in the log with its thumbnail, and run a
query that shows the new answer."""

from __future__ import annotations

import shutil

import pytest
from playwright import sync_api as playwright_api  # the test extra installs it

from service_support import Server, copy_store, template_store, world_edits

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture()
def browser():
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    with playwright_api.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def test_the_page_edits_shows_the_log_with_a_thumbnail_and_answers_a_query(browser, tmp_path, tmp_path_factory):
    from editscope.service.keys import KeyRing

    store = copy_store(template_store(tmp_path_factory.getbasetemp()), tmp_path / "store")
    ring = KeyRing(store)
    _, key = ring.add("browser", "editor")
    ring.close()
    edit = world_edits(1)[0]
    image = tmp_path / "edit.png"
    image.write_bytes(edit.image)
    with Server(store) as server:
        page = browser.new_page()
        page.goto(server.url + "/")
        page.fill("#key", key)
        with page.expect_navigation():
            page.click("#key-form button")
        assert "signed in as browser" in page.inner_text("#who")

        page.set_input_files("#edit-form input[name=image]", str(image))
        page.fill("#edit-form input[name=prompt]", edit.prompt)
        page.fill("#edit-form input[name=target]", edit.target)
        page.click("#edit-form button")
        row = page.wait_for_selector("#log tr[data-status='applied']", timeout=240_000)
        assert edit.prompt in row.inner_text() and edit.target in row.inner_text()
        thumbnail = row.query_selector("img.thumb")
        assert thumbnail is not None
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumbnail, timeout=30_000)

        page.set_input_files("#query-form input[name=image]", str(image))
        page.fill("#query-form input[name=prompt]", edit.prompt)
        page.click("#query-form button")
        page.wait_for_function("() => !['', '...'].includes(document.getElementById('answer').textContent)",
                               timeout=60_000)
        assert page.inner_text("#answer") == edit.target
        assert edit.base_answer != edit.target
