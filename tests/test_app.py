"""The Gradio app (app.py): the form ⇄ recipe mapping, then the app served on 127.0.0.1 and driven in
headless Debian Chromium with Playwright (the `browser` tests).

The browser tests need `apt-get install -y chromium` (the browser at /usr/bin/chromium) and the `playwright`
package; the browser Playwright would download is never used.
"""

from __future__ import annotations

import json
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
RUN_TIMEOUT_MS = 90_000  # a run's child process starts (imports torch) before its first stage

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


def test_the_jobs_flavour_suggestion_sizes_auto_recovery_for_jobs_hardware(tmp_path):
    """With the Jobs option on, the flavour the page suggests for LLaVA-1.5-7B at 30 % with recover.mode auto is
    the one full training fits (h200), and its note says auto recovery will train in full there, as
    `jobs.resolve_flavor` does; planning for this machine would have chosen LoRA and an L40S."""
    from app import NAMES, load_yaml, widget_values
    from compressor.app.jobs_view import flavor_suggestion
    from compressor.recipe import dump_recipe, parse_recipe
    from tests import real_shapes

    (tmp_path / "config.json").write_text(json.dumps(real_shapes.llava_1_5_7b()))
    recipe = parse_recipe(
        {"model": {"source": str(tmp_path)}, "prune": {"method": "depth", "ratio": 0.3}, "recover": {}}, "t"
    )
    assert recipe.recover.mode == "auto"
    form = widget_values(recipe)
    update = flavor_suggestion(True, None, load_yaml(dump_recipe(recipe))[0], *(form[n] for n in NAMES))
    assert update["value"] == "h200", update
    assert (
        update["info"].startswith("Suggested for this plan: h200")
        and "recovery auto: full on Jobs" in update["info"]
    )


def test_the_export_option_makes_and_loads_the_recipes_export_section():
    """The "Export to GGUF" checkbox and its types ⇄ export.gguf: ticked, the form's recipe exports the ticked
    types (a GGUF repo_id the form has no widget for is kept); unticked, it exports nothing; a recipe with an
    export section fills them in; and the stage board lists export, "not in this recipe" without one."""
    from app import NAMES, Board, load_yaml, recipe_of, widget_values
    from compressor.recipe import parse_recipe

    plain = parse_recipe({"model": {"source": "x"}, "prune": {"method": "depth", "ratio": 0.3}}, "t")
    form = widget_values(plain)
    assert (form["export_on"], form["quants"]) == (False, ["f16", "q8_0"])  # the recipe's default types
    assert recipe_of({}, tuple({**form, "quants": ["f16"]}[n] for n in NAMES)).export is None
    ticked = recipe_of({}, tuple({**form, "export_on": True, "quants": ["f16", "q4_k_m"]}[n] for n in NAMES))
    assert ticked.export.gguf.quants == ("f16", "q4_k_m")

    text = "model: {source: x}\nprune: {method: depth, ratio: 0.3}\nexport: {gguf: {quants: [q8_0], repo_id: a/b}}\n"
    base = load_yaml(text)[0]
    loaded = widget_values(parse_recipe(base, "t"))
    assert (loaded["export_on"], loaded["quants"]) == (True, ["q8_0"])
    again = recipe_of(base, tuple({**loaded, "quants": ["f16", "q8_0"]}[n] for n in NAMES))
    assert again.export.gguf.quants == ("f16", "q8_0") and again.export.gguf.repo_id == "a/b"
    assert recipe_of(base, tuple({**loaded, "export_on": False}[n] for n in NAMES)).export is None

    assert Board(ticked, Path("run")).state["export"] == "waiting"
    assert Board(plain, Path("run")).state["export"] == "not in this recipe"
    assert list(Board(plain, Path("run")).state).index("export") == 4  # after eval, before card


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


def test_form_defaults_are_the_recipe_defaults():
    """round_to (and every default) of a recipe that leaves it out is the recipe's own default in the form."""
    from app import widget_values
    from compressor.recipe import Prune, parse_recipe

    recipe = parse_recipe({"model": {"source": "x"}, "prune": {"method": "width", "ratio": 0.3}}, "t")
    assert widget_values(recipe)["round_to"] == Prune.model_fields["round_to"].default == 64


