"""Exported encoders: ``model.safetensors`` + ``encoder.json``, loadable without the run.

``encoder.json`` names the encoder component and its parameters (and the augmentation whose
evaluation transform prepares inputs), so :func:`load_encoder` rebuilds the module through the
plugin registry and loads the weights; nothing is unpickled. An export may come from anyone: the
module is first built on the meta device (no memory) and its tensor names and shapes compared
with the safetensors header, so a crafted ``encoder.json`` cannot make it allocate terabytes. An encoder with a
``native_format`` (a Hugging Face model, say) is also saved in that format in a subfolder.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model

from toolkit.errors import DataError
from toolkit.interfaces import Encoder
from toolkit.plugins import Plugins, default_plugins, discover
from toolkit.errors import RecipeError
from toolkit.recipe import build, resolve_block

FORMAT = "selfsup-encoder"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
METADATA = "encoder.json"


def export_encoder(
    encoder: Encoder,
    encoder_block: dict[str, Any],
    augmentation_block: dict[str, Any],
    out_dir: Path,
    plugins: Plugins,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``encoder``'s weights and metadata into ``out_dir``; return ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    component = plugins.get("encoder", encoder_block["name"])
    info = plugins.infos.get(component.plugin)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "encoder": encoder_block,
        "augmentation": augmentation_block,
        "plugin": component.plugin,
        "augmentation_plugin": plugins.get("augmentation", augmentation_block["name"]).plugin,
        "plugins": sorted(resolve_block(plugins, "encoder", encoder_block).plugins()
                          | resolve_block(plugins, "augmentation", augmentation_block).plugins()),
        "plugin_version": info.version if info else None,
        "output_dim": encoder.output_dim,
        "output_kind": encoder.output_kind,
        **(extra or {}),
    }
    if encoder.native_format is not None:
        metadata["native"] = encoder.native_format
        # metadata (for a model card) goes to encoders whose save_native asks for it
        wants_metadata = "metadata" in inspect.signature(encoder.save_native).parameters
        encoder.save_native(out_dir / encoder.native_format, *([metadata] if wants_metadata else []))
    save_model(encoder, str(out_dir / WEIGHTS))
    (out_dir / METADATA).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return out_dir


def load_encoder(path: str | Path, plugins: Plugins | None = None) -> Encoder:
    """The encoder exported to ``path`` (a folder with ``encoder.json``), in eval mode.

    Without ``plugins``, only the plugins the export names are loaded (an image encoder imports
    no text, audio or video library).
    """
    metadata = read_metadata(path)
    plugins = plugins or _plugins_for(metadata)
    weights = Path(path) / WEIGHTS
    _check_shapes(plugins, metadata, weights)
    encoder = build(plugins, "encoder", metadata["encoder"])
    load_model(encoder, str(weights))
    return encoder.eval()


def _check_shapes(plugins: Plugins, metadata: dict[str, Any], weights: Path) -> None:
    """Compare the tensors the described encoder would have with those stored, before building it."""
    if not weights.is_file():
        raise DataError(f"{weights} is missing; re-export the encoder (selfsup export RUN_DIR)")
    try:
        with safe_open(str(weights), framework="pt") as stored_file:
            stored = {name: tuple(stored_file.get_slice(name).get_shape()) for name in stored_file.keys()}
    except Exception as error:  # safetensors raises its own SafetensorError for damaged files
        raise DataError(f"{weights}: not a readable safetensors file ({error}); re-export the encoder") from None
    try:
        encoder = resolve_block(plugins, "encoder", metadata["encoder"], str(Path(weights).parent / METADATA))
    except RecipeError as error:
        raise DataError(f"the encoder it describes cannot be built: {error}") from None
    try:
        with torch.device("meta"):
            skeleton = encoder.build()
    except RecipeError as error:  # the factory refuses the parameters the export describes
        raise DataError(f"{Path(weights).parent / METADATA}: the encoder it describes cannot be built: "
                        f"{error}") from None
    except Exception:  # an encoder that reads files while built (a Hugging Face model): load_model checks it
        return
    expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    wrong = [f"{name} {expected[name]} vs stored {stored[name]}" for name in expected.keys() & stored.keys()
             if expected[name] != stored[name]]
    missing = sorted(expected.keys() - stored.keys())
    if wrong or missing:
        problem = f"shapes differ: {', '.join(wrong[:3])}" if wrong else f"missing tensors: {', '.join(missing[:3])}"
        raise DataError(f"{Path(weights).parent / METADATA} does not describe the weights in {weights} ({problem}); "
                         f"the export was edited or mixed with another one")


def load_eval_transform(path: str | Path, plugins: Plugins | None = None) -> Callable[[Any], Any]:
    """The deterministic input transform (resize, crop, ...) the exported encoder was evaluated
    with: a raw item in, one model input out (the image plugin's takes a PIL image, an
    ``(H, W[, C])`` numpy array, an image file path or a uint8 ``(C, H, W)`` tensor)."""
    metadata = read_metadata(path)
    return build(plugins or _plugins_for(metadata), "augmentation", metadata["augmentation"]).eval_transform


def _plugins_for(metadata: dict[str, Any]) -> Plugins:
    """The installed plugins that registered the export's encoder and augmentation, nested blocks
    included (and the core), or all of them for exports that do not say (older ones, local plugins)."""
    named = {"core", *metadata.get("plugins", [metadata.get("plugin"), metadata.get("augmentation_plugin")])}
    if None in named:
        return default_plugins()
    plugins = discover(only=named)  # type: ignore[arg-type]
    return plugins if named <= {n for n, i in plugins.infos.items() if i.error is None} else default_plugins()


def read_metadata(path: str | Path) -> dict[str, Any]:
    meta_path = Path(path) / METADATA
    if not meta_path.is_file():
        raise DataError(f"{path} is not an exported encoder: {METADATA} is missing "
                                f"(create one with `selfsup export RUN_DIR --out {path}`)")
    metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    if metadata.get("format") != FORMAT:
        raise DataError(f"{meta_path}: not a selfsup encoder export (format {metadata.get('format')!r})")
    return metadata
