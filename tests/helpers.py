"""What the training tests share: a trainer from a recipe, a simulated kill, state comparison, a CLI
run, a plugin that signals its own process, a tiny BERT."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from toolkit import hookimpl
from toolkit.engine import Trainer
from toolkit.plugins import Plugins
from toolkit.recipe import load_and_resolve

QUIET = open(os.devnull, "w")


def make_trainer(recipe: Path, plugins: Plugins, run_dir: Path, *overrides: str) -> Trainer:
    resolved = load_and_resolve(recipe, ["trainer.log_every=100", *overrides], plugins)
    return Trainer.from_recipe(resolved, plugins, run_dir, log=QUIET)


SIGNALLING_PLUGIN = '''
import os, signal
from toolkit import hookimpl

@hookimpl
def on_step_end(run, step, metrics):
    if step == int(os.environ["SEND_AT_STEP"]):
        for _ in range(int(os.environ.get("SEND_TIMES", "1"))):
            os.kill(os.getpid(), getattr(signal, os.environ["SEND_SIGNAL"]))
'''


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "toolkit", *args], capture_output=True, text=True, cwd=cwd,
                          env=environment, timeout=600)


class CrashAt:
    """A plugin that kills training (raises) when a given step ends."""

    def __init__(self, step: int) -> None:
        self.step = step

    @hookimpl
    def on_step_end(self, run, step, metrics):
        if step == self.step:
            raise KeyboardInterrupt(f"simulated kill at step {step}")


def kill_at(step: int, trainer: Trainer, plugins) -> None:
    """Run ``trainer`` until ``step`` ends, then kill it (after any checkpoint before that step),
    releasing its run directory as the end of a killed process does."""
    crash = CrashAt(step)
    plugins.manager.register(crash)
    try:
        with pytest.raises(KeyboardInterrupt):
            trainer.fit()
    finally:
        plugins.manager.unregister(crash)
        trainer.directory.unlock()


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def tiny_bert(folder: Path, sentences: list[str]) -> Path:
    """A 2-layer, 32-wide random BERT with a word-level tokenizer of ``sentences``, saved in
    ``folder`` (a model for the ``hf-transformer`` encoder that reaches no hub)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(sentences, trainers.WordLevelTrainer(special_tokens=specials))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                      cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    wrapped.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    return folder


def write_wav(path: Path, samples: np.ndarray, rate: int = 8000) -> Path:
    """A 16-bit PCM wav of ``samples``: ``(L,)`` mono or ``(L, C)``, integer values in int16 range
    (cast), creating its folder."""
    samples = np.asarray(samples)
    samples = samples[:, None] if samples.ndim == 1 else samples
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(samples.shape[1])
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(samples.astype("<i2").tobytes())
    return path
