"""Engine overhead: SimCLR through `selfsup`'s Trainer vs a plain PyTorch loop doing the same work.

Both build the same encoder, projector, augmentation and data from one recipe (default: the
quickstart) and train with the same batch size, optimizer, learning-rate schedule, denormal
setting and number of data-loader workers;
the plain loop is what a researcher would write by hand (a Dataset returning two views, a
DataLoader, forward, NT-Xent, backward, step). Each side runs ``--warmup`` steps, then is timed
over ``--steps`` steps, each measurement in a fresh process; the two alternate ``--repeats``
times (swapping which goes first) and the medians are reported.

    python benchmarks/throughput.py [--recipe recipes/quickstart.yaml] [--steps 20] [key=value ...]

On CUDA both sides use the recipe's ``trainer.precision`` (bf16 autocast by default),
``channels_last`` and ``compile``, pinned memory and non-blocking copies.

Prints JSON: samples/s of each, and ``ratio = engine / plain`` (target >= 0.97 on CPU). The
engine applies the CPU settings of :mod:`toolkit.cpu`; ``--plain-cpu-settings engine`` gives the
plain loop the same, which isolates the engine's own per-step overhead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from toolkit import RunContext, cpu, hookimpl
from toolkit.engine import Trainer, _autocast_dtype, resolve_device
from toolkit.losses import nt_xent
from toolkit.optim import parameter_groups, warmup_cosine
from toolkit.plugins import default_plugins
from toolkit.recipe import load_and_resolve

ROOT = Path(__file__).resolve().parent.parent


class StepClock:
    """A plugin that timestamps every optimizer step of the engine."""

    def __init__(self) -> None:
        self.times: list[float] = []

    @hookimpl
    def on_step_end(self, run: RunContext, step: int, metrics: dict[str, float]) -> None:
        self.times.append(time.perf_counter())


def engine_samples_per_s(recipe_path: Path, overrides: list[str], warmup: int, steps: int) -> float:
    plugins = default_plugins()
    clock = StepClock()
    plugins.manager.register(clock, name="benchmark-clock")
    try:
        recipe = load_and_resolve(recipe_path, [*overrides, f"schedule.max_steps={warmup + steps}",
                                                "eval.evaluators=[]", "eval.at_start=false",
                                                f"trainer.checkpoint_every={10**9}", f"trainer.log_every={10**9}"],
                                  plugins)
        with tempfile.TemporaryDirectory() as run_dir:
            trainer = Trainer.from_recipe(recipe, plugins, Path(run_dir) / "run", log=open(os.devnull, "w"))
            trainer.fit()
        batch = recipe.block("trainer")["batch_size"]
        return batch * steps / (clock.times[warmup + steps - 1] - clock.times[warmup - 1])
    finally:
        plugins.manager.unregister(clock)


class TwoViews(torch.utils.data.Dataset):
    def __init__(self, source, augmentation) -> None:
        self.source, self.augmentation = source, augmentation

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        return tuple(self.augmentation(self.source[index]))


def plain_samples_per_s(recipe_path: Path, overrides: list[str], warmup: int, steps: int) -> float:
    plugins = default_plugins()
    recipe = load_and_resolve(recipe_path, overrides, plugins)
    torch.manual_seed(recipe.block("trainer")["seed"])
    encoder = recipe.build("encoder")
    projector = recipe.build("projector", input_dim=encoder.output_dim)
    source = recipe.build("data")
    augmentation = recipe.build("augmentation")
    trainer, schedule = recipe.block("trainer"), recipe.block("schedule")
    device = resolve_device(trainer["device"])
    model = torch.nn.Sequential(encoder, projector).to(device)
    if trainer["channels_last"]:
        model.to(memory_format=torch.channels_last)
    if trainer["compile"]:
        encoder.compile()
    dtype = _autocast_dtype(trainer["precision"], device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    memory_format = torch.channels_last if trainer["channels_last"] else torch.contiguous_format
    optimizer = recipe.build("optimizer", params=parameter_groups([model]))
    if os.environ.get("THROUGHPUT_PLAIN_CPU_SETTINGS") == "engine":
        cpu.configure(trainer["flush_denormal"], trainer["tune_malloc"])
    else:  # what a hand-written loop gets by default, except denormals (trajectory-dependent, see toolkit/cpu.py)
        torch.set_flush_denormal(trainer["flush_denormal"])
    warmup_steps = schedule["warmup_steps"] or 0
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup + steps, warmup_steps, 0.0))
    loader = torch.utils.data.DataLoader(TwoViews(source, augmentation), batch_size=trainer["batch_size"],
                                         shuffle=True, drop_last=True, num_workers=trainer["num_workers"],
                                         pin_memory=device.type == "cuda")
    temperature = recipe.block("objective")["temperature"]
    times, done = [], 0
    while done < warmup + steps:
        for first, second in loader:
            x = torch.cat([first, second]).to(device, non_blocking=True).contiguous(memory_format=memory_format)
            with autocast:
                z = model(x)
                loss, _ = nt_xent(z.reshape(2, len(first), -1), temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss.item()
            times.append(time.perf_counter())
            done += 1
            if done == warmup + steps:
                break
    return trainer["batch_size"] * steps / (times[warmup + steps - 1] - times[warmup - 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "quickstart.yaml")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--plain-cpu-settings", choices=["default", "engine"], default="default",
                        help="give the plain loop the engine's CPU settings too (toolkit/cpu.py), to isolate "
                             "the engine's own overhead")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # one measurement, in this process
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.side:
        print(json.dumps(SIDES[args.side](args.recipe, args.overrides, args.warmup, args.steps)))
        return
    results: dict[str, list[float]] = {side: [] for side in SIDES}
    for repeat in range(args.repeats):  # a fresh process per measurement; alternate which goes first
        for side in SIDES if repeat % 2 == 0 else list(SIDES)[::-1]:
            command = [sys.executable, __file__, "--side", side, "--recipe", str(args.recipe), "--warmup",
                       str(args.warmup), "--steps", str(args.steps), *args.overrides]
            environment = dict(os.environ, THROUGHPUT_PLAIN_CPU_SETTINGS=args.plain_cpu_settings)
            output = subprocess.run(command, check=True, capture_output=True, text=True, env=environment).stdout
            results[side].append(float(output.strip().splitlines()[-1]))
        print(f"plain {results['plain'][-1]:.1f}  engine {results['engine'][-1]:.1f} samples/s", file=sys.stderr)
    engine, plain = results["engine"], results["plain"]
    print(json.dumps({
        "benchmark": "throughput",
        "recipe": str(args.recipe),
        "overrides": args.overrides,
        "steps": args.steps,
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "plain_cpu_settings": args.plain_cpu_settings,
        "plain_samples_per_s": statistics.median(plain),
        "engine_samples_per_s": statistics.median(engine),
        "ratio": statistics.median(engine) / statistics.median(plain),
        "plain_runs": plain,
        "engine_runs": engine,
    }, indent=2))


SIDES = {"engine": engine_samples_per_s, "plain": plain_samples_per_s}

if __name__ == "__main__":
    main()
