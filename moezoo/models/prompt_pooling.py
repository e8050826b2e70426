"""One vector from a prompt's token embeddings: what a prompt-conditioned (FiLM) encoder reads.

:func:`masked_mean` is the plain mean over the prompt's tokens. :class:`AttentionPooling`
learns which tokens matter: a chat prompt is mostly template (``<|user|>``, the image
placeholder's newline, "Answer the question using a single word or phrase.", the assistant
header), the same in every sample, and a mean dilutes the few words that change what the image
features should show. On shapes-VQA, a classifier probe FiLM-conditioned on the question's words
alone learned shape questions where one conditioned on the mean of the whole prompt had not yet.
"""

from __future__ import annotations

import torch
from torch import nn


def masked_mean(prompt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(N, P, D)``, ``(N, P)`` -> ``(N, D)`` mean over the real tokens (0 for a row with none).

    Example:
        >>> masked_mean(torch.tensor([[[1.0], [3.0], [9.0]]]), torch.tensor([[True, True, False]]))
        tensor([[2.]])
    """
    mask = mask.to(prompt.dtype)[..., None]
    return (prompt * mask).sum(1) / mask.sum(1).clamp_min(1.0)


class AttentionPooling(nn.Module):
    """``sum_i softmax_i(w . LayerNorm(e_i)) e_i`` over the prompt's tokens ``e_i``.

    The score vector ``w`` starts at zero, so an untrained pool is the mean; the scores read
    normalised embeddings, so they learn at the same pace whatever the embeddings' scale.

    Example:
        >>> pool = AttentionPooling(8)
        >>> prompt, mask = torch.randn(2, 5, 8), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool()
        >>> torch.allclose(pool(prompt, mask), masked_mean(prompt, mask), atol=1e-6)
        True
    """

    def __init__(self, dim: int):
        super().__init__()
        self.score_norm = nn.LayerNorm(dim)
        self.score = nn.Linear(dim, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, prompt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``prompt (N, P, D)``, ``mask (N, P)`` (True on the prompt's tokens) -> ``(N, D)``."""
        scores_NP = self.score(self.score_norm(prompt)).squeeze(-1).float()
        scores_NP = scores_NP.masked_fill(~mask.bool(), float("-inf"))
        weights_NP = torch.softmax(scores_NP, dim=-1).nan_to_num(0.0).to(prompt.dtype)  # a row with no prompt: 0
        return torch.einsum("np,npd->nd", weights_NP, prompt)
