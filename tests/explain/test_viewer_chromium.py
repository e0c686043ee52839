"""The HTML head view in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``
driven by selenium): hover and click tokens, switch head and layer, and read what is drawn.

Skipped, with the reason shown, only where Chromium or selenium is not installed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from attnkit.explain import write_viewer

CHROMIUM = os.environ.get("ATTNKIT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ATTNKIT_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1100,800",
]
TOKENS = ["[CLS]", "The", "cat", "</script>", "<b>bold</b>", "a & b", "it", "[SEP]"]
MIN_WEIGHT = 0.01

LINES_JS = """
return Array.from(document.querySelectorAll('line.attn-line')).map(l => ({
  query: Number(l.dataset.query), key: Number(l.dataset.key), head: Number(l.dataset.head),
  weight: Number(l.dataset.weight), opacity: Number(l.getAttribute('stroke-opacity'))}));
"""


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install selenium)"
    )
    from selenium.webdriver.chrome.service import Service

    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        pytest.skip(
            f"Chromium not installed ({', '.join(missing)} missing): "
            "apt-get install -y chromium chromium-driver"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield browser
    finally:
        browser.quit()


def attention() -> torch.Tensor:
    """(layers=2, heads=3, L, L) with one clear favourite key per query and head."""
    g = torch.Generator().manual_seed(7)
    attn = torch.softmax(3 * torch.randn(2, 3, len(TOKENS), len(TOKENS), generator=g), dim=-1)
    top2 = attn.topk(2, dim=-1).values
    assert bool((top2[..., 0] - top2[..., 1] > 1e-3).all())  # the argmax is unambiguous
    return attn


def open_page(driver, path: Path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(path.as_uri())
    WebDriverWait(driver, 10).until(lambda d: d.execute_script("return !!window.attnkitState"))


def token(driver, side: str, index: int):
    from selenium.webdriver.common.by import By

    return driver.find_element(
        By.CSS_SELECTOR, f'g.token[data-side="{side}"][data-index="{index}"]'
    )


def hover(driver, element) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).move_to_element(element).perform()


def choose(driver, select_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, select_id)).select_by_value(value)


def check_outgoing(lines: list[dict], weights: np.ndarray, query: int, heads: list[int]) -> None:
    """The lines are exactly query's weights ≥ MIN_WEIGHT in these heads (weights (H, Lq, Lk)),
    and in each head the strongest line goes to the key with the largest weight."""
    assert lines, "no lines drawn"
    assert {d["query"] for d in lines} == {query}
    assert {d["head"] for d in lines} == set(heads)
    for h in heads:
        row = weights[h, query]
        drawn = {d["key"]: d["weight"] for d in lines if d["head"] == h}
        assert set(drawn) == {j for j in range(len(row)) if row[j] >= MIN_WEIGHT}
        for j, w in drawn.items():
            assert abs(w - row[j]) < 1e-4
        assert max(drawn, key=drawn.get) == int(row.argmax())
        strongest = max((d for d in lines if d["head"] == h), key=lambda d: d["opacity"])
        assert strongest["key"] == int(row.argmax())  # drawn most opaque, too


def test_head_view_in_chromium(driver, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    attn = attention()
    weights = attn.numpy()
    page = write_viewer(
        {"enc.0": attn[0], "enc.1": attn[1]},
        tmp_path / "view.html",
        tokens=TOKENS,
        title="attnkit <test> & co",
        min_weight=MIN_WEIGHT,
    )
    open_page(driver, page)
    assert driver.title == "attnkit <test> & co"
    assert driver.find_elements(By.TAG_NAME, "b") == []  # "<b>bold</b>" stayed text
    queries = driver.find_elements(By.CSS_SELECTOR, 'g.token[data-side="query"]')
    assert [q.get_attribute("data-token") for q in queries] == TOKENS
    assert [q.find_element(By.TAG_NAME, "text").text for q in queries] == TOKENS

    # overview: every query's lines in all heads
    state = driver.execute_script("return window.attnkitState")
    assert state["head"] == "all" and state["focus"] is None
    overview = driver.execute_script(LINES_JS)
    assert len({d["query"] for d in overview}) == len(TOKENS)

    # one head, hover "it": only its lines, strongest to its largest weight
    choose(driver, "head", "1")
    hover(driver, token(driver, "query", 6))
    state = driver.execute_script("return window.attnkitState")
    assert state["focus"] == {"side": "query", "index": 6} and state["head"] == 1
    check_outgoing(driver.execute_script(LINES_JS), weights[0], 6, [1])

    # another token: the drawing follows
    hover(driver, token(driver, "query", 3))
    check_outgoing(driver.execute_script(LINES_JS), weights[0], 3, [1])

    # click pins a token; the lines stay when the mouse leaves and follow layer/head changes
    token(driver, "query", 2).click()
    hover(driver, driver.find_element(By.ID, "title"))
    state = driver.execute_script("return window.attnkitState")
    assert state["pinned"] == {"side": "query", "index": 2} and state["focus"] == state["pinned"]
    check_outgoing(driver.execute_script(LINES_JS), weights[0], 2, [1])
    choose(driver, "layer", "1")
    assert driver.execute_script("return window.attnkitState.layerName") == "enc.1"
    check_outgoing(driver.execute_script(LINES_JS), weights[1], 2, [1])
    choose(driver, "head", "0")
    check_outgoing(driver.execute_script(LINES_JS), weights[1], 2, [0])
    choose(driver, "head", "all")
    check_outgoing(driver.execute_script(LINES_JS), weights[1], 2, [0, 1, 2])
    details = driver.find_element(By.ID, "details").text
    assert details.startswith("cat attends most to (mean of 3 heads): ")
    best = int(weights[1, :, 2].mean(0).argmax())
    assert details.split(": ", 1)[1].startswith(TOKENS[best])

    # hovering a key shows who attends to it: lines from every query into that key
    hover(driver, token(driver, "key", 4))
    incoming = driver.execute_script(LINES_JS)
    assert {d["key"] for d in incoming} == {4}
    for h in range(3):
        column = {d["query"]: d["weight"] for d in incoming if d["head"] == h}
        assert max(column, key=column.get) == int(weights[1, h, :, 4].argmax())

    # a legend swatch hides a head in "all heads"
    hover(driver, driver.find_element(By.ID, "title"))
    driver.find_element(By.CSS_SELECTOR, '.swatch[data-head="1"]').click()
    check_outgoing(driver.execute_script(LINES_JS), weights[1], 2, [0, 2])

    shot = tmp_path / "viewer.png"
    assert driver.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000
    print(f"viewer screenshot: {shot}")
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def test_cross_attention_view_in_chromium(driver, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    source, target = (
        ["drei", "hundert", "vier", "und", "zwanzig"],
        ["three", "hundred", "twenty", "four"],
    )
    g = torch.Generator().manual_seed(3)
    attn = torch.softmax(4 * torch.randn(1, 2, 4, 5, generator=g), dim=-1)  # (N, H, Lt, Ls)
    page = write_viewer(
        attn, tmp_path / "cross.html", tokens=target, key_tokens=source, min_weight=MIN_WEIGHT
    )
    open_page(driver, page)
    keys = driver.find_elements(By.CSS_SELECTOR, 'g.token[data-side="key"]')
    assert [k.get_attribute("data-token") for k in keys] == source
    choose(driver, "head", "1")
    hover(driver, token(driver, "query", 2))
    check_outgoing(driver.execute_script(LINES_JS), attn[0].numpy(), 2, [1])
    assert driver.save_screenshot(str(tmp_path / "cross.png"))
    print(f"cross-attention screenshot: {tmp_path / 'cross.png'}")


def test_key_totals_strip_in_chromium(driver, tmp_path: Path) -> None:
    """A key-totals layer shades each key token by its total relative to the strongest key (of
    the mean over the heads shown): the strongest key is the darkest, and no lines are drawn."""
    from selenium.webdriver.common.by import By

    from attnkit.explain.viewer import KeyTotals

    weights = attention()[0]  # (H, L, L)
    totals = weights.sum(dim=1)  # (H, Lk): what each key received from all the queries
    page = write_viewer({"totals": KeyTotals(totals)}, tmp_path / "totals.html", tokens=TOKENS)
    open_page(driver, page)
    for head, shown in (("all", totals.mean(dim=0)), ("1", totals[1])):
        choose(driver, "head", head)
        keys = driver.find_elements(By.CSS_SELECTOR, 'g.token[data-side="key"]')
        shades = np.array([float(k.get_attribute("data-shade")) for k in keys])
        np.testing.assert_allclose(shades, (shown / shown.max()).numpy(), atol=1e-3)
        assert int(shades.argmax()) == int(shown.argmax())
        state = driver.execute_script("return window.attnkitState")
        np.testing.assert_allclose(state["keyTotals"], shown.numpy(), atol=1e-3)
        assert driver.execute_script(LINES_JS) == []
    details = driver.find_element(By.ID, "details").text
    assert details.startswith("Attention received in total")
    assert driver.save_screenshot(str(tmp_path / "totals.png"))
