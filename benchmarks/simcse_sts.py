"""Unsupervised SimCSE on CPU: STS-B test Spearman before/after and training sentences/s.

Two short runs of ``recipes/simcse-unsup-wiki.yaml`` (wiki1m_head, batch 64, temperature 0.05)
through the engine: one from the bundled all-MiniLM-L6-v2, one from a small randomly
initialised BERT that reuses MiniLM's tokenizer (``encoder.pretrained=false`` with a smaller
config). Each is evaluated on STS-B test before and after training.

    HF_HUB_OFFLINE=1 python benchmarks/simcse_sts.py [--minilm-steps 100] [--tiny-steps 186]

Prints JSON: per run, the number of steps (one epoch of 11,914 sentences caps it at 186), the
Spearman correlations, the training sentences/s (items per second, each encoded twice; median
and range of the logged 10-step windows, after the first) and the wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from toolkit.engine import Trainer
from toolkit.plugins import default_plugins
from toolkit.recipe import load_and_resolve

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "simcse-unsup-wiki.yaml"
STSB = ROOT.parent / "shared" / "data" / "stsb"
TEST_PAIRS = 1379
TINY_BERT = ("encoder.pretrained=false",
             "encoder.config={hidden_size: 128, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 512}")


def run(name: str, steps: int, overrides: tuple[str, ...], out: Path) -> dict[str, float]:
    recipe = load_and_resolve(RECIPE, [f"schedule.max_steps={steps}", "trainer.log_every=10",
                                       f"eval.evaluators=[{{name: sts, path: {STSB}, splits: [test]}}]",
                                       "eval.select_best=null",
                                       *overrides], default_plugins())
    trainer = Trainer.from_recipe(recipe, default_plugins(), out / name)
    started = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - started
    records = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train" and "samples_per_s" in r]
    evals = [r for r in records if r["kind"] in ("eval_start", "eval")]
    speeds = [r["samples_per_s"] for r in train[1:]] or [r["samples_per_s"] for r in train]
    return {
        "steps": trainer.total_steps,
        "sts_test_spearman_before": evals[0]["sts_test_spearman"],
        "sts_test_spearman_after": evals[-1]["sts_test_spearman"],
        "train_sentences_per_s_median": statistics.median(speeds),
        "train_sentences_per_s_range": [min(speeds), max(speeds)],
        "final_loss": train[-1]["loss"],
        "wall_s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minilm-steps", type=int, default=100)
    parser.add_argument("--tiny-steps", type=int, default=186)
    parser.add_argument("--tiny-lr", type=float, default=3e-4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            "tiny_bert_from_scratch": run("tiny", args.tiny_steps, (*TINY_BERT, f"optimizer.lr={args.tiny_lr}"),
                                          Path(tmp)),
            "minilm": run("minilm", args.minilm_steps, (), Path(tmp)),
        }
    json.dump({"recipe": str(RECIPE.relative_to(ROOT)), "batch_size": 64, "test_pairs": TEST_PAIRS, **results},
              sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
