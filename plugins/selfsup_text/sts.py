"""Semantic textual similarity: Spearman correlation between cosine similarity and gold scores.

The evaluation of SimCSE (Gao et al. 2021) and Sentence-BERT: embed both sentences of each
pair, score the pair by the cosine of the embeddings, and rank-correlate with the human scores
(STS-B: 0-5). Reported as ``sts_<split>_spearman`` in ``[-1, 1]`` (the papers print x100).
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from toolkit.interfaces import EvalContext, Evaluator

COLUMNS = ("sentence1", "sentence2", "score")


class STSEvaluator(Evaluator):
    """Spearman correlation on STS pair files.

    ``path`` is a folder holding ``<split>.tsv`` for each of ``splits`` (the layout of
    ``../shared/data/stsb``: ``dev.tsv``, ``test.tsv``), or a single pairs file, reported
    under its stem. A pairs file is UTF-8, tab-separated, unquoted, with a header naming at
    least the columns ``sentence1``, ``sentence2`` and ``score``. Files are read when the
    evaluator is built, so a wrong path fails before training.
    """

    def __init__(self, path: Path, splits: list[str] | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            files = {split: path / f"{split}.tsv" for split in (splits or ["dev", "test"])}
        elif path.is_file():
            if splits:
                raise ValueError(f"evaluator sts: path {path} is a file; `splits` applies to a folder only")
            files = {path.stem: path}
        else:
            raise FileNotFoundError(f"evaluator sts: path {path} does not exist (a folder with dev.tsv/test.tsv, "
                                    f"or one pairs file)")
        self.pairs = {split: read_pairs(file) for split, file in files.items()}

    def evaluate(self, context: EvalContext) -> dict[str, float]:
        metrics = {}
        for split, (first, second, gold) in self.pairs.items():
            similarity = F.cosine_similarity(context.embed(first), context.embed(second), dim=1)
            metrics[f"sts_{split}_spearman"] = spearman(similarity, gold)
        return metrics


def read_pairs(path: Path) -> tuple[list[str], list[str], Tensor]:
    """``(sentence1s, sentence2s, scores: (M,) float64)`` of a tab-separated pairs file."""
    if not path.is_file():
        raise FileNotFoundError(f"evaluator sts: {path} does not exist")
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}:1: the header lacks {', '.join(missing)}; an STS file has tab-separated "
                             f"columns including {', '.join(COLUMNS)}")
        first, second, scores = [], [], []
        for row in reader:
            try:
                scores.append(float(row["score"]))
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{reader.line_num}: score {row['score']!r} is not a number") from None
            first.append(row["sentence1"])
            second.append(row["sentence2"])
    if len(scores) < 2:
        raise ValueError(f"{path}: needs at least 2 pairs for a correlation, found {len(scores)}")
    return first, second, torch.tensor(scores, dtype=torch.float64)


def spearman(x: Tensor, y: Tensor) -> float:
    """Spearman's rho of ``x: (M,)`` and ``y: (M,)``: the Pearson correlation of their ranks,
    tied values sharing their average rank."""
    rx, ry = _average_ranks(x.double()), _average_ranks(y.double())
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = (rx.square().sum() * ry.square().sum()).sqrt()
    return float((rx * ry).sum() / denominator) if denominator > 0 else 0.0


def _average_ranks(values: Tensor) -> Tensor:
    """Ranks ``1..M`` of ``values: (M,)``, equal values getting the mean of their ranks."""
    _, inverse, counts = torch.unique(values, return_inverse=True, return_counts=True)
    last = counts.cumsum(0).double()
    return ((last - counts.double() + 1 + last) / 2)[inverse]
