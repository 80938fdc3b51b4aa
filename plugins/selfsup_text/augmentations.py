"""SimCSE's augmentation: none. The views are the text itself; the encoder's dropout makes them differ."""

from __future__ import annotations

from typing import Sequence

from toolkit.limits import Positive
from toolkit.compatibility import Contract, declare
from toolkit.interfaces import Augmentation


@declare(lambda p: Contract(consumes={"text"}, produces={"text"}, views=p.get("n_views", 2)))
class SimCSEViews(Augmentation):
    """``item -> n_views`` views for SimCSE (Gao et al. 2021).

    - a string ``s`` (unsupervised SimCSE) gives ``[s] * n_views``: the same sentence encoded
      ``n_views`` times, with independent dropout masks as the only noise;
    - a tuple ``(anchor, positive, hard_negative)`` (supervised SimCSE on NLI triples) gives its
      members as the views, so ``n_views`` must equal the tuple's length (3).

    The evaluation twin is the sentence itself (the anchor of a tuple).
    """

    def __init__(self, n_views: Positive = 2) -> None:
        self.n_views = n_views

    def __call__(self, item: str | Sequence[str]) -> list[str]:
        if isinstance(item, str):
            return [item] * self.n_views
        if len(item) != self.n_views:
            raise ValueError(f"the data source gives items of {len(item)} texts but augmentation.n_views is "
                             f"{self.n_views}; set augmentation.n_views: {len(item)}")
        return list(item)

    def eval_transform(self, item: str | Sequence[str]) -> str:
        return item if isinstance(item, str) else item[0]
