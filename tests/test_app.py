"""The Gradio app (app.py): the form ⇄ recipe mapping, then the app served on 127.0.0.1 and driven in
headless Debian Chromium with Playwright (the `browser` tests).

The browser tests need `apt-get install -y chromium` (the browser at /usr/bin/chromium) and the `playwright`
package; the browser Playwright would download is never used.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RUN_TIMEOUT_MS = 45_000

REPO = Path(__file__).resolve().parent.parent
RECIPES = sorted((REPO / "recipes").glob("*.yaml")) + [REPO / "compressor" / "demo.yaml"]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_a_loaded_recipe_comes_back_from_the_form(path):
    """Recipe YAML → widgets → recipe is the same recipe (the scorer is written out), fields without
    a widget (sft, lora, image_folder, lmms_eval …) included."""
    from app import NAMES, load_yaml, recipe_of, widget_values
    from compressor.recipe import load_recipe

    recipe = load_recipe(path)
    base = load_yaml(path.read_text())[0]
    form = widget_values(recipe)
    got = recipe_of(base, tuple(form[n] for n in NAMES)).model_dump()
    want = recipe.model_dump()
    want["prune"]["scorer"] = recipe.prune.scorer_name
    assert got == want


def test_results_show_scores_card_body_and_url(tmp_path):
    from app import results
    from compressor.evaluate.report import EvalReport, Score, TaskResult

    task = TaskResult.build({"accuracy": Score.of(0.8, 0.6, True, True)}, name="vqa", task="vqa", samples=4)
    report = EvalReport(original="a", compressed="b", device="cpu", dtype="float32", tasks=[task])
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "eval.json").write_text(report.model_dump_json())
    (tmp_path / "pruned").mkdir()
    (tmp_path / "pruned" / "README.md").write_text("---\nlicense: mit\n---\n# the card\n")
    url = "http://hub/alice/m"
    scores, card, link = results({"run_dir": str(tmp_path), "model": str(tmp_path / "pruned"), "url": url})
    assert "vqa (4)" in scores and "75.0%" in scores
    assert card == "# the card\n"
    assert url in link


# ---------------------------------------------------------------------------- in the browser

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # reported by the `browser` fixture as a failure with the fix
    expect = sync_playwright = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def app_url(runs_dir):
    from app import build_app

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COMPRESSOR_RUNS", str(runs_dir))
        demo = build_app().queue()
        port = _free_port()
        demo.launch(
            server_name="127.0.0.1",
            server_port=port,
            prevent_thread_lock=True,
            quiet=True,
            run_history=False,
            ssr_mode=False,
        )
        yield f"http://127.0.0.1:{port}/"
        demo.close()


@pytest.fixture(scope="module")
def browser():
    if sync_playwright is None or not os.path.exists(CHROMIUM):  # `make test` installs both: fail, never skip
        pytest.fail(
            f"the browser tests need the playwright package and {CHROMIUM}: run `make browser` "
            "(apt-get install -y chromium chromium-driver) and pip install the dev extra"
        )
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, app_url):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url)
    expect(page.locator("#plan")).to_be_visible(timeout=20_000)
    yield page
    page.close()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from compressor.tiny import save_family

    return save_family("llava", tmp_path_factory.mktemp("app-model") / "m")


def field(page, name: str):
    """The text input of the widget with elem_id `w-NAME`."""
    return page.locator(f"#w-{name}").locator("textarea, input").first


def set_ratio(page, ratio: float) -> None:
    box = page.locator("#w-ratio input[type=number]")
    box.fill(str(ratio))
    box.press("Enter")


def pick_scorer(page, scorer: str) -> None:
    field(page, "scorer").click()
    page.get_by_role("option", name=scorer, exact=True).click()


def yaml_view(page):
    return page.locator("#yaml-view .cm-content")


@pytest.mark.browser
def test_plan_preview_shows_widths(page, tiny_model):
    field(page, "source").fill(str(tiny_model))
    page.locator("#w-method").get_by_text("width", exact=True).click()
    set_ratio(page, 0.3)
    page.locator("#plan").click()
    plan = page.locator("#plan-out")
    expect(plan).to_contain_text("KV groups", timeout=20_000)
    expect(plan).to_contain_text("MLP intermediate")
    expect(plan).to_contain_text("128 -> 64")
    expect(page.locator("#status")).to_contain_text("Plan ready")


@pytest.mark.browser
def test_plan_error_names_the_folder(page, tmp_path):
    missing = tmp_path / "no-such-model"
    field(page, "source").fill(str(missing))
    page.locator("#plan").click()
    status = page.locator("#status")
    expect(status).to_contain_text(f"{missing} is not a folder", timeout=20_000)
    expect(status).not_to_contain_text("Traceback")


@pytest.mark.browser
def test_run_depth_last_shows_the_card(page, tiny_model, runs_dir, tmp_path, hub_server):
    """hub_server: the card stage validates the card's metadata with the (embedded) Hub."""
    from compressor.demo import write_dataset

    data = write_dataset(tmp_path / "calib", n=12)
    field(page, "source").fill(str(tiny_model))
    page.locator("#w-method").get_by_text("depth", exact=True).click()
    pick_scorer(page, "last")
    set_ratio(page, 0.3)
    field(page, "calibration").fill(str(data))
    expect(yaml_view(page)).to_contain_text("scorer: last")
    page.locator("#run").click()
    status = page.locator("#status")
    expect(status).to_contain_text(re.compile("Run finished|Error"), timeout=RUN_TIMEOUT_MS)
    expect(status).to_contain_text("Run finished.", timeout=1)
    expect(page.locator("#stage-log textarea")).to_have_value(re.compile(r"\[card\] done"))
    page.get_by_role("tab", name="Model card").click()
    expect(page.locator("#card")).to_contain_text("What was removed")
    page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
    assert any(runs_dir.iterdir()), "the run folder goes under COMPRESSOR_RUNS"


