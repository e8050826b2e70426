"""One vector from a prompt's token embeddings: what a prompt-conditioned (FiLM) encoder reads.

:func:`masked_mean` is the plain mean over the prompt's tokens. :class:`AttentionPooling`
learns which tokens matter: a chat prompt is mostly template (``<|user|>``, the image
placeholder's newline, "Answer the question using a single word or phrase.", the assistant
header), the same in every sample, and a mean dilutes the few words that change what the image
features should show. On shapes-VQA, a classifier probe FiLM-conditioned on the question's words
alone learned shape questions where one conditioned on the mean of the whole prompt had not yet.

Both are bags of words: "Where is the red circle relative to the blue square?" and "Where is the
blue square relative to the red circle?" pool to the same vector, though their answers are
opposite. :class:`ContextualPooling` reads the prompt in order first (a transformer layer over
its tokens with their positions among them), so each word's vector knows its role before the pool.
"""

from __future__ import annotations

import math

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
    With ``num_queries`` Q > 1, Q score vectors pool Q vectors, concatenated and projected back
    to ``dim``: one softmax tends to settle on a few words, and a question such as "where is the
    red circle relative to the blue square?" needs four of them kept apart.

    Example:
        >>> pool = AttentionPooling(8)
        >>> prompt, mask = torch.randn(2, 5, 8), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool()
        >>> torch.allclose(pool(prompt, mask), masked_mean(prompt, mask), atol=1e-6)
        True
    """

    def __init__(self, dim: int, num_queries: int = 1):
        super().__init__()
        if num_queries < 1:
            raise ValueError(f"AttentionPooling(num_queries={num_queries}): pool with at least one query")
        self.score_norm = nn.LayerNorm(dim)
        self.score = nn.Linear(dim, num_queries)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)
        self.proj = nn.Linear(num_queries * dim, dim) if num_queries > 1 else None

    def forward(self, prompt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``prompt (N, P, D)``, ``mask (N, P)`` (True on the prompt's tokens) -> ``(N, D)``."""
        scores_NPQ = self.score(self.score_norm(prompt)).float()
        scores_NPQ = scores_NPQ.masked_fill(~mask.bool()[..., None], float("-inf"))
        weights_NPQ = torch.softmax(scores_NPQ, dim=1).nan_to_num(0.0).to(prompt.dtype)  # a row with no prompt: 0
        pooled_NQD = torch.einsum("npq,npd->nqd", weights_NPQ, prompt)
        if self.proj is None:
            return pooled_NQD[:, 0]
        return self.proj(pooled_NQD.flatten(1))


def sinusoidal_positions(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """``(...)`` integer positions -> ``(..., dim)`` sine / cosine encodings (Vaswani et al. 2017).

    Example:
        >>> sinusoidal_positions(torch.tensor([0, 3]), 4).shape
        torch.Size([2, 4])
    """
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angles = positions.float()[..., None] * freqs
    out = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return torch.nn.functional.pad(out, (0, dim - 2 * half))


def sincos_2d(height: int, width: int, dim: int) -> torch.Tensor:
    """``(height * width, dim)`` fixed 2-D positions, row-major: half the channels encode the row, half the column.

    MAE's 2-D sine-cosine embedding (He et al. 2022): the row index and the column index, each through
    :func:`sinusoidal_positions`, so every cell of the grid gets its own code, and neighbours similar ones.

    Example:
        >>> pos = sincos_2d(4, 4, 8)
        >>> pos.shape, bool(torch.equal(pos[1, :4], pos[0, :4])), bool(torch.equal(pos[4, 4:], pos[0, 4:]))
        (torch.Size([16, 8]), True, True)
    """
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    half = dim // 2
    return torch.nn.functional.pad(
        torch.cat([sinusoidal_positions(rows.flatten(), half), sinusoidal_positions(cols.flatten(), half)], -1),
        (0, dim - 2 * half))


class ContextualPooling(nn.Module):
    """An order-aware pool: a pre-norm transformer layer over the prompt's tokens, then :class:`AttentionPooling`.

    The embeddings are layer-normalised and given the sinusoidal encoding of their position among
    the prompt's tokens (the masked-out ones, such as image placeholders, do not count), so the
    layer can tell the first object a question names from the second; the pool then weighs the
    contextual vectors. The layer attends only between the prompt's tokens.

    Example:
        >>> pool = ContextualPooling(8, num_heads=2)
        >>> prompt, mask = torch.randn(2, 5, 8), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool()
        >>> pool(prompt, mask).shape
        torch.Size([2, 8])
        >>> swapped = prompt[:, [1, 0, 2, 3, 4]]  # the same words in another order pool differently
        >>> bool(torch.allclose(pool(prompt, mask), pool(swapped, mask)))
        False
    """

    def __init__(self, dim: int, num_heads: int = 4, num_queries: int = 1):
        super().__init__()
        self.dim = dim
        self.input_norm = nn.LayerNorm(dim)
        self.layer = nn.TransformerEncoderLayer(dim, num_heads, 2 * dim, dropout=0.0, activation="gelu",
                                                batch_first=True, norm_first=True)
        self.pool = AttentionPooling(dim, num_queries)

    def forward(self, prompt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``prompt (N, P, D)``, ``mask (N, P)`` (True on the prompt's tokens) -> ``(N, D)``."""
        mask = mask.bool()
        rank_NP = (mask.long().cumsum(1) - 1).clamp_min(0)
        x = self.input_norm(prompt) + sinusoidal_positions(rank_NP, self.dim).to(prompt.dtype)
        empty_N = ~mask.any(1)  # a row with no prompt attends to its first token (its pool weights stay 0)
        attend = mask | (empty_N[:, None] & (torch.arange(mask.shape[1], device=mask.device) == 0))
        x = self.layer(x, src_key_padding_mask=~attend)
        return self.pool(x, mask)