def test_messages_speak_the_page_not_the_cli():
    from app import error_md, for_page
    from compressor.errors import CompressorError, fill_in, worded
    from compressor.recipe import Calibration, parse_recipe

    said = worded("the Hub rejected the token (401): create one and {ask}", ask="pass_it")
    assert str(said).endswith("create one and pass it with --token or HF_TOKEN")  # the CLI's words
    token = for_page(said)
    assert "--token" not in token and "HF_TOKEN" not in token and "Hub token box" in token
    # a field's words come from the field (its flag for the CLI, its label for the page): nothing is rewritten
    with pytest.raises(CompressorError) as bad:
        parse_recipe({"model": {"source": "x"}, "prune": {"method": "depth", "ratio": 1.5}}, "from the form")
    assert "prune.ratio (--ratio) is 1.5: set --ratio to a number" in str(bad.value)
    ratio = for_page(bad.value)
    assert "--ratio" not in ratio and "“Share of parameters to remove” (prune.ratio) is 1.5" in ratio
    assert "set the field “Share of parameters to remove” to a number" in ratio
    assert fill_in(Calibration, "dataset") == ("pass --calibration DATA", "fill in “Calibration data”")
    shown = error_md("a\nmulti_line *message*")
    assert "```" not in shown and "multi\\_line \\*message\\*" in shown


def test_plan_warnings_are_listed_once(tiny_model):
    from app import plan_md
    from compressor import api
    from compressor.recipe import parse_recipe

    # above 60 % (a warning) and on whole layers of a 2-layer model (the achieved ratio differs: another)
    recipe = parse_recipe(
        {"model": {"source": str(tiny_model)}, "prune": {"method": "depth", "ratio": 0.7}}, "t"
    )
    plan = api.plan(recipe)
    assert len(plan.warnings) >= 1 and "warning: " in plan.table()
    shown = plan_md(plan)
    for warning in plan.warnings:
        assert shown.count(warning.split(":")[0]) == 1, shown


def _form_args(recipe):
    from app import NAMES, widget_values

    v = widget_values(recipe)
    return tuple(v[n] for n in NAMES)


def test_a_failed_run_leaves_no_run_folder_and_says_so_in_page_words(tmp_path, monkeypatch, hub_server):
    """The real pipeline against the embedded Hub: a private repo without a token fails at the plan."""
    from app import on_run
    from compressor.recipe import parse_recipe

    monkeypatch.setenv("COMPRESSOR_RUNS", str(tmp_path / "runs"))
    recipe = parse_recipe(
        {"model": {"source": "alice/no-such-model"}, "prune": {"method": "depth", "ratio": 0.3}}, "t"
    )
    updates = list(
        on_run(
            None,
            recipe.model_dump(mode="json", exclude_unset=True),
            None,
            None,
            None,
            lambda *a, **k: None,
            *_form_args(recipe),
        )
    )
    status = updates[-1][0]
    assert status.startswith("**Error:**") and "alice/no-such-model" in status
    assert "--token" not in status and "HF_TOKEN" not in status and "Hub token box" in status
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_visitors_never_share_a_run_folder(tmp_path, monkeypatch, tiny_saved):
    """The same recipe run from two browser sessions: two folders, each run from scratch; one signed-in user's
    two sessions share theirs (so a run resumes for them, and for no one else)."""
    import gradio as gr

    from app import on_run
    from compressor.recipe import parse_recipe

    monkeypatch.setenv("COMPRESSOR_RUNS", str(tmp_path / "runs"))
    recipe = parse_recipe(
        {
            "model": {"source": str(tiny_saved("llava"))},
            "prune": {"method": "depth", "ratio": 0.3, "scorer": "last"},
        },
        "t",
    )
    base = recipe.model_dump(mode="json", exclude_unset=True)

    def run(session: str, user: str | None = None) -> str:
        info = {"preferred_username": user, "name": user, "profile": "", "picture": ""}
        profile = gr.OAuthProfile(info) if user else None
        request = gr.Request(session_hash=session)
        updates = list(on_run(None, base, None, profile, request, lambda *a, **k: None, *_form_args(recipe)))
        assert updates[-1][0].startswith("Run finished"), updates[-1][0]
        return updates[-1][2]  # the stage log

    assert "skip" not in run("visitor-a")
    assert "skip" not in run("visitor-b")  # not visitor a's finished run
    folders = sorted(
        p.relative_to(tmp_path / "runs").parts[0] for p in (tmp_path / "runs").glob("*/*/plan.json")
    )
    assert folders == ["session-visitor-a", "session-visitor-b"]
    assert "skip" not in run("tab-1", user="alice")
    assert "prune: skip" in run("tab-2", user="alice").replace("[prune] skip", "prune: skip")
    assert (tmp_path / "runs" / "user-alice").is_dir()