PASTED = """\
model:
  source: acme/some-llava
  revision: v1
prune:
  method: depth
  ratio: 0.6
  scorer: angular
  contiguous: true
  calibration:
    dataset: acme/calib
    num_samples: 20
publish:
  repo_id: alice/some-llava-depth60
"""


@pytest.mark.browser
def test_yaml_follows_the_form_and_fills_it(page):
    field(page, "source").fill("acme/other")
    set_ratio(page, 0.45)
    expect(yaml_view(page)).to_contain_text("ratio: 0.45")
    set_ratio(page, 0.2)
    expect(yaml_view(page)).to_contain_text("ratio: 0.2")

    page.locator("#paste textarea").fill(PASTED)
    page.locator("#load").click()
    expect(page.locator("#status")).to_contain_text("Recipe loaded")
    expect(field(page, "source")).to_have_value("acme/some-llava")
    expect(field(page, "revision")).to_have_value("v1")
    expect(page.locator("#w-ratio input[type=number]")).to_have_value("0.6")
    expect(page.locator("#w-method").get_by_label("depth")).to_be_checked()
    expect(field(page, "scorer")).to_have_value("angular")
    expect(field(page, "calibration")).to_have_value("acme/calib")
    expect(field(page, "repo_id")).to_have_value("alice/some-llava-depth60")
    # a field without a widget (contiguous) survives into the recipe the form makes
    expect(yaml_view(page)).to_contain_text("contiguous: true")
    expect(yaml_view(page)).to_contain_text("repo_id: alice/some-llava-depth60")


@pytest.mark.browser
def test_uploading_a_recipe_fills_recovery_and_keeps_the_rest(page):
    path = REPO / "recipes" / "llava-1.5-7b-depth15-projector.yaml"
    with page.expect_file_chooser() as chooser:
        page.locator("#upload").click()
    chooser.value.set_files(str(path))
    expect(page.locator("#status")).to_contain_text("Recipe loaded", timeout=20_000)
    expect(page.locator("#w-recover_on input")).to_be_checked()
    expect(page.locator("#w-mode").get_by_label("projector")).to_be_checked()
    expect(field(page, "train_data")).to_have_value("data/llava_v1_5_mix665k.json")
    expect(page.locator("#w-tasks")).to_contain_text("lmms-lab/textvqa")
    for kept in ("image_folder: data/llava-images", "learning_rate: 0.001", "lmms_eval:"):
        expect(yaml_view(page)).to_contain_text(kept)


@pytest.mark.browser
def test_pasting_a_bad_recipe_says_where(page):
    page.locator("#paste textarea").fill(
        "model:\n  source: x\nprune:\n  method: width\n  ratio: 0.3\n  scorr: t\n"
    )
    page.locator("#load").click()
    expect(page.locator("#status")).to_contain_text("prune.scorr: unknown key")
