"""Any timm backbone as an encoder (the ``[vit]`` extra), with the patch-level methods of a
Vision Transformer that masked image modelling (MAE) needs, and export to a plain timm folder."""

from __future__ import annotations

import difflib
import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from toolkit.compatibility import Contract, declare
from toolkit.errors import RecipeError
from toolkit.extras import require
from toolkit.interfaces import Encoder
from toolkit.limits import Positive
from toolkit.weights import load_weights, read_state_dict

from selfsup_image.encoders import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:  # timm is imported when an encoder is built, not when the plugin registers
    from timm.models.vision_transformer import VisionTransformer

DEFAULT_MODEL = "vit_small_patch16_224"
VIT_MODULE = "timm.models.vision_transformer"
NATIVE_WEIGHTS = "model.safetensors"
NATIVE_CONFIG = "config.json"
_SET_ELSEWHERE = {"pretrained": "weights", "num_classes": None, "img_size": "image_size", "patch_size": "patch_size"}
"""``create_model`` arguments that ``encoder.options`` may not set, and the key that sets them."""


def _contract(params: dict[str, Any]) -> Contract:
    """Image in, a tensor out; a Vision Transformer of timm also gives patch tokens (``patches``).
    An unknown model name is refused here, so ``selfsup recipe validate`` reports it."""
    timm = require("timm", "encoder timm")
    model = params.get("model", DEFAULT_MODEL)
    if not timm.is_model(model):
        raise RecipeError(unknown_model(model))
    vit = timm.models.model_entrypoint(model).__module__ == VIT_MODULE
    return Contract(consumes={"image"}, produces={"tensor", "patches"} if vit else {"tensor"})


