"""The Python API: what the ``selfsup`` commands do, as functions for scripts and notebooks.

::

    import toolkit
    run = toolkit.train("recipes/quickstart.yaml", overrides=["schedule.epochs=2"], run_dir="runs/qs")
    run.metrics                  # {"knn_top1": 0.37, ...}: the final evaluation
    run.encoder_path             # runs/qs/encoder (toolkit.load_encoder reads it)
    toolkit.evaluate("runs/qs", ["eval.evaluators=[{name: knn, k: 20}]"])
    vectors = toolkit.embed("runs/qs", "photos/", out="photos.parquet").vectors   # (N, D)
    toolkit.report("runs/qs")    # runs/qs/report/index.html

Importing changes nothing in the process. Training applies the recipe's CPU settings
(:meth:`toolkit.engine.Trainer.fit`) and installs no signal handler (Ctrl-C, or a notebook's
interrupt, stops with ``KeyboardInterrupt``; the last checkpoint is kept and
``toolkit.train(..., resume=True)`` continues). Progress is a tqdm bar on a terminal and in
Jupyter (``tqdm.auto``), plain lines in a log.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence, TextIO

from toolkit.embedding import Embeddings
from toolkit.errors import RecipeError, SelfsupError

if TYPE_CHECKING:
    from toolkit.engine import Trainer
    from toolkit.interfaces import Encoder
    from toolkit.plugins import Plugins

DEFAULT_EVALUATORS = ["eval.evaluators=[{name: knn}, {name: linear-probe}]"]
"""What ``evaluate`` runs for a run whose recipe has no evaluators."""


@dataclass
class Run:
    """A run directory, as ``train`` leaves it (or any, ``toolkit.Run("runs/x")``): what it measured
    and where its encoder and report are."""

    run_dir: Path

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl`` (of one ``kind``: ``train``, ``eval``, ``eval_start``)."""
        from toolkit.rundir import RunDirectory

        records = RunDirectory(self.run_dir).read_metrics()
        return [r for r in records if kind is None or r.get("kind") == kind]

    @property
    def metrics(self) -> dict[str, float]:
        """The last evaluation's metrics (``{}`` before the first)."""
        return _metrics(self.records("eval")[-1:])

    @property
    def start_metrics(self) -> dict[str, float]:
        """The metrics of the encoder before training (``eval.at_start``), or ``{}``."""
        return _metrics(self.records("eval_start")[:1])

    @property
    def encoder_path(self) -> Path:
        """The exported encoder (``toolkit.load_encoder(run.encoder_path)``)."""
        return self.run_dir / "encoder"

    @property
    def report_path(self) -> Path | None:
        """The report's page, once written."""
        page = self.run_dir / "report" / "index.html"
        return page if page.is_file() else None

    def load_encoder(self) -> Encoder:
        from toolkit.export import load_encoder

        return load_encoder(self.encoder_path)

    def embed(self, input: str | Path, **options: Any) -> Embeddings:
        """:func:`embed` with this run's encoder."""
        return embed(self.run_dir, input, **options)

    def evaluate(self, overrides: Sequence[str] = (), **options: Any) -> dict[str, float]:
        """:func:`evaluate` on this run."""
        return evaluate(self.run_dir, overrides, **options)

    def report(self, **options: Any) -> Path:
        """:func:`report` of this run."""
        return report(self.run_dir, **options)


def train(recipe: str | Path | Mapping[str, Any] | None, overrides: Sequence[str] = (),
          run_dir: str | Path | None = None, resume: bool = False, report: bool | None = None,
          plugins_dir: Sequence[str | Path] = (), trust_plugins: bool = False, log: TextIO | None = None) -> Run:
    """Train ``recipe`` (a YAML file, or the same as a dict: relative paths then start at the
    working directory) with ``overrides`` (``"trainer.batch_size=128"``) into ``run_dir``
    (default ``trainer.output_dir`` or ``runs/<name>``); with ``resume=True``, continue the run
    in ``run_dir`` instead (``recipe`` is then ``None``: the run's own; ``overrides`` may change
    the resumable settings). Writes the report when done unless ``report=False`` (default: the
    recipe's ``trainer.report``). Returns the :class:`Run`. Everything the run prints goes to
    ``log`` (default stderr)."""
    from toolkit.engine import Trainer
    from toolkit.recipe import load, resolve

    log = log or sys.stderr
    plugins = _plugins(plugins_dir)
    if resume:
        if run_dir is None or recipe is not None:
            raise RecipeError("toolkit.train(None, overrides, run_dir, resume=True) continues the run in run_dir with "
                              "its own recipe: give run_dir and no recipe")
        trainer = Trainer.resume(Path(run_dir), plugins, overrides, trust_plugins=trust_plugins, log=log)
    elif recipe is None:
        raise RecipeError("toolkit.train needs a recipe: a YAML file or a dict (or resume=True with run_dir)")
    else:
        resolved = resolve(load(recipe, overrides), plugins)
        trainer = Trainer.from_recipe(resolved, plugins, Path(run_dir) if run_dir else None, log=log)
    try:
        trainer.fit()
    except BaseException:
        trainer.directory.unlock()  # a failed or interrupted run can be resumed at once, in this process too
        raise
    finish_training(trainer, trainer.config.report if report is None else report, log)
    return Run(trainer.run_dir)


