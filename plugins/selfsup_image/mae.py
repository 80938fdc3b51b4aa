"""MAE: reconstruct the pixels of masked patches from the visible ones (He et al. 2022)."""

from __future__ import annotations

from functools import partial
from typing import Annotated

import torch
from annotated_types import Interval
from torch import Tensor, nn

from toolkit.compatibility import Contract, declare
from toolkit.data import seeded_uniforms
from toolkit.extras import require
from toolkit.interfaces import Batch, Encoder, Objective, ObjectiveOutput, Projector
from toolkit.limits import Positive

MaskRatio = Annotated[float, Interval(gt=0, lt=1)]
MASK_STREAM = 0x4D41
"""The stream of :func:`toolkit.data.seeded_uniforms` the masks are drawn from (augmentations use
streams ``0 .. V - 1``), so an item's mask depends only on its seed."""
PATCH_METHODS = ("normalize", "patch_tokens", "encode_tokens", "num_patches", "grid_size", "patch_size",
                 "num_prefix_tokens", "in_channels")
"""What MAE needs of its encoder (:class:`selfsup_image.timm_encoders.TimmEncoder` with a ViT)."""


@declare(Contract(consumes={"patches"}, min_views=1, max_views=1))
class MAE(Objective):
    """Masked autoencoder (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners").

    Each image ``x: (N, C, H, W)`` is cut into ``L`` patches of ``p x p`` pixels. A random
    ``mask_ratio`` of them is masked: item ``n`` draws noise ``u_n: (L,)`` and keeps the
    ``K = L - round(L * mask_ratio)`` patches of smallest noise (the paper's per-sample shuffle).
    The encoder sees the visible patches only (plus its class token); a light transformer
    decoder owned by the objective (``decoder_depth`` blocks of width ``decoder_dim`` with
    ``decoder_heads`` heads, the paper's 8 x 512 with 16 heads) takes the encoded visible tokens
    and a shared learned mask token in every masked position, all with fixed 2-D sine-cosine
    position embeddings, and predicts the ``p * p * C`` pixel values of every patch. With
    target ``t_nl`` the normalised pixels of patch ``l`` (the encoder's ``mean``/``std``), and with
    ``norm_pix_loss`` (the paper's default) each patch standardised by its own mean and
    (unbiased) variance, ``t <- (t - mean(t)) / sqrt(var(t) + 1e-6)``, the loss is the mean
    squared error over the masked patches only::

        loss = sum_{n,l} m_nl * mean_j (y_nlj - t_nlj)^2 / sum_{n,l} m_nl,   m_nl = 1 if patch l of n is masked

    The noise comes from each item's seed (``Batch.seeds``, set by the engine:
    :func:`toolkit.data.seeded_uniforms` on stream :data:`MASK_STREAM`), so a mask depends on the
    item and the epoch, not on the batch or process it lands in, and a resumed run draws the
    same masks; a batch without seeds draws from torch's global generator. One view per item.
    The encoder must be a ViT (``encoder: {name: timm, model: vit_...}``); the exported encoder
    is that ViT without the decoder, pooling all the patches of a full image.

    >>> objective = MAE(encoder, mask_ratio=0.75, decoder_dim=128, decoder_depth=2, decoder_heads=4)
    >>> loss, metrics = objective(batch, encoder, projector)
    """

    def __init__(
        self,
        encoder: Encoder,
        mask_ratio: MaskRatio = 0.75,
        decoder_dim: Positive = 512,
        decoder_depth: Positive = 8,
        decoder_heads: Positive = 16,
        norm_pix_loss: bool = True,
    ) -> None:
        super().__init__()
        # hasattr runs the properties: a timm encoder that is no ViT raises its own error, naming encoder.model
        missing = [name for name in PATCH_METHODS if not hasattr(encoder, name)]
        if missing:
            raise ValueError(f"objective mae needs an encoder with patch tokens (encoder: {{name: timm, model: "
                             f"vit_small_patch16_224}}); {type(encoder).__name__} has no {', '.join(missing)}")
        if decoder_dim % decoder_heads or decoder_dim % 4:
            raise ValueError(f"objective.decoder_dim ({decoder_dim}) must be a multiple of 4 (the 2-D sine-cosine "
                             f"position embedding) and of objective.decoder_heads ({decoder_heads})")
        patches = encoder.num_patches
        self.keep = patches - round(patches * mask_ratio)
        if not 0 < self.keep < patches:
            raise ValueError(f"objective.mask_ratio: {mask_ratio} of {patches} patches leaves {self.keep} visible; "
                             f"at least one patch must be visible and one masked")
        self.patch_size, self.norm_pix_loss = encoder.patch_size, norm_pix_loss
        block = require("timm.models.vision_transformer", "objective mae").Block
        layer_norm = partial(nn.LayerNorm, eps=1e-6)
        self.decoder_embed = nn.Linear(encoder.output_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer("decoder_pos_embed", sincos_2d(decoder_dim, encoder.grid_size)[None], persistent=False)
        self.decoder_blocks = nn.Sequential(*[block(decoder_dim, decoder_heads, mlp_ratio=4.0, qkv_bias=True,
                                                    norm_layer=layer_norm) for _ in range(decoder_depth)])
        self.decoder_norm = layer_norm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch_size ** 2 * encoder.in_channels)
        self.apply(_init_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, batch: Batch, encoder: Encoder, projector: Projector) -> ObjectiveOutput:
        x = batch.views[0]
        keep, mask = random_masking(self.noise(batch, encoder.num_patches, x.device), self.keep)
        prediction = self.reconstruct(x, keep, encoder)
        target = patchify(encoder.normalize(x), self.patch_size)
        if self.norm_pix_loss:
            target = normalize_patches(target)
        return ObjectiveOutput(masked_mse(prediction, target, mask), {})

    def noise(self, batch: Batch, patches: int, device: torch.device) -> Tensor:
        """``(N, L)`` uniform noise whose ``K`` smallest entries mark each item's visible patches."""
        if batch.seeds is None:
            return torch.rand(len(batch), patches, device=device)
        return seeded_uniforms(batch.seeds.to(device), MASK_STREAM, patches)

    def reconstruct(self, x: Tensor, keep: Tensor, encoder: Encoder) -> Tensor:
        """Predicted pixels ``(N, L, p * p * C)`` of every patch of ``x: (N, C, H, W)`` from the
        visible patches ``keep: (N, K)`` (indices into the ``L`` patches) only."""
        tokens = encoder.patch_tokens(x)
        visible = tokens.gather(1, keep[..., None].expand(-1, -1, tokens.shape[-1]))
        encoded = self.decoder_embed(encoder.encode_tokens(visible))
        prefix = encoded.shape[1] - keep.shape[1]
        n, patches, width = len(x), tokens.shape[1], encoded.shape[-1]
        sequence = self.mask_token.to(encoded.dtype).expand(n, patches, width).scatter(
            1, keep[..., None].expand(-1, -1, width), encoded[:, prefix:])
        sequence = torch.cat([encoded[:, :prefix], sequence + self.decoder_pos_embed], dim=1)
        decoded = self.decoder_norm(self.decoder_blocks(sequence))
        return self.decoder_pred(decoded[:, prefix:])