@declare(_contract)
class TimmEncoder(Encoder):
    """A timm model without its classifier: ``x (N, C, H, W) -> h (N, D)``.

    Built as ``timm.create_model(model, pretrained=False, num_classes=0, img_size=image_size,
    patch_size=patch_size, **options)`` (``img_size`` and ``patch_size`` only when set, for the
    models that take them: Vision Transformers and their kin), so ``h`` is what timm gives with
    ``num_classes=0``: ``forward_features`` then the model's own pooling (a ViT's class token with
    ``global_pool: token``, the default, or the mean of the patch tokens with ``avg``), of
    ``D = num_features`` (``head_hidden_size`` for the few models with a pre-logits layer).
    ``x`` is float in ``[0, 1]``; the encoder normalises with ``mean``/``std`` itself.
    ``options`` passes any other argument of the model (``{embed_dim: 192, depth: 12,
    num_heads: 3}`` makes a ViT-Tiny of ``vit_small_patch16_224``; ``drop_path_rate``, ...).

    ``weights`` loads a local file of timm's own keys (``.safetensors``, or a ``torch.save``
    state dict, also wrapped as ``{"state_dict": ...}`` or ``{"model": ...}``), converted by
    timm's checkpoint filter of the architecture (a ViT's position embeddings are resampled to
    ``image_size``, its patch projection to ``patch_size``); the classifier is ignored. Nothing
    is downloaded. ``freeze_patch_embed`` keeps a ViT's random patch projection fixed, the
    stability trick of MoCo v3 (Chen, Xie, He 2021, section 4.2).

    Patch-level methods, for Vision Transformers of timm (``VisionTransformer`` with a pixel
    ``PatchEmbed``; any other model raises a ``ValueError`` that says so): :meth:`patch_tokens`,
    :meth:`encode_tokens`, :attr:`num_patches`, :attr:`grid_size`, :attr:`patch_size`,
    :attr:`num_prefix_tokens`, with :meth:`normalize` and :attr:`in_channels`.

    ``selfsup export`` also writes ``<export>/timm/``: ``model.safetensors`` (the timm model's
    state dict) and timm's ``config.json`` (``architecture``, ``model_args``, the input size
    and normalisation), which ``timm.create_model("local-dir:<export>/timm", pretrained=True)``
    loads, as does ``timm.create_model(architecture, **model_args)`` + ``load_state_dict``.

    >>> encoder = TimmEncoder("vit_small_patch16_224", image_size=32, patch_size=4)
    >>> encoder(torch.rand(8, 3, 32, 32)).shape
    torch.Size([8, 384])
    """

    native_format = "timm"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        image_size: Positive | None = None,
        patch_size: Positive | None = None,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        weights: Path | None = None,
        freeze_patch_embed: bool = False,
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        timm = require("timm", "encoder timm")
        options = dict(options or {})
        for key, instead in _SET_ELSEWHERE.items():
            if key in options:
                where = f"set encoder.{instead}" if instead else "the encoder has no classifier"
                raise ValueError(f"encoder.options.{key}: not an option of encoder timm ({where})")
        in_channels = int(options.get("in_chans", 3))
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(f"encoder.mean and encoder.std need {in_channels} values (one per input channel, "
                             f"encoder.options.in_chans)")
        if not timm.is_model(model):
            raise ValueError(unknown_model(model))
        self.model_name = model
        self.model_args: dict[str, Any] = {"num_classes": 0, **options}
        if image_size is not None:
            self.model_args["img_size"] = image_size
        if patch_size is not None:
            self.model_args["patch_size"] = patch_size
        try:
            self.model = timm.create_model(model, pretrained=False, **self.model_args)
        except TypeError as error:  # an argument this architecture does not take
            raise ValueError(f"encoder: timm model {model!r} does not take one of "
                             f"{sorted(set(self.model_args) - {'num_classes'})} ({error}); image_size and "
                             f"patch_size are for Vision Transformers, options are the model's own "
                             f"arguments") from None
        self.output_dim = int(getattr(self.model, "head_hidden_size", None) or self.model.num_features)
        self.in_channels = in_channels
        self.normalization = {"mean": list(mean), "std": list(std)}  # as given, for the native config
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        if weights is not None:
            load_timm_weights(self.model, weights)
        if freeze_patch_embed:
            patch_embed = getattr(self.model, "patch_embed", None)
            if not isinstance(patch_embed, nn.Module):
                raise ValueError(f"encoder.freeze_patch_embed: timm model {model!r} has no patch embedding to "
                                 f"freeze; remove the key or use a Vision Transformer")
            patch_embed.requires_grad_(False)

    def normalize(self, x: Tensor) -> Tensor:
        """``(x - mean) / std`` per channel, ``x: (N, C, H, W)`` in ``[0, 1]``: what the model sees."""
        return (x - self.mean) / self.std

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.normalize(x))

    def patch_tokens(self, x: Tensor) -> Tensor:
        """``x: (N, C, H, W)`` -> ``(N, L, D)``: the patch embeddings plus their position embeddings,
        without the prefix (class, register) tokens; ``L = num_patches``, ``D = output_dim``."""
        vit = self._vit("patch_tokens")
        tokens = vit.patch_embed(self.normalize(x))
        if vit.pos_embed is not None:
            tokens = tokens + vit.pos_embed[:, 0 if vit.no_embed_class else vit.num_prefix_tokens:]
        return vit.pos_drop(tokens)

    def encode_tokens(self, tokens: Tensor) -> Tensor:
        """Any subset of :meth:`patch_tokens`, ``(N, L', D)`` -> ``(N, P + L', D)``: the prefix tokens
        (with their position embeddings) put in front, then the transformer blocks and the final
        norm, as ``forward_features`` does for all the patches (``P = num_prefix_tokens``; timm's
        patch dropout, a training option, is left to the caller)."""
        vit = self._vit("encode_tokens")
        prefix = [token.expand(len(tokens), -1, -1) for token in (vit.cls_token, vit.reg_token) if token is not None]
        if prefix:
            first = torch.cat(prefix, dim=1)
            if vit.pos_embed is not None and not vit.no_embed_class:
                first = first + vit.pos_embed[:, :vit.num_prefix_tokens]
            tokens = torch.cat([vit.pos_drop(first), tokens], dim=1)
        return vit.norm(vit.blocks(vit.norm_pre(tokens)))

    @property
    def num_patches(self) -> int:
        """``L``, the patches of one image."""
        return int(self._vit("num_patches").patch_embed.num_patches)

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patches per column and per row, ``(H / patch_size, W / patch_size)``."""
        rows, columns = self._vit("grid_size").patch_embed.grid_size
        return int(rows), int(columns)

    @property
    def patch_size(self) -> int:
        """The side of a (square) patch in pixels."""
        height, width = self._vit("patch_size").patch_embed.patch_size
        if height != width:
            raise ValueError(f"encoder.patch_size: the patches of {self.model_name} are {height}x{width}; the patch "
                             f"methods need square patches")
        return int(height)

    @property
    def num_prefix_tokens(self) -> int:
        """``P``: class and register tokens in front of the patches."""
        return int(self._vit("num_prefix_tokens").num_prefix_tokens)

    def save_native(self, directory: Path, metadata: dict[str, Any] | None = None) -> None:
        """Write the timm model as timm's own local folder: ``model.safetensors`` and ``config.json``
        (``architecture``, ``num_classes: 0``, ``model_args``, and ``pretrained_cfg`` with the input
        size, ``mean``/``std`` and, from the export's augmentation, ``crop_pct``)."""
        from safetensors.torch import save_model

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_model(self.model, str(directory / NATIVE_WEIGHTS))
        size = self.model_args.get("img_size") or self.model.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
        inputs: dict[str, Any] = {"input_size": [self.in_channels, size, size], **self.normalization, "num_classes": 0}
        crop = ((metadata or {}).get("augmentation") or {}).get("eval_crop_fraction")
        if crop is not None:
            inputs.update(crop_pct=crop, crop_mode="center")
        config = {"architecture": self.model_name, "num_classes": 0, "num_features": self.output_dim,
                  "model_args": self.model_args, "pretrained_cfg": inputs}
        (directory / NATIVE_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    def _vit(self, what: str) -> VisionTransformer:
        """The model, if it is a Vision Transformer the patch methods understand."""
        from timm.layers import PatchEmbed
        from timm.models.vision_transformer import VisionTransformer

        model = self.model
        if type(model) is not VisionTransformer or type(model.patch_embed) is not PatchEmbed:
            raise ValueError(f"encoder.model: {what} needs a Vision Transformer of timm (a vit_* model, e.g. "
                             f"vit_small_patch16_224), but {self.model_name!r} is a {type(model).__name__}")
        if model.dynamic_img_size:
            raise ValueError("encoder.options.dynamic_img_size: the patch methods need a fixed image size; "
                             "remove the option and set encoder.image_size")
        return model


def unknown_model(model: str) -> str:
    """The error for a model name timm does not know, with close matches."""
    import timm

    close = difflib.get_close_matches(model, timm.list_models(), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "`timm.list_models('vit_*')` lists them"
    return f"encoder.model: timm has no model {model!r}; {hint}"


def load_timm_weights(model: nn.Module, path: Path) -> None:
    """Load the state dict in ``path`` into the timm ``model`` strictly (its classifier aside),
    after timm's checkpoint filter for the architecture, with errors naming ``encoder.weights``."""
    state = read_state_dict(path, "a timm state dict: .safetensors, .pth")
    convert = getattr(importlib.import_module(type(model).__module__), "checkpoint_filter_fn", None)
    if convert is not None:
        state = convert(state, model)
    classifiers = model.pretrained_cfg.get("classifier") or ()
    classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
    load_weights(model, state, path, "model", drop=tuple(f"{c}." for c in classifiers),
                 hint="check encoder.model and encoder.options: use a state dict of the same timm architecture")
