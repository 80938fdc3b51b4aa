"""SimCSE's MLP head: used in training only, so evaluation and export see the encoder alone."""

from __future__ import annotations

from torch import Tensor, nn

from toolkit.interfaces import Projector


class SimCSEMLP(Projector):
    """``z = tanh(W h + b)``, ``h: (N, D) -> z: (N, D)`` (the SimCSE code's ``MLPLayer``, BERT's pooler shape).

    A projector is applied by the objective and never by evaluation or export, which is SimCSE's
    ``mlp_only_train`` (the paper's unsupervised setting). For the MLP at test time too, use the
    encoder's ``pooling: cls`` (the model's own pooler) with the identity projector instead.
    """

    def __init__(self, input_dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(input_dim, input_dim)
        self.output_dim = input_dim

    def forward(self, h: Tensor) -> Tensor:
        return self.dense(h).tanh()