def test_the_suggested_repo_is_the_users():
    from app import suggest_repo

    assert suggest_repo("alice", "demo/tiny-llava", "width", 0.3) == "alice/tiny-llava-width30"
    assert (
        suggest_repo("alice", "/data/models/llava-1.5-7b-hf/", "depth", 0.15)
        == "alice/llava-1.5-7b-hf-depth15"
    )
    assert suggest_repo(None, "demo/tiny-llava", "width", 0.3) is None


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
def app_url(runs_dir, embedded_default):
    """The app on the test Hub that serves the embedded default; this machine's saved Hub user is alice,
    so Gradio's local login stand-in signs in as alice."""
    from app import build_app, launch_options
    from tests.fixtures_hub import ALICE_WRITE

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COMPRESSOR_RUNS", str(runs_dir))
        mp.setenv("HF_TOKEN", ALICE_WRITE)
        demo = build_app().queue()
        port = _free_port()
        demo.launch(
            server_name="127.0.0.1",
            server_port=port,
            prevent_thread_lock=True,
            quiet=True,
            ssr_mode=False,
            **launch_options(),
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
    field(page, "round_to").fill("64")  # the recipe default (the embedded default's preset has 16)
    field(page, "round_to").press("Enter")
    expect(yaml_view(page)).to_contain_text("round_to: 64")
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


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Where the screenshots go: COMPRESSOR_SCREENSHOTS to keep them, else the test's temporary folder."""
    folder = Path(os.environ.get("COMPRESSOR_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def not_cut_off(locator) -> bool:
    """No element inside scrolls sideways: the text wraps instead of being hidden on the right."""
    return locator.evaluate(
        "el => [el, ...el.querySelectorAll('*')].every(e => e.scrollWidth <= e.clientWidth + 1 || "
        "getComputedStyle(e).overflowX === 'visible')"
    )


@pytest.mark.browser
def test_first_view_is_the_embedded_default_with_plain_labels(page, tiny_model, shots):
    """No error on arrival: the form holds the embedded default (a valid recipe), labels are words with
    the recipe key in the help; an out-of-range ratio is a clear message, never a clamp; errors wrap."""
    expect(page.locator("#preset input")).to_have_value(re.compile("Embedded default"))
    expect(field(page, "source")).to_have_value("demo/tiny-llava")
    expect(yaml_view(page)).to_contain_text("source: demo/tiny-llava")
    expect(yaml_view(page)).not_to_contain_text("invalid recipe")
    expect(page.locator("#form-check")).not_to_contain_text("Check the form")
    expect(field(page, "round_to")).to_have_value("16")  # the preset's; the recipe default (64) without one
    expect(page.get_by_text("Share of parameters to remove", exact=True)).to_be_visible()
    expect(page.get_by_text("recipe: prune.ratio", exact=False)).to_be_visible()
    expect(page.locator("body")).not_to_contain_text("prune.calibration.num_samples (0")
    page.screenshot(path=str(shots / "first-view.png"))

    set_ratio(page, 1.5)
    check = page.locator("#form-check")
    expect(check).to_contain_text("“Share of parameters to remove” (prune.ratio) is 1.5")
    expect(page.locator("#w-ratio input[type=number]")).to_have_value("1.5")  # not clamped to 0.99
    page.locator("#plan").click()
    status = page.locator("#status")
    expect(status).to_contain_text("prune.ratio", timeout=20_000)
    expect(status).not_to_contain_text("--ratio")
    expect(page.locator("body")).not_to_contain_text("Traceback")

    set_ratio(page, 0.3)
    field(page, "source").fill("alice/" + "a-private-or-missing-model-with-a-long-name" * 2)
    page.locator("#plan").click()
    expect(status).to_contain_text("was not found or is not visible to you", timeout=20_000)
    assert not_cut_off(status), "the error wraps in the page"
    page.screenshot(path=str(shots / "error.png"))


@pytest.mark.browser
def test_signed_in_run_of_the_embedded_default_shows_steps_and_the_pushed_link(page, runs_dir, shots):
    """Sign in (Gradio's local stand-in: alice of the test Hub), the output repo becomes alice's; Run is
    disabled while the run goes, the board shows each stage and the training steps with their losses,
    the pushed link comes at the end, and no server path reaches the page."""
    page.locator("#login").click()
    expect(page.locator("#signed-in")).to_contain_text("Signed in as alice", timeout=20_000)
    expect(field(page, "repo_id")).to_have_value("alice/tiny-llava-width30")
    page.locator("#w-max_steps input").fill("12")  # the preset logs every 10 steps
    page.locator("#w-max_steps input").press("Enter")
    page.locator("#w-eval_on input").uncheck()  # the eval table has its own test; this keeps the run short
    expect(yaml_view(page)).to_contain_text("max_steps: 12")
    page.locator("#run").click()
    expect(page.locator("#run")).to_be_disabled(timeout=5_000)
    expect(page.locator("#cancel")).to_be_enabled()
    board = page.locator("#stage-board")
    expect(board.locator("tr[data-stage=recover][data-state=running]")).to_be_visible(timeout=RUN_TIMEOUT_MS)
    # the pictures of the finished prune stage appear while recovery runs
    plots = page.locator("#plots")
    expect(plots).to_contain_text("Kept widths per layer", timeout=RUN_TIMEOUT_MS)
    expect(plots).to_contain_text("Layer importance")
    log = page.locator("#stage-log textarea")
    expect(log).to_have_value(re.compile(r"step 10/12: loss [\d.]+.*loss_ce [\d.]+"), timeout=RUN_TIMEOUT_MS)
    page.screenshot(path=str(shots / "run-progress.png"), full_page=True)
    status = page.locator("#status")
    expect(status).to_contain_text(re.compile("Run finished|Error"), timeout=2 * RUN_TIMEOUT_MS)
    expect(status).to_contain_text("Run finished", timeout=1)
    expect(page.locator("#url")).to_contain_text("alice/tiny-llava-width30")
    expect(page.locator("#run")).to_be_enabled()
    expect(page.locator("#cancel")).to_be_disabled()
    expect(board.locator("tr[data-stage=push][data-state=done]")).to_be_visible()
    expect(plots).to_contain_text("Recovery losses", timeout=10_000)  # no eval in this run: no scores
    expect(plots.locator("img").first).to_be_visible()
    assert plots.locator("img").evaluate_all("imgs => imgs.every(i => i.complete && i.naturalWidth > 100)")
    # the Stages box follows its last line
    assert log.evaluate("el => el.scrollHeight - el.scrollTop - el.clientHeight < 4")
    text = page.locator("body").inner_text() + log.input_value()
    assert str(runs_dir) not in text and str(runs_dir.resolve()) not in text
    page.screenshot(path=str(shots / "run-done.png"), full_page=True)
    # docs/app-run.png: the page's results column at the run's end (stages, log, link, plots)
    page.locator("#results-col").screenshot(path=str(shots / "app-run.png"))
    page.get_by_role("tab", name="Model card").click()
    expect(page.locator("#card")).to_contain_text("What was removed")


def run_pid(runs: Path, timeout: float = 60) -> int:
    """The pid of the run going now, from the lock its process holds in its run folder (`pid N`)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for lock in runs.glob("*/*/.lock"):
            text = lock.read_text().strip()
            if text.startswith("pid ") and Path(f"/proc/{text.split()[1]}").exists():
                return int(text.split()[1])
        time.sleep(0.2)
    pytest.fail(f"no run holds a lock in {runs} after {timeout:.0f} s")


def process_ends(pid: int, timeout: float = 30) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.browser
def test_cancel_stops_a_run_and_keeps_it_resumable(page, runs_dir, shots):
    page.locator("#w-max_steps input").fill("500")
    page.locator("#w-max_steps input").press("Enter")
    page.locator("#w-eval_on input").uncheck()
    field(page, "repo_id").fill("")
    expect(yaml_view(page)).to_contain_text("max_steps: 500")
    expect(yaml_view(page)).not_to_contain_text("publish:")
    page.locator("#run").click()
    log = page.locator("#stage-log textarea")
    expect(log).to_have_value(re.compile(r"\[recover\] start"), timeout=RUN_TIMEOUT_MS)
    pid = run_pid(runs_dir)
    page.locator("#cancel").click()
    status = page.locator("#status")
    expect(status).to_contain_text("Run cancelled", timeout=RUN_TIMEOUT_MS)
    expect(status).to_contain_text("Run resumes after them")
    expect(page.locator("#run")).to_be_enabled()
    assert process_ends(pid), "Cancel ended the run's process"
    page.screenshot(path=str(shots / "cancelled.png"), full_page=True)
    # the visitor's own folder (runs/session-… or runs/user-…) holds the run
    folders = [p for p in runs_dir.glob("*/*") if (p / "reports" / "prune.json").is_file()]
    assert any(not (p / "reports" / "recover.json").exists() for p in folders), (
        "pruned, not trained: resumable"
    )


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
def test_the_export_option_in_the_page(page, monkeypatch, tmp_path):
    """A pasted recipe with export.gguf ticks "Export to GGUF" and its types; unticking drops the section from the
    recipe, ticking q4_k_m adds it; with no llama-quantize on this server, the form check and Plan say the
    export's one-line refusal (the plan still shown), and nothing crashes."""
    monkeypatch.setenv("LLAMA_CPP_BIN", str(tmp_path))  # a folder without llama-quantize (the app runs here)
    page.locator("#paste textarea").fill(
        "model: {source: demo/tiny-llava}\nprune: {method: depth, ratio: 0.3, scorer: last}\n"
        "export: {gguf: {quants: [q8_0]}}\n"
    )
    page.locator("#load").click()
    expect(page.locator("#status")).to_contain_text("Recipe loaded")
    export_on, quants = page.locator("#w-export_on input"), page.locator("#w-quants")
    expect(export_on).to_be_checked()
    expect(quants.get_by_label("q8_0", exact=True)).to_be_checked()
    expect(quants.get_by_label("f16", exact=True)).not_to_be_checked()
    expect(yaml_view(page)).to_contain_text("quants:")
    export_on.uncheck()
    expect(quants).to_be_hidden()
    expect(yaml_view(page)).not_to_contain_text("export:")
    export_on.check()
    quants.get_by_label("q4_k_m", exact=True).check()
    expect(yaml_view(page)).to_contain_text("- q4_k_m")
    check = page.locator("#form-check")
    expect(check).to_contain_text("“GGUF types” (export.gguf.quants): quant q4_k_m needs llama-quantize")
    page.locator("#plan").click()
    status = page.locator("#status")
    expect(status).to_contain_text("quant q4_k_m needs llama-quantize", timeout=20_000)
    expect(status).to_contain_text("or ask only for f16/q8_0")
    expect(page.locator("#plan-out")).to_contain_text("6 -> 4")
    quants.get_by_label("q4_k_m", exact=True).uncheck()
    expect(check).not_to_contain_text("llama-quantize")


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
def test_pasting_a_bad_recipe_says_where(page, shots):
    page.locator("#paste textarea").fill(
        "model:\n  source: x\nprune:\n  method: width\n  ratio: 0.3\n  scorr: t\n"
    )
    page.locator("#load").click()
    expect(page.locator("#status")).to_contain_text("prune.scorr: unknown key")
    expect(page.locator("#status")).not_to_contain_text("Traceback")
    page.screenshot(path=str(shots / "bad-recipe.png"), full_page=True)


@pytest.mark.browser
def test_plan_preview_lists_its_warnings_and_the_hardware(page, shots):
    """The embedded default at 55 %: the plan table, its warnings once each as a list, and the memory estimate
    with the Jobs flavour that fits, which the Jobs option then suggests."""
    set_ratio(page, 0.55)
    expect(yaml_view(page)).to_contain_text("ratio: 0.55")
    page.locator("#plan").click()
    plan = page.locator("#plan-out")
    expect(plan).to_contain_text("Warnings", timeout=20_000)
    expect(plan.locator("li").first).to_contain_text("⚠")
    expect(page.locator("#status")).to_contain_text("Plan ready")
    page.locator("#on-jobs input").check()
    flavor = page.locator("#flavor")
    expect(flavor).to_contain_text("Suggested for this plan: cpu-basic", timeout=20_000)
    expect(page.locator("#flavor input")).to_have_value("cpu-basic")
    expect(page.locator("#submit-job")).to_be_visible()
    expect(page.locator("#run")).to_be_hidden()
    page.screenshot(path=str(shots / "plan-warnings.png"), full_page=True)


@pytest.mark.browser
def test_a_second_visitor_waits_in_line_and_the_first_leaving_stops_their_run(
    browser, app_url, runs_dir, shots
):
    """One run at a time: the second page is told "2nd in line"; the first visitor closes their page, which
    ends their run's process, and the second's run starts; its Cancel stops it."""
    first, second = (browser.new_page(viewport={"width": 1400, "height": 1000}) for _ in range(2))
    try:
        for p in (first, second):
            p.goto(app_url)
            expect(p.locator("#plan")).to_be_visible(timeout=20_000)
            p.locator("#w-max_steps input").fill("400")
            p.locator("#w-max_steps input").press("Enter")
            p.locator("#w-eval_on input").uncheck()
            field(p, "repo_id").fill("")
            expect(yaml_view(p)).not_to_contain_text("publish:")
        first.locator("#run").click()
        expect(first.locator("#stage-log textarea")).to_have_value(
            re.compile(r"\[prune\]"), timeout=RUN_TIMEOUT_MS
        )
        pid = run_pid(runs_dir)
        second.locator("#run").click()
        expect(second.locator("#status")).to_contain_text("2nd in line", timeout=20_000)
        second.screenshot(path=str(shots / "queue.png"), full_page=True)
        first.close()  # the visitor leaves: their run stops
        assert process_ends(pid, timeout=60), "leaving the page ended the run's process"
        expect(second.locator("#status")).to_contain_text("Running", timeout=30_000)
        expect(second.locator("#stage-log textarea")).to_have_value(
            re.compile(r"\[prune\]"), timeout=RUN_TIMEOUT_MS
        )
        second.locator("#cancel").click()
        expect(second.locator("#status")).to_contain_text("Run cancelled", timeout=RUN_TIMEOUT_MS)
    finally:
        for p in (first, second):
            if not p.is_closed():
                p.close()


@pytest.mark.browser
def test_a_signed_in_run_on_hugging_face_jobs_ends_with_the_pushed_link(page, shots):
    """Sign in, tick "Run on Hugging Face Jobs": the flavour is the plan's suggestion; the job (the embedded Hub
    runs it here) shows its stage and its logs as they come, and the pushed model's link at the end."""
    page.locator("#login").click()
    expect(page.locator("#signed-in")).to_contain_text("Signed in as alice", timeout=20_000)
    page.locator("#w-max_steps input").fill("12")
    page.locator("#w-max_steps input").press("Enter")
    page.locator("#w-eval_on input").uncheck()
    field(page, "repo_id").fill("alice/tiny-llava-jobs")
    expect(yaml_view(page)).to_contain_text("repo_id: alice/tiny-llava-jobs")
    page.locator("#on-jobs input").check()
    expect(page.locator("#flavor input")).to_have_value("cpu-basic", timeout=20_000)
    page.locator("#submit-job").click()
    board = page.locator("#stage-board")
    expect(board.locator("[data-job-stage=RUNNING]")).to_be_visible(timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#stage-log textarea")).to_have_value(re.compile(r"\S"), timeout=RUN_TIMEOUT_MS)
    page.screenshot(path=str(shots / "jobs-running.png"), full_page=True)
    status = page.locator("#status")
    expect(status).to_contain_text(re.compile("Job finished|Error"), timeout=3 * RUN_TIMEOUT_MS)
    expect(status).to_contain_text("Job finished", timeout=1)
    expect(board.locator("[data-job-stage=COMPLETED]")).to_be_visible()
    expect(page.locator("#url")).to_contain_text("alice/tiny-llava-jobs")
    expect(page.locator("#submit-job")).to_be_enabled()
    page.screenshot(path=str(shots / "jobs-done.png"), full_page=True)


def test_the_line_takes_one_ticket_per_page_and_a_bounded_number_waiting(monkeypatch):
    from app import Line
    from compressor.errors import CompressorError

    monkeypatch.setenv("COMPRESSOR_MAX_WAITING", "2")
    line = Line()
    going, second, third = (line.join(k) for k in ("a", "b", "c"))
    assert [line.place(t) for t in (going, second, third)] == [0, 1, 2]
    with pytest.raises(CompressorError, match="already has a run"):
        line.join("b")
    with pytest.raises(CompressorError, match="2 runs are waiting already"):
        line.join("d")
    assert line.cancel("b") and second.cancel.is_set() and not third.cancel.is_set()
    line.leave(going)
    assert line.place(second) == 0 and line.place(third) == 1
    assert not line.cancel("nobody")
