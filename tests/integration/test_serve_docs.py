"""imops serve's /docs page in a real browser: Debian's headless chromium,
driven by playwright (PyPI, without its bundled browsers), opens the page
from a loopback server, uploads a generated surface image through the page's
file input and presses Predict; the answer the page shows (class, label,
probabilities) must equal what POST /predict answers for the same file, the
route table must list every route of /openapi.json, and the page must fetch
nothing but from the server itself (no internet resource)."""
import json
import os
from urllib.parse import urlsplit

import pytest
import requests
from playwright.sync_api import sync_playwright  # pinned in tests/requirements.txt

from serve_helpers import server, ws  # noqa: F401  (fixtures shared with test_serve.py)

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: run 'make deps' (Debian package chromium)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                               args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


def test_docs_page_predicts_like_the_api(ws, server, browser):
    s = server()
    image = ws["images"][0]  # a generated surface JPEG (Positive: cracked)
    with open(image, "rb") as f:
        r = requests.post(s.url + "/predict", files={"file": f}, timeout=30)
    assert r.status_code == 200, r.text
    want = r.json()
    assert len(want["predictions"]) == 1

    page = browser.new_page()
    requested = []
    page.on("request", lambda req: requested.append(req.url))
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    resp = page.goto(s.url + "/docs", wait_until="networkidle", timeout=60000)
    assert resp is not None and resp.status == 200

    # the route table is filled from /openapi.json: one row per (method, path)
    doc = requests.get(s.url + "/openapi.json", timeout=30).json()
    expected_rows = sorted((m.upper(), p) for p, ops in doc["paths"].items() for m in ops)
    page.wait_for_function(f"document.querySelectorAll('#routes tr').length > {len(expected_rows)}",
                           timeout=30000)
    rows = page.eval_on_selector_all(
        "#routes tr", "trs => trs.slice(1).map(tr => Array.from(tr.cells).map(c => c.textContent))")
    assert sorted((m, p) for m, p, _ in rows) == expected_rows
    assert page.text_content("#model") == doc["info"]["description"]
    # the examples name this server, not the placeholder
    shown = page.inner_text("body")
    assert "HOST" not in shown and f"http://127.0.0.1:{s.port}/predict" in shown

    # upload through the page's own file input and press its button
    page.set_input_files("#file", str(image))
    page.click("#send")
    page.wait_for_function("document.getElementById('result').textContent.startsWith('HTTP ')", timeout=60000)
    shown = page.text_content("#result")
    status, _, body = shown.partition("\n")
    assert status == "HTTP 200", shown
    got = json.loads(body)
    assert got["model"] == want["model"] and got["version"] == want["version"]
    assert len(got["predictions"]) == 1
    g, w = got["predictions"][0], want["predictions"][0]
    assert g["file"] == image.name
    assert g["class"] == w["class"] and g["label"] == w["label"]
    assert g["probabilities"].keys() == w["probabilities"].keys()
    for k, v in w["probabilities"].items():
        assert abs(g["probabilities"][k] - v) < 1e-6, (k, g, w)

    # the compact form through the checkbox: the class list, as ?format=classes answers
    page.check("#compact")
    page.evaluate("document.getElementById('result').textContent = ''")
    page.click("#send")
    page.wait_for_function("document.getElementById('result').textContent.startsWith('HTTP ')", timeout=60000)
    status, _, body = page.text_content("#result").partition("\n")
    assert status == "HTTP 200" and json.loads(body) == [w["class"]]

    page.close()
    assert not errors, errors
    # everything the page loaded came from the loopback server itself (blob: is the local preview)
    assert any(u.endswith("/openapi.json") for u in requested) and any("/predict" in u for u in requested)
    outside = [u for u in requested
               if not u.startswith("blob:") and urlsplit(u).netloc != f"127.0.0.1:{s.port}"]
    assert not outside, outside