def random_masking(noise: Tensor, keep: int) -> tuple[Tensor, Tensor]:
    """The ``keep`` patches of smallest ``noise: (N, L)`` per item: their indices ``(N, keep)`` in
    ascending noise order, and the mask ``(N, L)``, 1.0 where a patch is masked, 0.0 where visible."""
    visible = noise.argsort(dim=1, stable=True)[:, :keep]
    mask = torch.ones_like(noise).scatter(1, visible, 0.0)
    return visible, mask


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """``(N, C, H, W) -> (N, L, p * p * C)``, patches in row-major order, each flattened as
    ``(p, p, C)`` (the MAE code's layout), ``L = (H / p) * (W / p)``."""
    n, channels, height, width = images.shape
    rows, columns = height // patch_size, width // patch_size
    x = images.reshape(n, channels, rows, patch_size, columns, patch_size)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(n, rows * columns, patch_size ** 2 * channels)


def normalize_patches(patches: Tensor, eps: float = 1e-6) -> Tensor:
    """MAE's ``norm_pix_loss`` target: every patch ``(..., P)`` minus its mean, over
    ``sqrt(unbiased variance + eps)``."""
    mean, var = patches.mean(dim=-1, keepdim=True), patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


def masked_mse(prediction: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean over patches with ``mask == 1`` of the per-patch mean squared error;
    ``prediction, target: (N, L, P)``, ``mask: (N, L)``."""
    per_patch = (prediction.float() - target.float()).pow(2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum()


def sincos_2d(dim: int, grid: tuple[int, int]) -> Tensor:
    """Fixed 2-D sine-cosine position embeddings ``(rows * columns, dim)`` in row-major patch order
    (MAE, after Vaswani et al. 2017): half the channels encode the row, half the column, each as
    ``[sin(pos * w_k), cos(pos * w_k)]`` with ``w_k = 10000^(-k / (dim / 4))``, ``k < dim / 4``."""
    rows, columns = grid
    frequencies = 10000.0 ** -(torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))

    def embed(positions: Tensor) -> Tensor:
        angles = positions.to(torch.float64)[:, None] * frequencies
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    row, column = torch.meshgrid(torch.arange(rows), torch.arange(columns), indexing="ij")
    return torch.cat([embed(row.flatten()), embed(column.flatten())], dim=1).float()


def _init_weights(module: nn.Module) -> None:
    """The MAE code's initialisation of the decoder: Xavier-uniform linear layers, zero biases, unit norms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
