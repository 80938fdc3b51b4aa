"""A run report: one HTML page and its PNG figures in ``RUN_DIR/report/`` (``selfsup report RUN_DIR``).

What it shows, from the run directory alone (``metrics.jsonl``, ``history.jsonl``,
``recipe.yaml``, the ``encoder/`` export) and the run's evaluation data:

- the loss, the learning rate and every other logged training metric against the step;
- each evaluation metric over training, with its value at the start (``eval.at_start``: the
  initial, usually random, encoder) as a dashed reference line;
- a 2-D map (UMAP, else t-SNE) of up to ``max_points`` test embeddings coloured by label;
- nearest neighbours: ``queries`` test items and their ``neighbours`` closest training items by
  cosine similarity, each shown by the plugin that knows its data source (the ``render_items``
  hook: thumbnails of images, sentences of text, ids and waveforms of audio and series);
- the recipe, the plugins and their versions, the machine(s) and the time taken.

The page needs no network and no script: images are PNG files beside it (figures) or data URIs
(item thumbnails). A run without an export (stopped early) or whose data is not on this machine
gets the curves and a line saying what is missing instead of the map and the neighbours.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TextIO

import torch

from toolkit.errors import DataError, SelfsupError
from toolkit.interfaces import DataSource

PAGE = "index.html"
REPORT_FIGURES = ("train_*.png", "eval_*.png", "embedding_map.png")  # what write_report draws
EXPORT = "encoder"
THUMBNAIL = 96


def write_report(run_dir: str | Path, plugins: Any = None, out: str | Path | None = None, trust_plugins: bool = False,
                 max_points: int = 2000, max_database: int = 5000, queries: int = 8, neighbours: int = 5,
                 log: TextIO | None = None) -> Path:
    """Write the report of the run in ``run_dir`` to ``out`` (default ``RUN_DIR/report``); return
    the path of its ``index.html``. ``plugins`` defaults to the installed ones;
    ``trust_plugins`` lets a recipe that lists local plugin files load them (as for ``selfsup eval``).
    The map shows at most ``max_points`` test items; ``queries`` of them are shown with their
    ``neighbours`` nearest among at most ``max_database`` training items (seeded samples)."""
    from toolkit import figures
    from toolkit.plugins import default_plugins
    from toolkit.rundir import RECIPE, RunDirectory, write_atomic

    run_dir = Path(run_dir)
    if not (run_dir / RECIPE).is_file():
        raise DataError(f"{run_dir} is not a run directory ({RECIPE} is missing); give the folder `selfsup train` "
                        f"wrote (--run-dir)")
    out = Path(out) if out is not None else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    for pattern in REPORT_FIGURES:  # the previous report's figures only: --out may hold the user's own files
        for stale in out.glob(pattern):
            stale.unlink()
    plugins = plugins or default_plugins()
    page = _Page(run_dir.name)
    run = RunDirectory(run_dir)
    records, history = run.read_metrics(), run.read_history()
    page.summary(run_dir, records, history)
    page.figures("Training", _training_figures(records, out, figures),
                 "No training step is logged yet." if not any(r.get("kind") == "train" for r in records) else "")
    page.figures("Evaluation during training", _evaluation_figures(records, out, figures),
                 "No evaluation is logged: the recipe has no evaluators, or the run stopped before its first one.")
    recipe = None
    try:
        recipe = _recipe(run_dir, plugins, trust_plugins)
        _embedding_sections(page, run_dir, recipe, plugins, out, figures, max_points, max_database, queries,
                            neighbours, log)
    except SelfsupError as error:
        page.section("Embeddings", f"<p class='note'>Not shown: {html.escape(str(error))}</p>")
    page.section("Recipe", f"<pre>{html.escape((run_dir / RECIPE).read_text(encoding='utf-8'))}</pre>")
    page.section("Plugins", _plugins_table(plugins, recipe))
    page.section("Machine and time", _machine_table(history))
    path = out / PAGE
    write_atomic(path, page.render())
    return path


def image_html(image: Any, size: int = THUMBNAIL, title: str = "") -> str:
    """An ``<img>`` with a PNG data URI of ``image`` (a uint8 tensor ``(C, H, W)`` or
    ``(H, W)``, a numpy array ``(H, W[, C])`` or a PIL image), its long side scaled to ``size``
    pixels: for ``render_items`` implementations."""
    from PIL import Image

    if isinstance(image, torch.Tensor):
        array = image.detach().cpu()
        array = (array.permute(1, 2, 0) if array.dim() == 3 else array).squeeze(-1).numpy()
        image = Image.fromarray(array)
    elif not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    scale = size / max(image.size)
    resized = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                           Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    resized.save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f"<img class='item' src='data:image/png;base64,{encoded}' width='{resized.width}' "
            f"height='{resized.height}' alt='{html.escape(title)}' title='{html.escape(title)}'>")


def text_html(text: str, limit: int = 300) -> str:
    """``text`` escaped, cut at ``limit`` characters: for ``render_items`` implementations."""
    cut = text if len(text) <= limit else text[:limit - 1] + "…"
    return f"<div class='text'>{html.escape(cut)}</div>"


def sparkline_html(values: Sequence[float], width: int = 160, height: int = 40) -> str:
    """An inline SVG line of ``values`` (a waveform, a series' first channel), at most
    ``width`` points: for ``render_items`` implementations."""
    import numpy as np

    array = np.asarray(values, dtype=np.float64)
    array = array[np.isfinite(array)]
    if len(array) < 2:
        return ""
    if len(array) > width:  # the envelope: the extreme of each bin keeps peaks visible
        bins = np.array_split(array, width)
        array = np.array([b[np.argmax(np.abs(b))] for b in bins])
    low, high = float(array.min()), float(array.max())
    span = high - low or 1.0
    xs = np.linspace(0, width, len(array))
    ys = height - (array - low) / span * (height - 2) - 1
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
    return (f"<svg class='spark' width='{width}' height='{height}' viewBox='0 0 {width} {height}'>"
            f"<polyline fill='none' stroke='#1f77b4' stroke-width='1' points='{points}'/></svg>")


def render_generic(item: Any) -> str | None:
    """What the core shows of an item no plugin renders: a uint8 image ``(C, H, W)`` (C = 1 or
    3) as a thumbnail, a string (or strings) as text, a dict by its values; else ``None``."""
    if isinstance(item, torch.Tensor) and item.dtype == torch.uint8 and item.dim() == 3 and item.shape[0] in (1, 3):
        return image_html(item)
    if isinstance(item, str):
        return text_html(item)
    if isinstance(item, (list, tuple)) and item and all(isinstance(part, str) for part in item):
        return text_html(" | ".join(item))
    if isinstance(item, dict):
        parts = [render_generic(value) for value in item.values()]
        shown = [part for part in parts if part]
        return "".join(shown) or None
    return None


@dataclass
class _Page:
    title: str
    parts: list[str] = field(default_factory=list)

    def section(self, heading: str, body: str) -> None:
        anchor = re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")
        self.parts.append(f"<section id='{anchor}'><h2>{html.escape(heading)}</h2>\n{body}\n</section>")

    def figures(self, heading: str, paths: list[Path], empty: str, note: str = "") -> None:
        """A section of PNG figures (files beside the page), or the ``empty`` sentence without any."""
        images = "".join(f"<figure><img src='{html.escape(p.name)}' alt='{html.escape(p.stem)}'></figure>"
                         for p in paths)
        body = f"<div class='grid'>{images}</div>" if paths else f"<p class='note'>{empty}</p>"
        self.section(heading, body + note)

    def summary(self, run_dir: Path, records: list[dict[str, Any]], history: list[dict[str, Any]]) -> None:
        steps = [r["step"] for r in records if r.get("kind") == "train"]
        final = next((r for r in reversed(records) if r.get("kind") == "eval"), None)
        start = next((r for r in records if r.get("kind") == "eval_start"), {})
        status = history[-1]["event"] if history else "unknown"
        lines = [f"<p>Run directory <code>{html.escape(str(run_dir.resolve()))}</code>: "
                 f"{max(steps) if steps else 0} steps logged; last event <b>{html.escape(status)}</b>.</p>"]
        if final:
            rows = "".join(
                f"<tr><td>{html.escape(k)}</td><td>{_number(start.get(k))}</td><td>{_number(v)}</td></tr>"
                for k, v in final.items() if k not in ("kind", "step", "epoch"))
            lines.append(f"<table><tr><th>metric</th><th>at start</th><th>trained (step {final['step']})</th></tr>"
                         f"{rows}</table>")
        self.section("Summary", "\n".join(lines))

    def render(self) -> str:
        made = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        from toolkit import __version__

        return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
                f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
                f"<title>selfsup report: {html.escape(self.title)}</title><style>{STYLE}</style></head>\n"
                f"<body><h1>selfsup report: {html.escape(self.title)}</h1>\n" + "\n".join(self.parts) +
                f"\n<footer>Written by selfsup {__version__} at {made}.</footer></body></html>\n")


STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
.grid{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}figure img{max-width:100%;border:1px solid #eee}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:.85em}.note{color:#666}
.neighbours td{vertical-align:top;text-align:center;max-width:170px}.neighbours .query{background:#eef4fb}
.caption{font-size:.75em;color:#444;word-break:break-all}.same{color:#1a7f37}.other{color:#b42318}
.text{font-size:.85em;text-align:left;max-width:170px}img.item{image-rendering:pixelated}
footer{margin-top:3em;font-size:.8em;color:#888}
"""


def _training_figures(records: list[dict[str, Any]], out: Path, figures: Any) -> list[Path]:
    train = [r for r in records if r.get("kind") == "train"]
    keys = sorted({k for r in train for k in r} - {"kind", "step", "epoch"},
                  key=lambda k: ({"loss": 0, "lr": 1}.get(k, 2), k == "samples_per_s", k))
    paths = []
    for key in keys:
        points = [(r["step"], r[key]) for r in train if isinstance(r.get(key), (int, float))]
        if points:
            steps, values = zip(*points)
            paths.append(figures.curve(out / f"train_{_slug(key)}.png", f"train: {key}", steps, values))
    return paths


def _evaluation_figures(records: list[dict[str, Any]], out: Path, figures: Any) -> list[Path]:
    evaluations = [r for r in records if r.get("kind") == "eval"]
    start = next((r for r in records if r.get("kind") == "eval_start"), {})
    keys = sorted({k for r in evaluations for k in r} - {"kind", "step", "epoch"})
    paths = []
    for key in keys:  # the evaluation at the start is the first point of the line, and its reference
        points = [(r["step"], r[key]) for r in [start, *evaluations] if isinstance(r.get(key), (int, float))]
        steps, values = zip(*points)
        paths.append(figures.curve(out / f"eval_{_slug(key)}.png", f"evaluation: {key}", steps, values,
                                   reference=start.get(key), reference_label="at start (step 0)"))
    return paths


def _embedding_sections(page: _Page, run_dir: Path, recipe: Any, plugins: Any, out: Path, figures: Any,
                        max_points: int, max_database: int, queries: int, neighbours: int,
                        log: TextIO | None) -> None:
    """The 2-D map and the nearest neighbours, from the run's export and evaluation data."""
    from toolkit.data import NoTestSplit, subset_indices
    from toolkit.engine import resolve_device
    from toolkit.evaluation import embed_items
    from toolkit.export import load_encoder, load_eval_transform
    from toolkit.progress import Progress

    export = run_dir / EXPORT
    if not (export / "encoder.json").is_file():
        raise DataError(f"the run has no exported encoder yet ({export}); finish the run or write one with "
                        f"`selfsup export {run_dir}`")
    encoder = load_encoder(export, plugins)
    transform = load_eval_transform(export, plugins)
    device = resolve_device(recipe.block("trainer")["device"])
    encoder.to(device)
    holdout = recipe.block("eval")["holdout_fraction"] if recipe.block("eval")["evaluators"] else 0.0

    def source(key: str) -> DataSource:
        return recipe.build(key, input_spec=encoder.input_spec, holdout_fraction=holdout, device=torch.device("cpu"))

    train = source("eval.train_data")
    try:
        test, test_role = source("eval.test_data"), "test"
    except NoTestSplit:
        test, test_role = train, "train"
    skipped: list[str] = []

    def embed(data: DataSource, limit: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = subset_indices(len(data), limit).tolist()
        with Progress(len(chosen), f"report: embedding {what}", stream=log or sys.stderr, leave=False) as progress:
            features, kept = embed_items(encoder, transform, _Items(data, chosen), device,
                                         recipe.block("eval")["batch_size"], progress=progress,
                                         skip=lambda i, error: skipped.append(f"{data.item_id(chosen[i])}: {error}"))
        return features, torch.tensor([chosen[i] for i in kept], dtype=torch.int64)

    test_features, test_index = embed(test, max_points, f"{test_role} items")
    note = (f"<p class='note'>{len(skipped)} unreadable items left out: {html.escape('; '.join(skipped[:3]))}</p>"
            if skipped else "")
    _map_section(page, test, test_role, test_features, test_index, out, figures, note)
    database, database_index = (test_features, test_index) if test is train else embed(train, max_database,
                                                                                       "training items")
    _neighbour_section(page, plugins, test, test_features, test_index, train, database, database_index,
                       queries, neighbours, same_source=test is train)


def _map_section(page: _Page, source: DataSource, role: str, features: torch.Tensor, index: torch.Tensor,
                 out: Path, figures: Any, note: str) -> None:
    if len(features) < figures.MIN_MAP_POINTS:
        page.section("Embedding map", f"<p class='note'>Too few {role} items for a map ({len(features)}).</p>")
        return
    points, method = figures.reduce_to_2d(features.numpy())
    labels = source.labels[index].numpy() if source.labels is not None else None
    names = {int(c): source.class_name(int(c)) for c in (set(labels.tolist()) if labels is not None else ())}
    title = f"{len(points)} {role} embeddings, " + ("coloured by label" if labels is not None else "unlabelled")
    title += f"\n2-D by {method}"
    caption = (f"<p>{len(points)} {role} items (a seeded sample of at most the report's max_points), embedded by "
               f"the exported encoder and laid out in 2-D by {html.escape(method)}.</p>")
    page.figures("Embedding map", [figures.embedding_map(out / "embedding_map.png", points, labels, names, title)],
                 "", caption + note)


def _neighbour_section(page: _Page, plugins: Any, queries_source: DataSource, query_features: torch.Tensor,
                       query_index: torch.Tensor, database_source: DataSource, database: torch.Tensor,
                       database_index: torch.Tensor, queries: int, neighbours: int, same_source: bool) -> None:
    """``queries`` items (one per class first) and their ``neighbours`` most cosine-similar items."""
    if len(query_features) == 0 or len(database) < 2:
        page.section("Nearest neighbours", "<p class='note'>Too few items to show neighbours.</p>")
        return
    labels = queries_source.labels
    picks = _spread(query_index, labels, queries)
    similarity = (torch.nn.functional.normalize(query_features[picks], dim=1)
                  @ torch.nn.functional.normalize(database, dim=1).T)
    if same_source:  # an item is not its own neighbour
        similarity[torch.arange(len(picks)), torch.tensor(picks)] = -2.0
    top = similarity.topk(min(neighbours, len(database) - same_source), dim=1)
    chosen_queries = [int(query_index[p]) for p in picks]
    chosen_neighbours = [int(database_index[j]) for row in top.indices for j in row]
    shown_queries = _render(plugins, queries_source, chosen_queries)
    shown_neighbours = _render(plugins, database_source, chosen_neighbours)
    rows = []
    for q, (query, score_row) in enumerate(zip(chosen_queries, top.values)):
        cells = [f"<td class='query'>{shown_queries[q]}{_caption(queries_source, query)}</td>"]
        for n, score in enumerate(score_row.tolist()):
            item = chosen_neighbours[q * top.indices.shape[1] + n]
            cells.append(f"<td>{shown_neighbours[q * top.indices.shape[1] + n]}"
                         f"{_caption(database_source, item, queries_source, query, score)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    heading = "".join(f"<th>neighbour {n + 1}</th>" for n in range(top.indices.shape[1]))
    among = "other items (the data has no test split)" if same_source else "training items"
    intro = (f"<p>Each query (left: a {'training' if same_source else 'test'} item, one class after another) and "
             f"its closest {among} by cosine similarity of their embeddings; a green label matches the query's, a "
             f"red one does not.</p>")
    page.section("Nearest neighbours", f"{intro}<table class='neighbours'><tr><th>query</th>{heading}</tr>"
                                       f"{''.join(rows)}</table>")


def _spread(index: torch.Tensor, labels: torch.Tensor | None, count: int) -> list[int]:
    """Positions in ``index`` of up to ``count`` queries: one per class in turn, then evenly spaced."""
    positions = list(range(len(index)))
    if labels is None:
        step = max(len(positions) // count, 1)
        return positions[::step][:count]
    by_class: dict[int, list[int]] = {}
    for position in positions:
        by_class.setdefault(int(labels[index[position]]), []).append(position)
    picked: list[int] = []
    rank = 0
    while len(picked) < min(count, len(positions)):
        for members in by_class.values():
            if rank < len(members) and len(picked) < count:
                picked.append(members[rank])
        rank += 1
    return picked


def _render(plugins: Any, source: DataSource, indices: list[int]) -> list[str]:
    shown = plugins.hook.render_items(source=source, indices=indices)
    if shown is None:
        return [""] * len(indices)
    if len(shown) != len(indices):
        raise DataError(f"a render_items hook returned {len(shown)} fragments for {len(indices)} items of "
                        f"{type(source).__name__}; it must return one per index")
    return list(shown)


def _caption(source: DataSource, index: int, query_source: DataSource | None = None, query: int | None = None,
             score: float | None = None) -> str:
    parts = [html.escape(source.item_id(index))]
    label_class = ""
    if source.labels is not None:
        label = int(source.labels[index])
        parts.append(html.escape(source.class_name(label)))
        if query_source is not None and query_source.labels is not None and query is not None:
            label_class = " same" if label == int(query_source.labels[query]) else " other"
    if score is not None:
        parts.append(f"cos {score:.3f}")
    return f"<div class='caption{label_class}'>{' · '.join(parts)}</div>"


class _Items(Sequence[Any]):
    """The items of ``source`` at ``indices``, as a sequence."""

    def __init__(self, source: DataSource, indices: list[int]) -> None:
        self.source, self.indices = source, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> Any:  # type: ignore[override]
        return self.source[self.indices[position]]


def _recipe(run_dir: Path, plugins: Any, trust_plugins: bool) -> Any:
    from toolkit.recipe import load, resolve
    from toolkit.rundir import RECIPE

    return resolve(load(run_dir / RECIPE), plugins, trust_plugins)


def _plugins_table(plugins: Any, recipe: Any) -> str:
    used = set().union(*(resolved.plugins() for resolved in recipe.components.values())) if recipe else set()
    rows = "".join(
        f"<tr><td>{html.escape(info.name)}{' <b>(used)</b>' if info.name in used else ''}</td>"
        f"<td>{html.escape(info.version or '')}</td><td>{html.escape(info.distribution or info.module)}</td>"
        f"<td>{html.escape(info.error or '')}</td></tr>"
        for info in sorted(plugins.infos.values(), key=lambda i: (i.name not in used, i.name)))
    return (f"<p>Loaded when the report was written; <b>(used)</b>: registers a component of the recipe.</p>"
            f"<table><tr><th>plugin</th><th>version</th><th>from</th><th>load error</th></tr>{rows}</table>")


def _machine_table(history: list[dict[str, Any]]) -> str:
    """Each start or resume: when, where, on what; and the time each part of the run took."""
    rows, total = [], 0.0
    for i, event in enumerate(history):
        if event["event"] not in ("start", "resume"):
            continue
        end = next((e for e in history[i + 1:] if e["event"] in ("finished", "interrupted", "diverged", "start",
                                                                  "resume")), None)
        took = "did not end (killed?)"
        if end is not None and end["event"] not in ("start", "resume"):
            seconds = (_time(end["time"]) - _time(event["time"])).total_seconds()
            total += seconds
            took = f"{_seconds(seconds)} to step {end.get('step')} ({end['event']})"
        machine = event.get("machine") or {}
        where = ", ".join(f"{k} {v}" for k, v in machine.items()) or "not recorded"
        rows.append(f"<tr><td>{html.escape(event['event'])} at step {event.get('step', 0)}</td>"
                    f"<td>{html.escape(event['time'])}</td><td>{html.escape(event.get('host', ''))}</td>"
                    f"<td>{html.escape(where)}</td><td>{html.escape(took)}</td></tr>")
    if not rows:
        return "<p class='note'>No history.jsonl in the run directory.</p>"
    return (f"<p>Training took {_seconds(total)} in all (evaluations included).</p><table><tr><th>event</th>"
            f"<th>time (UTC)</th><th>host</th><th>machine</th><th>took</th></tr>{''.join(rows)}</table>")


def _time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


def _seconds(seconds: float) -> str:
    from toolkit.progress import duration

    return duration(seconds) if seconds >= 1 else f"{seconds:.1f}s"


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else ""


def _slug(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key)
