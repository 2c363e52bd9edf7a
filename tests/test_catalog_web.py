"""The catalog web app, served for real (uvicorn on a free port): the JSON API, the static export,
and a browser test in real Chromium (Debian's /usr/bin/chromium driven by Playwright)."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import uvicorn

from catalog.render import export_static
from catalog.web import CatalogState, create_app
from core.redis_server import free_port
from catalog_support import build_small_catalog

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        snapshot, settings = build_small_catalog(tmp_path_factory.mktemp("catalog-web"), monkeypatch)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(CatalogState(snapshot)), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "catalog server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", snapshot
    server.should_exit = True
    thread.join(timeout=10)


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read().decode()
        return json.loads(body) if response.headers.get_content_type() == "application/json" else body


def test_api_features_search_and_filters(catalog):
    base, _ = catalog
    everything = _get(f"{base}/api/features")
    assert {f["id"] for f in everything} == {"card_spend:spend_1d", "card_spend:txn_count_1d", "card_spend:top_country", "card_limits:credit_limit"}
    hits = _get(f"{base}/api/features?q=spend_1d")
    assert [f["id"] for f in hits] == ["card_spend:spend_1d"]
    hit = hits[0]
    assert hit["owner"] == "cards@example.com" and hit["join_keys"] == ["card_id"] and hit["freshness"] == "fresh"
    assert hit["stats"]["null_rate"] == pytest.approx(0.1) and "histogram" not in hit["stats"]
    assert [f["id"] for f in _get(f"{base}/api/features?service=spend_model_v1&view=card_limits")] == ["card_limits:credit_limit"]
    assert "histogram" in _get(f"{base}/api/features/card_spend/spend_1d")["stats"]


def test_api_views_and_services(catalog):
    base, _ = catalog
    view = _get(f"{base}/api/feature-views/card_spend")
    assert view["owner"] == "cards@example.com" and view["freshness"]["status"] == "fresh"
    assert view["pipeline"]["inputs"] == {"transactions": 1, "users": 0}
    assert view["features"][0]["stats"]["count"] == 600
    service = _get(f"{base}/api/feature-services/spend_model_v1")
    assert sorted(service["feature_refs"]) == ["card_limits:credit_limit", "card_spend:spend_1d", "card_spend:txn_count_1d"]
    assert service["join_keys"] == ["card_id"] and service["models"] == ["spend_mlp"]
    with pytest.raises(urllib.error.HTTPError) as missing:
        _get(f"{base}/api/feature-views/nope")
    assert missing.value.code == 404
    assert "known: card_limits, card_spend" in json.loads(missing.value.read())["detail"]
    lineage = _get(f"{base}/api/lineage")
    assert {"source": "feature_service:spend_model_v1", "target": "model:spend_mlp"} in lineage["edges"]


def test_pages_are_offline_html(catalog):
    base, _ = catalog
    for path in ("/", "/views/card_spend", "/features/card_spend/spend_1d", "/services/spend_model_v1", "/lineage"):
        html = _get(base + path)
        assert html.startswith("<!doctype html>")
        assert not re.search(r"(src|href|url)\s*[=(]\s*[\"']?(https?:)?//", html), path  # nothing fetched from elsewhere
        assert "<link" not in html and "<script src" not in html and "@import" not in html
    assert 'id="histogram"' in _get(f"{base}/features/card_spend/spend_1d")


def test_model_page_shows_versions_aliases_and_links_its_run(catalog):
    base, snapshot = catalog
    model = _get(f"{base}/api/models/spend_mlp")
    [version] = model["versions"]
    html = _get(f"{base}/models/spend_mlp")
    assert f'<a id="run-link" href="{version["run_url"]}">' in html
    assert version["run_url"].startswith("http://127.0.0.1:5000/#/experiments/") and version["run_url"].endswith(version["run_id"])
    assert "champion v1 · 1 versions" in html
    feature = _get(f"{base}/features/card_spend/spend_1d")
    assert '<a href="/models/spend_mlp">spend_mlp</a> <span class="muted small">champion v1 · 1 versions</span>' in feature
    assert "carries no featurestack serving artifact" in _get(f"{base}/models/broken")


def test_static_export(catalog, tmp_path):
    _, snapshot = catalog
    files = export_static(snapshot, tmp_path)
    assert {"index.html", "lineage.html", "view-card_spend.html", "feature-card_spend.spend_1d.html", "service-spend_model_v1.html",
            "model-spend_mlp.html"} <= set(files)
    index = (tmp_path / "index.html").read_text()
    assert 'href="feature-card_spend.spend_1d.html"' in index and "/api/" not in index


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium: apt-get install -y chromium")
def test_browser_search_open_feature_page(catalog, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    base, _ = catalog
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(base + "/")
            rows = page.locator("#features tbody tr")
            expect(rows).to_have_count(4)
            page.fill("#search", "daily spend amount")
            visible = page.locator("#features tbody tr:visible")
            expect(visible).to_have_count(1)
            expect(page.locator("#match-count")).to_contain_text("1 of 4 features")
            visible.get_by_role("link", name="spend_1d").click()
            page.wait_for_url("**/features/card_spend/spend_1d")
            expect(page.locator("#feature-name")).to_contain_text("card_spend:spend_1d")
            expect(page.locator("#owner")).to_have_text("cards@example.com")
            freshness = page.locator("h1 [data-badge=freshness]")
            expect(freshness).to_have_text("freshness: fresh")
            expect(freshness).to_have_class("badge fresh")
            histogram = page.locator("svg#histogram")
            expect(histogram).to_be_visible()
            assert histogram.locator("rect.bar").count() == 20
            assert histogram.bounding_box()["height"] > 100
            page.screenshot(path=str(tmp_path / "catalog-feature.png"), full_page=True)
            assert (tmp_path / "catalog-feature.png").stat().st_size > 10_000
        finally:
            browser.close()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium: apt-get install -y chromium")
def test_browser_ranks_like_the_api_says_why_and_filters_views_and_services(catalog):
    from playwright.sync_api import expect, sync_playwright

    base, _ = catalog
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(base + "/")
            for query in ("spend", "card", "1d", "cards"):
                page.fill("#search", query)
                api = _get(f"{base}/api/features?q={query}")
                shown = page.locator("#features tbody tr:visible")
                expect(shown).to_have_count(len(api))
                assert shown.evaluate_all("rows => rows.map(r => r.dataset.feature)") == [f["id"] for f in api], query
                reasons = shown.locator(".why").all_inner_texts()
                assert reasons == ["; ".join(f["matched"]) for f in api], query
                views = page.locator("#views tbody tr:visible").evaluate_all("rows => rows.map(r => r.cells[0].innerText)")
                assert views == [v["name"] for v in _get(f"{base}/api/feature-views?q={query}")], query
                services = page.locator("#services tbody tr:visible").evaluate_all("rows => rows.map(r => r.cells[0].innerText)")
                assert services == [s["name"] for s in _get(f"{base}/api/feature-services?q={query}")], query
            page.fill("#search", "")
            expect(page.locator("#features tbody tr:visible")).to_have_count(4)
            expect(page.locator("th.why-col")).to_be_hidden()
        finally:
            browser.close()


def test_check_details_render_as_tables_not_json(catalog):
    base, snapshot = catalog
    html = _get(f"{base}/views/card_spend")
    view = next(v for v in snapshot["feature_views"] if v["name"] == "card_spend")
    assert view["validation"]["latest"], "the small catalog has check results"
    assert '<table class="inner meta">' in html and "<details open><summary>details</summary>" in html
    for check in view["validation"]["latest"]:
        for key in check["metadata"]:
            assert f"<th>{key}</th>" in html
    assert '{&quot;' not in html  # no raw JSON dump
