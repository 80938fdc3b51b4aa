"""The ``selfsup`` command line: plugins, recipes, train, eval, export, report, embed, data pack."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from toolkit.errors import RecipeError, SelfsupError

if TYPE_CHECKING:  # the commands import what they use, so that `selfsup --help` imports no torch
    from toolkit.engine import Trainer
    from toolkit.plugins import Plugins

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    if args.command == "train" and (args.nproc > 1 or args.nnodes != "1") and "WORLD_SIZE" not in os.environ:
        return _launch_torchrun(args, argv)
    try:
        return args.handler(args)
    except SelfsupError as error:  # anything else is a bug: its traceback shows
        if os.environ.get("SELFSUP_TRACEBACK"):
            raise
        print(f"error: {error}", file=sys.stderr)
        return error.exit_status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="selfsup", description="Self-supervised pretraining from recipes.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    local = argparse.ArgumentParser(add_help=False)
    local.add_argument("--plugins-dir", type=Path, action="append", default=[], metavar="DIR",
                       help="also register every plugin module (*.py) in DIR (repeatable)")

    plugins = commands.add_parser("plugins", parents=[local], help="list installed plugins and their components")
    plugins.add_argument("--all", action="store_true", help="include the built-in plugins")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.set_defaults(handler=_plugins)

    recipes = commands.add_parser("recipes", parents=[local], help="list the recipes plugins ship")
    recipes.add_argument("--json", action="store_true")
    recipes.set_defaults(handler=_recipes)

    recipe = commands.add_parser("recipe", help="inspect a recipe")
    recipe_commands = recipe.add_subparsers(dest="recipe_command", metavar="ACTION", required=True)
    for name, handler, text in (("show", _recipe_show, "print the fully resolved recipe"),
                                ("validate", _recipe_validate, "check a recipe without running it")):
        sub = recipe_commands.add_parser(name, parents=[local], help=text)
        sub.add_argument("recipe", type=Path)
        sub.add_argument("overrides", nargs="*", metavar="key=value")
        sub.set_defaults(handler=handler)

    train = commands.add_parser("train", parents=[local], help="pretrain from a recipe (or --resume a run)")
    train.add_argument("recipe", type=Path, nargs="?")
    train.add_argument("overrides", nargs="*", metavar="key=value")
    train.add_argument("--resume", type=Path, metavar="RUN_DIR",
                       help="continue the run in RUN_DIR; key=value may change the learning rate, clipping, "
                            "precision or schedule length (see the README)")
    train.add_argument("--trust-plugins", action="store_true",
                       help="with --resume: load the local plugin files the run's recipe lists (they run code)")
    train.add_argument("--run-dir", type=Path, help="where to write the run (default trainer.output_dir or runs/NAME)")
    train.add_argument("--no-report", action="store_true",
                       help="do not write RUN_DIR/report/ at the end (as the recipe setting trainer.report: false)")
    launch = train.add_argument_group("distributed (runs torchrun; see docs/distributed.md)")
    launch.add_argument("--nproc", type=int, default=1, metavar="N", help="processes per node (GPUs, or CPU workers)")
    launch.add_argument("--nnodes", default="1", help="number of nodes, or MIN:MAX")
    launch.add_argument("--node-rank", type=int, default=0)
    launch.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help="rendezvous address for multi-node runs")
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("eval", parents=[local],
                                   help="evaluate a run's encoder (kNN, linear probe, ...)")
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. eval.evaluators=[{name: knn, k: 20}]")
    evaluate.add_argument("--json", action="store_true")
    evaluate.add_argument("--trust-plugins", action="store_true",
                          help="load the local plugin files the run's recipe lists (they run code)")
    evaluate.set_defaults(handler=_eval)

    export = commands.add_parser("export", parents=[local],
                                 help="export a run's encoder as safetensors + JSON metadata")
    export.add_argument("run_dir", type=Path)
    export.add_argument("--out", type=Path, help="output folder (default RUN_DIR/encoder)")
    export.add_argument("--trust-plugins", action="store_true",
                        help="load the local plugin files the run's recipe lists (they run code)")
    export.set_defaults(handler=_export)

    report = commands.add_parser("report", parents=[local],
                                 help="write a run's report: curves, embedding map, neighbours (HTML + PNG)")
    report.add_argument("run_dir", type=Path)
    report.add_argument("--out", type=Path, help="output folder (default RUN_DIR/report)")
    report.add_argument("--max-points", type=int, default=2000, metavar="N",
                        help="test items on the 2-D map (default 2000: seconds of t-SNE)")
    report.add_argument("--trust-plugins", action="store_true",
                        help="load the local plugin files the run's recipe lists (they run code)")
    report.set_defaults(handler=_report)

    embed = commands.add_parser("embed", parents=[local],
                                help="embed a folder of files, a text file, a table column or an npz")
    embed.add_argument("model", type=Path, metavar="RUN_DIR|ENCODER_DIR")
    embed.add_argument("input", type=Path, metavar="INPUT")
    embed.add_argument("--out", type=Path, required=True, help="FILE.npy (vectors), .npz or .parquet (ids, labels, "
                                                                "vectors)")
    embed.add_argument("--split", help="the split to embed of a layout that has several (train, test)")
    embed.add_argument("--column", help="the text column of a table (.csv, .tsv, .jsonl, .parquet)")
    embed.add_argument("--source", metavar="NAME", help="read INPUT with this data source instead of the default")
    embed.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                       help="a parameter of the data source, e.g. --data limit=1000 (repeatable)")
    embed.add_argument("--batch-size", type=int, default=256)
    embed.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    embed.add_argument("--skip-bad", action="store_true",
                       help="leave out unreadable files (each is named) instead of stopping at the first")
    embed.set_defaults(handler=_embed)

    data = commands.add_parser("data", help="prepare data: pack any data source as tar shards")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    pack = data_commands.add_parser("pack", parents=[local], help="write a data source as WebDataset tar shards with "
                                                                  "an index.json (read by the webdataset source)")
    pack.add_argument("source", metavar="SOURCE", help="a recipe file (its data block) or an inline block such as "
                                                       "'{name: fsdd, path: fsdd.npz}'")
    pack.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    pack.add_argument("overrides", nargs="*", metavar="key=value",
                      help="settings of a recipe file, e.g. data.limit=100")
    pack.add_argument("--shard-size", type=int, default=1000, metavar="N", help="samples per shard (default 1000)")
    pack.add_argument("--split", action="append", default=[], metavar="NAME",
                      help="pack this split into OUT_DIR/NAME/ (repeatable: --split train --split test); default: "
                           "the block's own split, into OUT_DIR")
    pack.add_argument("--image-format", choices=["png", "jpg"], default="png",
                      help="png (lossless, default) or jpg (quality 95, smaller)")
    pack.add_argument("--sample-rate", type=int, metavar="HZ",
                      help="resample audio to HZ (default: as the source gives it)")
    pack.add_argument("--no-shuffle", action="store_true",
                      help="keep the source's order in the shards (default: a fixed random order: shards mix "
                           "classes)")
    pack.set_defaults(handler=_data_pack)
    return parser


def _plugins(args: argparse.Namespace) -> int:
    from toolkit.plugins import KINDS

    plugins = _loaded(args)
    everything = sorted(plugins.infos.values(), key=lambda i: (not i.builtin, i.name))
    shown = [i for i in everything if args.all or not i.builtin or i.error]
    if args.json:
        print(json.dumps([vars(info) for info in shown], indent=2))
        return 0
    for info in shown:
        origin = "built-in" if info.builtin else (info.distribution or info.module)
        print(f"{info.name} {info.version or ''} ({origin})".replace("  ", " "))
        if info.error:
            print(f"  FAILED TO LOAD: {info.error}")
        for kind in KINDS:
            if info.components.get(kind):
                print(f"  {kind + 's:':<15} {', '.join(info.components[kind])}")
        if info.recipes:
            print(f"  {'recipes:':<15} {len(info.recipes)} (selfsup recipes)")
        if info.hooks:
            print(f"  {'hooks:':<15} {', '.join(info.hooks)}")
    hidden = [i.name for i in everything if i not in shown]
    if hidden:
        print(f"{'' if shown else 'no third-party plugins installed; '}built-in: {', '.join(hidden)} "
              f"(selfsup plugins --all lists them)")
    return 0


def _recipes(args: argparse.Namespace) -> int:
    listing = _loaded(args).recipes()
    if args.json:
        print(json.dumps(listing, indent=2))
    for plugin, paths in ([] if args.json else listing.items()):
        print(plugin)
        for path in paths:
            print(f"  {path}")
    if not listing and not args.json:
        print("no plugin ships recipes; see the recipes/ folder of the selfsup repository")
    return 0


def _launch_torchrun(args: argparse.Namespace, argv: list[str]) -> int:
    """Re-run this command under ``torchrun`` with the same arguments, minus the launch options."""
    launch_options = {"--nproc", "--nnodes", "--node-rank", "--rdzv-endpoint"}
    forwarded, skip = [], False
    for argument in argv:
        if skip:
            skip = False
        elif argument in launch_options:
            skip = True
        elif argument.split("=", 1)[0] not in launch_options:
            forwarded.append(argument)
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.nproc}",
               f"--nnodes={args.nnodes}", f"--node_rank={args.node_rank}"]
    if args.rdzv_endpoint:
        command += ["--rdzv_backend=c10d", f"--rdzv_endpoint={args.rdzv_endpoint}"]
    elif args.nnodes == "1":
        command += ["--standalone"]
    else:
        raise RecipeError("a multi-node run needs --rdzv-endpoint HOST:PORT (the same on every node)")
    child = subprocess.Popen([*command, "-m", "toolkit", *forwarded])
    # a cluster's SIGTERM reaches this process only: pass it on, and torchrun passes it to every
    # worker, which finishes its step and writes a checkpoint (Ctrl-C reaches all of them already)
    previous = signal.signal(signal.SIGTERM, lambda number, frame: child.send_signal(number))
    try:
        return child.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _recipe_show(args: argparse.Namespace) -> int:
    from toolkit.recipe import load_and_resolve

    print(load_and_resolve(args.recipe, args.overrides, _loaded(args)).to_yaml(), end="")
    return 0


def _recipe_validate(args: argparse.Namespace) -> int:
    from toolkit.recipe import load_and_resolve

    recipe = load_and_resolve(args.recipe, args.overrides, _loaded(args))
    print(f"{args.recipe}: valid ({recipe.name})")
    return 0


def _train(args: argparse.Namespace) -> int:
    from toolkit.engine import Trainer
    from toolkit.recipe import load_and_resolve

    plugins = _loaded(args)
    if args.resume:
        overrides = [str(args.recipe), *args.overrides] if args.recipe else args.overrides
        trainer = Trainer.resume(args.resume, plugins, overrides, trust_plugins=args.trust_plugins)
        verb = "resuming" if trainer.step else "starting (no checkpoint yet)"
        print(f"{verb} {args.resume} at step {trainer.step}/{trainer.total_steps}", file=sys.stderr)
    else:
        if args.recipe is None:
            raise RecipeError("give a recipe (selfsup train RECIPE [key=value ...]) or --resume RUN_DIR")
        recipe = load_and_resolve(args.recipe, args.overrides, plugins)
        trainer = Trainer.from_recipe(recipe, plugins, args.run_dir)
        print(f"training {recipe.name} for {trainer.total_steps} steps on {trainer.device}; run directory "
              f"{trainer.run_dir}", file=sys.stderr)
    with _stop_on_signals(trainer):
        trainer.fit()
    from toolkit.api import finish_training

    finish_training(trainer, trainer.config.report and not args.no_report, sys.stderr)
    return 0


@contextlib.contextmanager
def _stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """SIGTERM (a cluster preempting the job) or Ctrl-C: finish the step, write a checkpoint, exit
    with :data:`toolkit.errors.INTERRUPTED`. A second signal stops at once (checkpoints are atomic)."""
    def handle(number: int, frame: object) -> None:
        if trainer.stop_signal is not None:
            signal.signal(number, signal.SIG_DFL)
            signal.raise_signal(number)
            return
        trainer.request_stop(number)
        print(f"\n{signal.Signals(number).name}: stopping after step {trainer.step + 1} with a checkpoint "
              f"(send it again to stop at once)", file=sys.stderr, flush=True)

    previous = {number: signal.signal(number, handle) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _eval(args: argparse.Namespace) -> int:
    from toolkit.api import trainer_for

    trainer = trainer_for(args.run_dir, args.overrides, _loaded(args), args.trust_plugins, sys.stderr)
    metrics = trainer.evaluate(tag="eval_standalone")
    print(json.dumps(metrics, indent=2) if args.json else "\n".join(f"{k}: {v:.4f}" for k, v in metrics.items()))
    return 0


def _export(args: argparse.Namespace) -> int:
    from toolkit.api import trainer_for

    trainer = trainer_for(args.run_dir, (), _loaded(args), args.trust_plugins, sys.stderr)
    out = trainer.export(args.out or args.run_dir / "encoder")
    print(f"exported the encoder of {args.run_dir} (step {trainer.step}) to {out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from toolkit.reporting import write_report

    page = write_report(args.run_dir, _loaded(args), args.out, args.trust_plugins, max_points=args.max_points)
    print(page)
    return 0


def _embed(args: argparse.Namespace) -> int:
    from toolkit.embedding import embed

    embed(args.model, args.input, args.out, split=args.split, column=args.column, source=args.source,
          data=args.data, batch_size=args.batch_size, device=args.device, skip_bad=args.skip_bad,
          plugins=_loaded(args))
    return 0


def _data_pack(args: argparse.Namespace) -> int:
    from toolkit.shards import pack

    pack(args.source, args.out_dir, _loaded(args), args.overrides, args.split, args.shard_size, args.image_format,
         args.sample_rate, not args.no_shuffle)
    return 0


def _loaded(args: argparse.Namespace) -> Plugins:
    """The installed plugins plus those of ``--plugins-dir``."""
    from toolkit.plugins import default_plugins

    plugins = default_plugins()
    plugins.add_local(args.plugins_dir)
    return plugins

