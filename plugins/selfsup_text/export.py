"""Export a trained text encoder as a Hugging Face folder that other libraries load directly.

The folder holds the transformer (``save_pretrained``: ``config.json`` + ``model.safetensors``),
its tokenizer, and the sentence-transformers module files that reproduce the encoder's pooling,
so that both of these give the encoder's embeddings::

    transformers.AutoModel.from_pretrained(folder)           # then pool as the encoder's `pooling`
    sentence_transformers.SentenceTransformer(folder)        # pooled already

From the command line, for a finished run (or any folder ``selfsup export`` wrote)::

    python -m selfsup_text.export runs/simcse-unsup-wiki/encoder hf-model/
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors.torch import save_file

if TYPE_CHECKING:
    from selfsup_text.encoders import HFTransformerEncoder

ST_MODULES = "sentence_transformers.models"


def save_pretrained(encoder: HFTransformerEncoder, out_dir: str | Path) -> Path:
    """Write ``encoder`` as a Hugging Face + sentence-transformers folder; return it.

    Pooling maps onto sentence-transformers modules: ``mean`` -> mean pooling;
    ``cls_before_pooler`` -> CLS-token pooling; ``cls`` -> CLS-token pooling followed by a
    ``Dense`` layer with ``tanh`` holding the model's pooler weights (what ``pooler_output`` computes).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    encoder.model.save_pretrained(out)
    encoder.tokenizer.save_pretrained(out)
    dim = encoder.output_dim
    modules: list[dict[str, Any]] = [{"idx": 0, "name": "0", "path": "", "type": f"{ST_MODULES}.Transformer"},
                                     {"idx": 1, "name": "1", "path": "1_Pooling", "type": f"{ST_MODULES}.Pooling"}]
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": encoder.max_length, "do_lower_case": False})
    _write_json(out / "1_Pooling" / "config.json", {
        "word_embedding_dimension": dim,
        "pooling_mode_cls_token": encoder.pooling != "mean",
        "pooling_mode_mean_tokens": encoder.pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    })
    if encoder.pooling == "cls":
        dense = encoder.model.pooler.dense
        _write_json(out / "2_Dense" / "config.json", {"in_features": dim, "out_features": dim, "bias": True,
                                                      "activation_function": "torch.nn.modules.activation.Tanh"})
        save_file({"linear.weight": dense.weight.detach().cpu().contiguous(),
                   "linear.bias": dense.bias.detach().cpu().contiguous()}, str(out / "2_Dense" / "model.safetensors"))
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": f"{ST_MODULES}.Dense"})
    _write_json(out / "modules.json", modules)
    return out


def export_encoder_folder(encoder_dir: str | Path, out_dir: str | Path) -> Path:
    """The encoder a selfsup export (``RUN_DIR/encoder`` or ``selfsup export --out``) holds, as a HF folder."""
    from selfsup_text.encoders import HFTransformerEncoder
    from toolkit.export import load_encoder

    encoder = load_encoder(encoder_dir)
    if not isinstance(encoder, HFTransformerEncoder):
        raise ValueError(f"{encoder_dir}: holds a {type(encoder).__name__}, not an hf-transformer encoder")
    return save_pretrained(encoder, out_dir)


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


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