def evaluate(run_dir: str | Path, overrides: Sequence[str] = (), trust_plugins: bool = False,
             plugins_dir: Sequence[str | Path] = (), log: TextIO | None = None) -> dict[str, float]:
    """Evaluate the last checkpoint of the run in ``run_dir`` with its recipe's evaluators (kNN
    and a linear probe if it has none), changed by ``overrides``; logged as ``eval_standalone``."""
    trainer = trainer_for(Path(run_dir), overrides, _plugins(plugins_dir), trust_plugins, log or sys.stderr)
    return trainer.evaluate(tag="eval_standalone")


def embed(model: str | Path, input: str | Path, out: str | Path | None = None, **options: Any) -> Embeddings:
    """Embed ``input`` (a folder of images, audio or videos, a text file, a table column, an npz)
    with the encoder of ``model`` (a run directory or an export); see :func:`toolkit.embedding.embed`
    for the options (``split``, ``column``, ``source``, ``data``, ``batch_size``, ``device``,
    ``skip_bad``). Writes ``out`` (``.npy``, ``.npz`` or ``.parquet``) when given."""
    from toolkit.embedding import embed as embed_input

    return embed_input(model, input, out, **options)


def report(run_dir: str | Path, out: str | Path | None = None, trust_plugins: bool = False,
           plugins_dir: Sequence[str | Path] = (), **options: Any) -> Path:
    """Write the report of the run in ``run_dir`` (default into ``RUN_DIR/report``); return its
    ``index.html``. ``options``: ``max_points``, ``max_database``, ``queries``, ``neighbours``, ``log``."""
    from toolkit.reporting import write_report

    return write_report(run_dir, _plugins(plugins_dir), out, trust_plugins, **options)


def finish_training(trainer: Trainer, report: bool, log: TextIO) -> None:
    """After a successful ``fit`` (``toolkit.train`` and ``selfsup train``): close the process
    group, say where the encoder went and, if ``report``, write the report."""
    trainer.close()  # after success only: a failed process must not wait for the others
    if trainer.is_main:
        print(f"encoder exported to {trainer.run_dir / 'encoder'}", file=log, flush=True)
        if report:
            _write_report(trainer, log)


def _write_report(trainer: Trainer, log: TextIO) -> Path | None:
    """The report at the end of ``selfsup train``: a failure that is not a bug (a missing
    ``[report]`` extra, data gone) is one warning line, and the finished run stands."""
    from toolkit.reporting import write_report

    try:
        page = write_report(trainer.run_dir, trainer.plugins, log=log)
    except SelfsupError as error:
        print(f"warning: no report: {error}", file=log, flush=True)
        return None
    print(f"report: {page}", file=log, flush=True)
    return page


def trainer_for(run_dir: Path, overrides: Sequence[str], plugins: Plugins, trust_plugins: bool = False,
                log: TextIO | None = None) -> Trainer:
    """A trainer holding the run's last checkpoint, for evaluation or export."""
    from toolkit import checkpoint
    from toolkit.engine import CHECKPOINT, Trainer
    from toolkit.recipe import load, resolve

    recipe = resolve(load(run_dir / "recipe.yaml", overrides), plugins, trust_plugins)
    if not recipe.block("eval")["evaluators"]:
        # the run had no evaluators, so it trained on every item: no held-out split is unseen
        defaults = [*DEFAULT_EVALUATORS, "eval.holdout_fraction=0.0"]
        recipe = resolve(load(run_dir / "recipe.yaml", [*defaults, *overrides]), plugins, trust_plugins)
    trainer = Trainer(recipe, plugins, run_dir, log=log or sys.stderr)
    trainer.load_state(checkpoint.load(run_dir / CHECKPOINT))
    return trainer


def _plugins(plugins_dir: Sequence[str | Path]) -> Plugins:
    """The installed plugins plus the plugin modules of ``plugins_dir``."""
    from toolkit.plugins import default_plugins

    plugins = default_plugins()
    plugins.add_local([Path(p) for p in plugins_dir])
    return plugins


def _metrics(records: list[dict[str, Any]]) -> dict[str, float]:
    return {k: v for r in records for k, v in r.items() if k not in ("kind", "step", "epoch")}
