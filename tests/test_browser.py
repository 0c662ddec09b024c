"""Pages in headless Chromium: a person drops a real photo on the serve page and sees its class;
a training run's report.html opens offline with every plot and thumbnail rendered."""

import contextlib
import os
import shutil
import socket
import threading
import time

import pytest

from conftest import shared_dataset

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags for a sandboxed machine with no network: no GPU, no background connections.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def browser_or_skip():
    missing = []
    if not os.path.exists(CHROMIUM):
        missing.append("chromium (make test installs Debian's package when it runs as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("playwright (the dev extra)")
        sync_playwright = None
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must provide {' and '.join(missing)}")
        pytest.skip(f"no headless browser here: {' and '.join(missing)}")
    return sync_playwright


@contextlib.contextmanager
def browser_page():
    """A headless Chromium page recording console errors, uncaught exceptions and every request."""
    sync_playwright = browser_or_skip()
    errors, fetched = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: fetched.append(r.url))
        try:
            yield page, errors, fetched
        finally:
            browser.close()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run folder trained on real photos, and their folder."""
    import headstart

    data = shared_dataset("hymenoptera_data")
    root = tmp_path_factory.mktemp("browser")
    clf = headstart.ImageClassifier(workflow="lightweight", cache_dir=root / "cache", verbose=0).fit(data)
    return clf.save(root / "run"), data


@pytest.fixture(scope="module")
def server(trained):
    import uvicorn

    from headstart.model import open_model
    from headstart.serve import create_app

    run, data = trained
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(open_model(run)), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}", data
    server.should_exit = True
    thread.join(timeout=10)


def test_drop_a_real_photo_and_see_its_class(server):
    url, data = server
    bee = sorted((data / "val" / "bees").glob("*.jpg"))[0]
    with browser_page() as (page, errors, _):
        page.goto(url)
        assert "ants, bees" in page.content()
        page.set_input_files("#pick", str(bee))
        page.wait_for_selector(".result .row", timeout=30000)
        first = page.locator(".result .row").first.inner_text()
        rendered = page.eval_on_selector(".result img", "img => img.complete && img.naturalWidth > 0")
        bar = page.eval_on_selector(".result .bar", "b => b.getBoundingClientRect().width")
        track = page.eval_on_selector(".result .row", "r => r.getBoundingClientRect().width")
        if os.environ.get("HEADSTART_SCREENSHOT"):  # to look at the page: HEADSTART_SCREENSHOT=page.png
            page.screenshot(path=os.environ["HEADSTART_SCREENSHOT"])
    assert first.startswith("bees"), first
    assert rendered, "the dropped photo does not render"
    assert bar > 0.2 * track, f"the top probability bar is {bar:.0f} px wide in a {track:.0f} px row"
    assert errors == []


def test_several_files_in_order_named_with_a_bad_one_among_them(server, tmp_path):
    url, data = server
    ant = sorted((data / "val" / "ants").glob("*.jpg"))[0]
    bee = sorted((data / "val" / "bees").glob("*.jpg"))[0]
    bad = tmp_path / "<b>notes.jpg"  # not an image, and a name that must show as text
    bad.write_text("a shopping list")
    with browser_page() as (page, errors, _):
        page.goto(url)
        page.set_input_files("#pick", [str(ant), str(bad)])
        page.wait_for_function("document.querySelectorAll('.result').length === 2", timeout=30000)
        page.set_input_files("#pick", str(bee))  # a second request: its result goes below
        page.wait_for_function("document.querySelectorAll('.result').length === 3", timeout=30000)
        names = page.locator(".result .name").all_inner_texts()
        tops = page.locator(".result .row.top").all_inner_texts()
        error = page.locator(".result .error").all_inner_texts()
        weights = page.eval_on_selector_all(".result .row", "rows => rows.map(r => getComputedStyle(r).fontWeight)")
        bolded = page.locator(".result b").all_inner_texts()
    assert names == [f"#1 {ant.name}", f"#2 {bad.name}", f"#3 {bee.name}"]
    assert tops[0].startswith("ants") and tops[1].startswith("bees")
    assert error == [f"{bad.name}: not an image headstart can read (UnidentifiedImageError)"]
    assert int(weights[0]) > int(weights[1])  # the predicted class stands out from the runner-up
    assert not any("notes" in b for b in bolded)  # the file name was shown as text, never parsed as markup
    assert errors == []


def test_report_opens_offline_with_every_image_rendered(trained):
    run, _ = trained
    report = run / "report.html"
    with browser_page() as (page, errors, fetched):
        page.goto(report.as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all(
            "img", "imgs => imgs.map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0}))")
        text = page.inner_text("body")
        if os.environ.get("HEADSTART_SCREENSHOT"):
            page.screenshot(path=os.environ["HEADSTART_SCREENSHOT"].replace(".png", "-report.png"), full_page=True)
    assert errors == []
    # Self-contained: the page itself, then only inline data, never a file or server beside it.
    assert [u for u in fetched if not u.startswith("data:")] == [report.as_uri()]
    alts = [i["alt"] for i in images]
    for plot in ("validation loss and accuracy against the L2 strength", "confusion counts", "confusion normalised",
                 "per class f1", "reliability", "roc pr", "most confidently wrong images"):
        assert plot in alts
    assert len(images) > 6 + 10, "the top losses table shows a thumbnail per image"
    assert [i["alt"] for i in images if not i["ok"]] == []
    for heading in ("Data", "Settings", "Training: stage 1 and fine-tuning", "Metrics", "Top losses", "Timings"):
        assert heading in text
    assert "ants" in text and "bees" in text and "validation" in text


def test_inspect_page_opens_offline_with_every_thumbnail_rendered(trained, tmp_path):
    from headstart.cli import main

    browser_or_skip()
    run, data = trained
    out = tmp_path / "inspect"
    # The features the training run cached are reused: this takes seconds.
    assert main(["-q", "inspect", str(data), "--out", str(out), "--cache-dir", str(run.parent / "cache")]) == 0
    page_path = out / "inspect.html"
    with browser_page() as (page, errors, fetched):
        page.goto(page_path.as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete && i.naturalWidth > 0)")
        text = page.inner_text("body")
    assert errors == []
    assert [u for u in fetched if not u.startswith("data:")] == [page_path.as_uri()]
    assert images and all(images), "a flagged image's thumbnail does not render"
    assert "Likely label errors" in text and "Images per class" in text
