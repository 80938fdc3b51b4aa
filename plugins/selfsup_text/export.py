"""Export a trained text encoder as a Hugging Face folder that other libraries load directly.

The folder is a sentence-transformers model: the transformer (``save_pretrained``:
``config.json`` + ``model.safetensors``) and its tokenizer, the modules that reproduce the
encoder's pooling, and every module the base model had after its pooling (all-MiniLM-L6-v2's
``Normalize``), its ``max_seq_length`` and a model card (``README.md``: base model, recipe,
metrics). Both of these give the encoder's embeddings (normalised, where the base model
normalised)::

    transformers.AutoModel.from_pretrained(folder)           # then pool as the encoder's `pooling`
    sentence_transformers.SentenceTransformer(folder)        # pooled already

From the command line, for a finished run (or any folder ``selfsup export`` wrote)::

    python -m selfsup_text.export runs/simcse-unsup-wiki/encoder hf-model/
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors.torch import save_file

if TYPE_CHECKING:
    from selfsup_text.encoders import HFTransformerEncoder

ST_MODULES = "sentence_transformers.models"
SANE_LENGTH = 1_000_000
"""Tokenizers without a limit report ``model_max_length`` as 1e30."""


def save_pretrained(encoder: HFTransformerEncoder, out_dir: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``encoder`` as a Hugging Face + sentence-transformers folder; return it.

    Pooling maps onto sentence-transformers modules: ``mean`` -> mean pooling;
    ``cls_before_pooler`` -> CLS-token pooling; ``cls`` -> CLS-token pooling followed by a
    ``Dense`` layer with ``tanh`` holding the model's pooler weights (what ``pooler_output``
    computes). The base model's own modules after its pooling follow, copied unchanged (only
    ``Normalize`` when the encoder's width differs from the base model's). ``metadata`` (the
    export's ``encoder.json``: recipe, step, metrics) goes into the model card.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    encoder.model.save_pretrained(out)
    encoder.tokenizer.save_pretrained(out)
    dim = encoder.output_dim
    base = _base_folder(encoder.source)
    base_config = _read_json(base / "sentence_bert_config.json") if base else None
    modules: list[dict[str, str]] = [{"path": "", "type": f"{ST_MODULES}.Transformer"}]
    _write_json(out / "1_Pooling" / "config.json", {
        "word_embedding_dimension": dim,
        "pooling_mode_cls_token": encoder.pooling != "mean",
        "pooling_mode_mean_tokens": encoder.pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    })
    modules.append({"path": "1_Pooling", "type": f"{ST_MODULES}.Pooling"})
    if encoder.pooling == "cls":
        dense = encoder.model.pooler.dense
        _write_json(out / "2_Dense" / "config.json", {"in_features": dim, "out_features": dim, "bias": True,
                                                      "activation_function": "torch.nn.modules.activation.Tanh"})
        save_file({"linear.weight": dense.weight.detach().cpu().contiguous(),
                   "linear.bias": dense.bias.detach().cpu().contiguous()}, str(out / "2_Dense" / "model.safetensors"))
        modules.append({"path": "2_Dense", "type": f"{ST_MODULES}.Dense"})
    for source, module_type in _modules_after_pooling(base, dim) if base else []:
        path = f"{len(modules)}_{module_type.rsplit('.', 1)[-1]}"
        if source.is_dir():
            shutil.copytree(source, out / path, dirs_exist_ok=True)
        modules.append({"path": path, "type": module_type})
    _write_json(out / "modules.json", [{"idx": i, "name": str(i), "path": m["path"], "type": m["type"]}
                                       for i, m in enumerate(modules)])
    max_seq_length = (base_config or {}).get("max_seq_length") or _model_length(encoder)
    _write_json(out / "sentence_bert_config.json", {
        "max_seq_length": max_seq_length, "do_lower_case": (base_config or {}).get("do_lower_case", False)})
    (out / "README.md").write_text(model_card(encoder, [m["type"].rsplit(".", 1)[-1] for m in modules],
                                              max_seq_length, metadata or {}), encoding="utf-8")
    return out


def model_card(encoder: HFTransformerEncoder, module_names: list[str], max_seq_length: int,
               metadata: dict[str, Any]) -> str:
    """A sentence-transformers model card: base model, modules, recipe and metrics."""
    model = str((metadata.get("encoder") or {}).get("model") or encoder.source)
    is_hub_name = not model.startswith(("pkg:", "/", ".", "~"))
    metrics = metadata.get("metrics") or {}
    header = ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity",
              "tags: [sentence-transformers, feature-extraction, selfsup]"]
    header += [f"base_model: {model}"] if is_hub_name else []
    trained = f"recipe `{metadata['recipe']}`" if "recipe" in metadata else "a selfsup recipe"
    trained += f", step {metadata['step']}" if "step" in metadata else ""
    lines = header + ["---", "", f"# {metadata.get('recipe', 'selfsup text encoder')}", "",
                      f"A sentence encoder trained with selfsup ({trained}).", "",
                      f"- Base model: `{model}`",
                      f"- Modules: {' -> '.join(module_names)} (pooling `{encoder.pooling}`, "
                      f"{encoder.output_dim} dimensions)",
                      f"- max_seq_length: {max_seq_length} (training truncated to {encoder.max_length} tokens)", ""]
    if metrics:
        lines += ["## Evaluation", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {name} | {value:.4f} |" for name, value in metrics.items()] + [""]
    lines += ["## Usage", "", "```python", "from sentence_transformers import SentenceTransformer",
              'model = SentenceTransformer("path/to/this/folder")',
              'embeddings = model.encode(["A man is playing a guitar."])', "```", ""]
    return "\n".join(lines)


def export_encoder_folder(encoder_dir: str | Path, out_dir: str | Path) -> Path:
    """The encoder a selfsup export (``RUN_DIR/encoder`` or ``selfsup export --out``) holds, as a HF folder."""
    from selfsup_text.encoders import HFTransformerEncoder
    from toolkit.export import load_encoder, read_metadata

    encoder = load_encoder(encoder_dir)
    if not isinstance(encoder, HFTransformerEncoder):
        raise ValueError(f"{encoder_dir}: holds a {type(encoder).__name__}, not an hf-transformer encoder")
    return save_pretrained(encoder, out_dir, read_metadata(encoder_dir))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m selfsup_text.export",
                                     description="Write a trained hf-transformer encoder as a Hugging Face folder.")
    parser.add_argument("encoder_dir", type=Path, help="RUN_DIR/encoder, or a folder `selfsup export` wrote")
    parser.add_argument("out_dir", type=Path, help="where to write the Hugging Face folder")
    args = parser.parse_args(argv)
    encoder_dir = args.encoder_dir / "encoder" if (args.encoder_dir / "encoder").is_dir() else args.encoder_dir
    try:
        out = export_encoder_folder(encoder_dir, args.out_dir)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(out)
    return 0


def _base_folder(source: str) -> Path | None:
    """The base model's files: its local folder, or its Hugging Face cache snapshot (fetched if
    the hub is reachable and allowed); ``None`` when neither holds a sentence-transformers model."""
    folder = Path(source)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(source, allow_patterns=["modules.json", "sentence_bert_config.json",
                                                                    "*_*/*"]))
        except Exception:  # offline and not cached, or not on the hub: a plain transformers model
            return None
    return folder if (folder / "modules.json").is_file() else None


def _modules_after_pooling(base: Path, dim: int) -> list[tuple[Path, str]]:
    """``(folder, type)`` of the base model's modules after its Pooling; only Normalize if the
    base model's width is not ``dim`` (a resized architecture)."""
    modules = _read_json(base / "modules.json") or []
    types = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if "Pooling" not in types:
        return []
    after = modules[types.index("Pooling") + 1:]
    pooling = _read_json(base / modules[types.index("Pooling")]["path"] / "config.json") or {}
    if pooling.get("word_embedding_dimension") != dim:
        after = [m for m in after if m["type"].endswith(".Normalize")]
    return [(base / m.get("path", ""), m["type"]) for m in after]


def _model_length(encoder: HFTransformerEncoder) -> int:
    """The longest input the model takes: its tokenizer's and position embeddings' limit."""
    limits = [getattr(encoder.tokenizer, "model_max_length", None),
              getattr(encoder.model.config, "max_position_embeddings", None)]
    sane = [int(n) for n in limits if n is not None and 0 < n < SANE_LENGTH]
    return min(sane) if sane else encoder.max_length


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
