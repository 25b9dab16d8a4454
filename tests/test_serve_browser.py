"""The search page in a real headless Chromium: upload a drawing, see the top 10, open a patent.

Fails (never skips) when Debian's chromium / chromium-driver are missing, saying how to install them.
"""
from __future__ import annotations

import os
import re

import httpx
import pytest

import retrieval_helpers as rh
from fastreid.retrieval import BuildOptions, Index, TorchExtractor, collect_images
from fastreid.retrieval.server import create_app
import serve_support
from serve_support import ServerThread, chromium_driver

WAIT_S = 60


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve_browser")
    data = rh.make_data(str(tmp / "data"))
    queries = os.path.join(data, "test_data", "codalab_test_set", "queries")
    database = os.path.join(data, "train_data", "patent_data")  # DeepPatent names: real patent ids
    cfg = rh.model_cfg(rh.make_checkpoint(str(tmp / "model.pth"), seed=1))
    index = Index.build(str(tmp / "index"), collect_images(database), TorchExtractor(cfg),
                        BuildOptions.from_config(cfg))
    with ServerThread(create_app(index)) as url:
        yield {"url": url, "index": index, "query": collect_images(queries).paths[0]}


def test_page_uploads_a_drawing_and_opens_a_patent(served, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    with open(served["query"], "rb") as f:
        api = httpx.post(served["url"] + "/api/search", files={"file": ("q.png", f.read(), "image/png")},
                         data={"k": "10"}, timeout=60).json()["results"]
    driver = chromium_driver(str(tmp_path / "profile"))
    try:
        wait = WebDriverWait(driver, WAIT_S)
        driver.get(served["url"] + "/")
        wait.until(lambda d: "drawings indexed" in d.find_element(By.ID, "index-info").text)
        # Before a query: no query image at all (not an empty one showing a broken-image icon).
        assert not driver.find_element(By.ID, "query-preview").is_displayed()
        driver.find_element(By.ID, "file-input").send_keys(os.path.abspath(served["query"]))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result")) == 10)
        cards = driver.find_elements(By.CSS_SELECTOR, "#results .result")
        scores = [c.find_element(By.CLASS_NAME, "score").text for c in cards]
        ranks = [c.find_element(By.CLASS_NAME, "rank").text for c in cards]
        patents = [c.find_element(By.CLASS_NAME, "patent").text for c in cards]
        assert all(re.fullmatch(r"-?\d\.\d{3}", s) for s in scores), scores
        assert scores == [f"{r['score']:.3f}" for r in api]
        assert ranks == [f"#{r['rank']}" for r in api] and patents == [r["patent"] for r in api]
        assert re.search(r"10 results in \d+\.\d ms", driver.find_element(By.ID, "query-time").text)
        wait.until(lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
                                 for img in d.find_elements(By.CSS_SELECTOR, "#results .result img")))

        cards[2].click()
        dialog = wait.until(EC.visibility_of_element_located((By.ID, "patent-dialog")))
        expected = served["index"].items_of_patent(api[2]["patent"])
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#patent-drawings .drawing")) == len(expected))
        items = [d.find_element(By.CLASS_NAME, "item").text
                 for d in driver.find_elements(By.CSS_SELECTOR, "#patent-drawings .drawing")]
        assert items == [f"item {i}" for i in expected]
        assert api[2]["patent"] in driver.find_element(By.ID, "patent-title").text
        shot = tmp_path / "search_page.png"
        assert driver.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        driver.find_element(By.ID, "patent-close").click()
        wait.until(EC.invisibility_of_element(dialog))

        # Grouped by patent: each patent once, ranked by its best drawing, its matching drawings together.
        with open(served["query"], "rb") as f:
            grouped = httpx.post(served["url"] + "/api/search", files={"file": ("q.png", f.read(), "image/png")},
                                 data={"k": "10", "by_patent": "true"}, timeout=60).json()["patents"]
        driver.find_element(By.ID, "by-patent").click()  # the current query is searched again, grouped
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .patent-group")) == 10)
        groups = driver.find_elements(By.CSS_SELECTOR, "#results .patent-group")
        shown = [g.find_element(By.CLASS_NAME, "group-patent").text for g in groups]
        assert shown == [g["patent"] for g in grouped] and len(set(shown)) == 10
        assert [g.find_element(By.CLASS_NAME, "group-score").text for g in groups] == \
            [f"{g['score']:.3f}" for g in grouped]
        assert [len(g.find_elements(By.CSS_SELECTOR, ".result")) for g in groups] == \
            [len(g["drawings"]) for g in grouped]
        assert api[0]["patent"] == shown[0]  # the best drawing's patent leads
        assert driver.find_element(By.ID, "results-title").text == "Closest patents"
        assert re.search(r"10 patents in \d+\.\d ms", driver.find_element(By.ID, "query-time").text)
        assert driver.save_screenshot(str(tmp_path / "search_page_patents.png"))

        not_an_image = tmp_path / "notes.txt"
        not_an_image.write_text("not a drawing\n")
        driver.find_element(By.ID, "file-input").send_keys(str(not_an_image))
        status = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#status.error")))
        assert "Error 400" in status.text and "not an image" in status.text
    finally:
        driver.quit()


def test_missing_browser_fails_with_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(serve_support, "CHROMIUM", str(tmp_path / "no-chromium"))
    with pytest.raises(AssertionError, match=r"apt-get install -y chromium chromium-driver"):
        serve_support.chromium_driver(str(tmp_path / "profile"))
