"""`selfsup report`: one HTML page and its PNG figures, written at the end of `selfsup train` too."""

from __future__ import annotations

import base64
import html.parser
import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from toolkit import hookimpl
from toolkit.cli import main
from toolkit.reporting import render_generic, write_report

from helpers import kill_at, make_trainer, run_cli

pytest.importorskip("matplotlib", reason="the report needs matplotlib (pip install selfsup-toolkit[report])")
pytest.importorskip("sklearn", reason="the report's map needs scikit-learn (pip install selfsup-toolkit[report])")

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


class Images(html.parser.HTMLParser):
    """The ``src`` of every ``<img>`` of a page, and the rows of its neighbour table."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.neighbour_rows = 0
        self._in_neighbours = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "img":
            self.sources.append(attributes["src"])
        if tag == "table" and attributes.get("class") == "neighbours":
            self._in_neighbours = True
        if tag == "tr" and self._in_neighbours:
            self.neighbour_rows += 1

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_neighbours = False


@pytest.fixture(scope="module")
def reported_run(tmp_path_factory) -> tuple[Path, str]:
    """The tiny recipe trained through the CLI with its report on (the smoke recipe turns it off)."""
    run_dir = tmp_path_factory.mktemp("report") / "run"
    root = Path(__file__).resolve().parents[2]
    result = run_cli("train", str(root / "recipes" / "tiny.yaml"), "eval.at_start=true", "trainer.report=true",
                     "--run-dir", str(run_dir), cwd=root)
    assert result.returncode == 0, result.stderr
    return run_dir, result.stderr


def parse(page: Path) -> Images:
    images = Images()
    images.feed(page.read_text(encoding="utf-8"))
    return images


def test_train_ends_by_printing_the_path_of_its_report(reported_run):
    run_dir, log = reported_run
    assert log.strip().splitlines()[-1] == f"report: {run_dir / 'report' / 'index.html'}"


def test_every_image_of_the_page_exists_and_is_a_valid_png(reported_run):
    page = reported_run[0] / "report" / "index.html"
    sources = parse(page).sources
    files = [s for s in sources if not s.startswith("data:")]
    assert {"train_loss.png", "train_lr.png", "train_contrastive_acc.png", "eval_knn_top1.png",
            "eval_linear_top1.png", "embedding_map.png"} <= set(files)
    for source in sources:
        data = (base64.b64decode(source.split(",", 1)[1]) if source.startswith("data:image/png;base64,")
                else (page.parent / source).read_bytes())
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
            assert image.format == "PNG", source[:60]


def test_the_page_shows_eight_queries_with_five_image_neighbours_each(reported_run):
    images = parse(reported_run[0] / "report" / "index.html")
    assert images.neighbour_rows == 1 + 8  # the heading row, then one row per query
    assert sum(s.startswith("data:image/png") for s in images.sources) == 8 * 6


def test_the_page_names_the_map_method_the_metrics_recipe_plugins_and_machine(reported_run):
    text = (reported_run[0] / "report" / "index.html").read_text(encoding="utf-8")
    method = "UMAP" if importlib_util_find("umap") else "t-SNE"
    assert f"laid out in 2-D by {method}" in text
    assert "<th>at start</th>" in text and "knn_top1" in text
    assert "name: tiny" in text  # the recipe
    assert "image <b>(used)</b>" in text and "core <b>(used)</b>" in text
    assert "torch 2." in text and "Training took" in text


def test_a_second_report_replaces_the_first_and_can_go_elsewhere(reported_run, tmp_path, plugins):
    run_dir = reported_run[0]
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "mine.png").write_bytes(b"a user's own figure")
    (tmp_path / "elsewhere" / "train_loss.png").write_bytes(b"a previous report's figure")
    page = write_report(run_dir, plugins, out=tmp_path / "elsewhere", max_points=50, queries=3, neighbours=2)
    assert page == tmp_path / "elsewhere" / "index.html"
    assert (tmp_path / "elsewhere" / "mine.png").read_bytes() == b"a user's own figure"  # not the report's: kept
    assert (tmp_path / "elsewhere" / "train_loss.png").read_bytes() != b"a previous report's figure"
    assert parse(page).neighbour_rows == 1 + 3
    assert "50 test items" in page.read_text(encoding="utf-8")


def test_a_torn_last_history_event_is_dropped_with_a_warning(reported_run, tmp_path, plugins, capsys):
    run_dir = shutil.copytree(reported_run[0], tmp_path / "run")
    with open(run_dir / "history.jsonl", "a") as handle:
        handle.write('{"event": "resu')  # a write cut by a kill
    page = write_report(run_dir, plugins, max_points=50, queries=3, neighbours=2)
    assert "finished" in page.read_text(encoding="utf-8")
    assert "history.jsonl:3: dropped a torn last record" in capsys.readouterr().err


def test_selfsup_report_prints_the_page(reported_run, capsys):
    assert main(["report", str(reported_run[0]), "--max-points", "64"]) == 0
    assert capsys.readouterr().out.strip() == str(reported_run[0] / "report" / "index.html")


def test_no_report_turns_the_report_off(tiny_recipe, tmp_path):
    result = run_cli("train", str(tiny_recipe), "trainer.report=true", "--no-report", "--run-dir",
                     str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "run" / "report").exists() and "report:" not in result.stderr


def test_a_run_stopped_before_its_export_gets_curves_and_says_what_is_missing(tiny_recipe, plugins, tmp_path):
    trainer = make_trainer(tiny_recipe, plugins, tmp_path / "run")
    kill_at(5, trainer, plugins)
    page = write_report(tmp_path / "run", plugins)
    text = page.read_text(encoding="utf-8")
    assert "train_loss.png" in text and "the run has no exported encoder yet" in text
    assert "did not end" in text  # the history has a start without an end


def test_a_folder_that_is_no_run_is_one_line_naming_it(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert f"{tmp_path} is not a run directory (recipe.yaml is missing)" in capsys.readouterr().err


class ToyRenderer:
    """A plugin that shows every item of every source as a bold label."""

    @hookimpl
    def render_items(self, source, indices):
        return [f"<b class='toy'>toy item {i}</b>" for i in indices]


def test_a_plugin_renders_its_own_items_before_the_core_does(reported_run, plugins, tmp_path):
    renderer = ToyRenderer()
    plugins.manager.register(renderer)
    try:
        page = write_report(reported_run[0], plugins, out=tmp_path / "toy", max_points=32, queries=2, neighbours=3)
    finally:
        plugins.manager.unregister(renderer)
    text = page.read_text(encoding="utf-8")
    assert text.count("class='toy'") == 2 * (1 + 3) and "data:image/png" not in text


def test_the_core_shows_images_as_thumbnails_and_text_escaped_and_nothing_else():
    assert render_generic(torch.zeros(3, 8, 8, dtype=torch.uint8)).startswith("<img class='item' src='data:image/png")
    assert "a &lt;b&gt; c" in render_generic("a <b> c")
    assert "anchor | positive" in render_generic(("anchor", "positive"))
    assert render_generic(torch.zeros(1, 100)) is None  # a float series: the sequence plugin's to show


def test_series_and_audio_items_show_as_sparklines(plugins):
    from selfsup_sequence.series import SeriesSet

    source = SeriesSet(torch.randn(4, 2, 50), torch.tensor([0, 1, 0, 1]), ["a", "b"], None)
    shown = plugins.hook.render_items(source=source, indices=[1, 3])
    assert len(shown) == 2 and all("<svg class='spark'" in part and "2 x 50" in part for part in shown)
    assert source.class_name(1) == "b" and source.item_id(3) == "3"


def test_video_frames_show_as_thumbnails_named_by_video_and_frame(plugins, tmp_path):
    from selfsup_video.datasources import FrameArrays

    frames = np.random.default_rng(0).integers(0, 255, (12, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "clips.npz", frames=frames, offsets=np.array([0, 6, 12]), seq_names=np.array(["cat", "dog"]))
    source = FrameArrays(tmp_path / "clips.npz", split="all", unit="frame", frame_stride=2)
    shown = plugins.hook.render_items(source=source, indices=[0, 4])
    assert all(part.startswith("<img class='item'") for part in shown)
    assert source.item_id(4).endswith("clips.npz:dog frame 2")


def browser() -> str | None:
    return next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)


CHECK_IMAGES = """<script>window.addEventListener('load', () => {
  const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 60));
  document.body.setAttribute('data-images', JSON.stringify({total: document.images.length, broken}));
});</script></body>"""


@pytest.mark.skipif(browser() is None, reason=f"no headless browser on PATH ({', '.join(BROWSERS)}): the "
                                              f"screenshot check needs Chromium or Chrome")
def test_the_report_renders_in_a_real_browser_with_every_image_loaded(reported_run, tmp_path):
    """Headless Chromium loads a copy of the page with a script that lists images that did not load."""
    copy = tmp_path / "report"
    shutil.copytree(reported_run[0] / "report", copy)
    page = copy / "index.html"
    page.write_text(page.read_text(encoding="utf-8").replace("</body>", CHECK_IMAGES), encoding="utf-8")
    flags = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
             "--virtual-time-budget=10000", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    marker = dom.stdout.split('data-images="', 1)[1].split('"', 1)[0]
    checked = json.loads(marker.replace("&quot;", '"'))
    assert checked["total"] >= 7 + 8 * 6 and checked["broken"] == []
    shot = tmp_path / "screenshot.png"
    subprocess.run([*flags, "--window-size=1280,2400", f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (2400, 1280) and pixels.std() > 10  # a page with figures, not a blank one


def importlib_util_find(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
