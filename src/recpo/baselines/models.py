"""GRU4Rec, Caser and SASRec over item-index histories.

Every model reads a right-padded batch of histories ``(B, L)`` (oldest item first)
with their real lengths ``(B,)`` and returns one user representation ``(B, D)``.
Padding is located by ``lengths`` alone, never by the padding index, so the ids
stored in padding positions cannot change any output. Item indices are
``0..num_items-1``; index ``num_items`` is the padding row of the input table.

Items are scored from the representation by a head shared by all three models:
either tied to the input item embeddings (a dot product, as in SASRec's paper) or a
separate output embedding with a per-item bias (a linear layer over all items, as in
GRU4Rec's and Caser's papers and the prior LLaRA/S-DPO baselines).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def padding_mask(lengths: Tensor, max_len: int) -> Tensor:
    """``(B, L)`` bool, True at real (non-padding) positions of right-padded rows."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def last_position(states: Tensor, lengths: Tensor) -> Tensor:
    """The state at each row's last real position.

    Args:
        states: ``(B, L, D)`` per-position states of right-padded rows.
        lengths: ``(B,)`` real lengths, each at least 1.

    Returns:
        ``(B, D)``.
    """
    index = (lengths - 1).clamp(min=0)[:, None, None].expand(-1, 1, states.size(-1))
    return states.gather(1, index).squeeze(1)


class SequentialRecommender(nn.Module):
    """Item embeddings, an item-scoring head and the ``encode`` contract.

    Args:
        num_items: Number of items ``N``; the input table has ``N + 1`` rows (padding last).
        max_len: Longest history ``L`` the model reads (longer ones must be cut by the caller).
        dim: Embedding and representation size ``D``.
        tie_weights: Score items with the input embeddings (True) or with a separate
            output embedding plus a per-item bias (False).
    """

    def __init__(self, num_items: int, max_len: int, dim: int, tie_weights: bool):
        super().__init__()
        self.num_items = num_items
        self.max_len = max_len
        self.dim = dim
        self.tie_weights = tie_weights
        self.padding_index = num_items
        self.item_embeddings = nn.Embedding(num_items + 1, dim, padding_idx=num_items)
        nn.init.normal_(self.item_embeddings.weight, std=1.0 / math.sqrt(dim))
        with torch.no_grad():
            self.item_embeddings.weight[num_items].zero_()
        if tie_weights:
            self.output_embeddings = None
            self.output_bias = None
        else:
            self.output_embeddings = nn.Parameter(torch.randn(num_items, dim) / math.sqrt(dim))
            self.output_bias = nn.Parameter(torch.zeros(num_items))
        # Constructor arguments, saved with exported encoders so they can be rebuilt.
        self.config: dict[str, Any] = {
            "num_items": num_items,
            "max_len": max_len,
            "dim": dim,
            "tie_weights": tie_weights,
        }

    def embed(self, history: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Input embeddings with padding positions set to zero.

        Args:
            history: ``(B, L)`` item indices, right-padded.
            lengths: ``(B,)`` real lengths.

        Returns:
            ``(B, L, D)`` embeddings and the ``(B, L)`` bool mask of real positions.
        """
        mask = padding_mask(lengths, history.size(1))
        # Index the padding row wherever the mask is off, whatever id the caller left there.
        history = history.masked_fill(~mask, self.padding_index)
        return self.item_embeddings(history) * mask[..., None], mask

    def encode(self, history: Tensor, lengths: Tensor) -> Tensor:
        """User representation ``(B, D)`` of right-padded histories ``(B, L)``."""
        raise NotImplementedError

    def forward(self, history: Tensor, lengths: Tensor) -> Tensor:
        if history.size(1) > self.max_len:
            raise ValueError(
                f"history has {history.size(1)} positions; this model reads at most {self.max_len}"
            )
        if bool((lengths < 1).any()):
            raise ValueError("every history needs at least one item")
        return self.encode(history, lengths)

    def output_table(self) -> tuple[Tensor, Tensor | None]:
        """The ``(N, D)`` item vectors used for scoring and the ``(N,)`` bias (or None)."""
        if self.output_embeddings is None:
            return self.item_embeddings.weight[: self.num_items], None
        return self.output_embeddings, self.output_bias

    def score_all(self, hidden: Tensor) -> Tensor:
        """Scores ``(B, N)`` of every item for representations ``(B, D)``."""
        table, bias = self.output_table()
        scores = hidden @ table.T
        return scores if bias is None else scores + bias

    def score_items(self, hidden: Tensor, items: Tensor) -> Tensor:
        """Scores ``(B, M)`` of the items ``(B, M)`` for representations ``(B, D)``."""
        table, bias = self.output_table()
        scores = torch.einsum("bd,bmd->bm", hidden, table[items])
        return scores if bias is None else scores + bias[items]


class GRU4Rec(SequentialRecommender):
    """GRU4Rec (Hidasi et al. 2016): a GRU over the history; the last state is the user.

    Args:
        num_items: Number of items.
        max_len: Longest history.
        dim: Embedding size, also the GRU's hidden size.
        num_layers: Stacked GRU layers.
        dropout: Dropout on the input embeddings and on the final state.
        tie_weights: See :class:`SequentialRecommender`.
    """

    def __init__(
        self,
        num_items: int,
        max_len: int = 10,
        dim: int = 64,
        num_layers: int = 1,
        dropout: float = 0.25,
        tie_weights: bool = False,
    ):
        super().__init__(num_items, max_len, dim, tie_weights)
        self.gru = nn.GRU(dim, dim, num_layers=num_layers, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.config.update(num_layers=num_layers, dropout=dropout)

    def encode(self, history: Tensor, lengths: Tensor) -> Tensor:
        emb, _ = self.embed(history, lengths)
        # The GRU is causal and rows are right-padded, so the output at the last real
        # position never saw a padding step: no packing needed.
        states, _ = self.gru(self.dropout(emb))
        return self.dropout(last_position(states, lengths))


class Caser(SequentialRecommender):
    """Caser (Tang & Wang 2018): horizontal and vertical convolutions over the
    ``L x D`` embedding "image" of the last ``L`` items, then a fully connected layer.

    The history is right-aligned first (the most recent item in the last row), so the
    vertical filters learn weights by recency, as in the paper's sliding window. There
    is no user embedding: users here are anonymous histories.

    Args:
        num_items: Number of items.
        max_len: ``L``, the window of recent items.
        dim: Embedding and output size.
        num_horizontal: Filters per horizontal height.
        heights: Heights of the horizontal filters (default ``1..L``, as in the paper).
        num_vertical: Vertical filters.
        dropout: Dropout on the concatenated convolution outputs.
        tie_weights: See :class:`SequentialRecommender`.
    """

    def __init__(
        self,
        num_items: int,
        max_len: int = 10,
        dim: int = 64,
        num_horizontal: int = 16,
        heights: list[int] | None = None,
        num_vertical: int = 4,
        dropout: float = 0.5,
        tie_weights: bool = False,
    ):
        super().__init__(num_items, max_len, dim, tie_weights)
        heights = list(heights) if heights is not None else list(range(1, max_len + 1))
        if not heights or min(heights) < 1 or max(heights) > max_len:
            raise ValueError(f"Caser heights must lie in 1..{max_len}, got {heights}")
        # A horizontal filter of height h spans h consecutive items and all D dims:
        # a 1-D convolution over positions with the embedding dims as channels.
        self.horizontal = nn.ModuleList(nn.Conv1d(dim, num_horizontal, h) for h in heights)
        # A vertical filter is a weighted sum of the L rows: a linear map over positions.
        self.vertical = nn.Linear(max_len, num_vertical)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(num_horizontal * len(heights) + num_vertical * dim, dim)
        self.config.update(
            num_horizontal=num_horizontal,
            heights=heights,
            num_vertical=num_vertical,
            dropout=dropout,
        )

    def encode(self, history: Tensor, lengths: Tensor) -> Tensor:
        emb, _ = self.embed(history, lengths)  # (B, L', D), zeros at padding
        window = self.right_align(emb, lengths)  # (B, L, D), most recent item last
        channels = window.transpose(1, 2)  # (B, D, L)
        # Windows that cover padding see zero vectors, whatever ids were there.
        pooled = [F.relu(conv(channels)).amax(dim=-1) for conv in self.horizontal]  # each (B, n_h)
        vertical = self.vertical(channels).flatten(1)  # (B, D * n_v)
        features = self.dropout(torch.cat([*pooled, vertical], dim=-1))
        return F.relu(self.fc(features))

    def right_align(self, emb: Tensor, lengths: Tensor) -> Tensor:
        """Move each row's real items to the end of an ``L``-long window.

        Args:
            emb: ``(B, L', D)`` right-padded embeddings (zero at padding), ``L' <= L``.
            lengths: ``(B,)``.

        Returns:
            ``(B, L, D)`` with row b's items at positions ``L - len_b .. L - 1``.
        """
        b, width, d = emb.shape
        padded = torch.cat([emb, emb.new_zeros(b, 1, d)], dim=1)  # index `width` is a zero row
        source = torch.arange(self.max_len, device=emb.device)[None, :] - (
            self.max_len - lengths[:, None]
        )
        source = torch.where(source >= 0, source, torch.full_like(source, width))
        return padded.gather(1, source[..., None].expand(-1, -1, d))


class CausalSelfAttentionBlock(nn.Module):
    """Pre-norm transformer block: causal self-attention, then a position-wise FFN.

    Args:
        dim: Model width ``D``.
        num_heads: Attention heads (``D`` must be divisible by it).
        dropout: Dropout on attention weights and on each residual branch.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.attn_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim)
        )
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        """``(B, L, D) -> (B, L, D)``; position t attends to positions ``<= t`` only."""
        b, length, d = x.shape
        q, k, v = (
            self.qkv(self.attn_norm(x))
            .view(b, length, 3, self.num_heads, d // self.num_heads)
            .unbind(2)
        )
        attn = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            dropout_p=self.attn_dropout if self.training else 0.0,
            is_causal=True,
        )
        x = x + self.dropout(self.proj(attn.transpose(1, 2).reshape(b, length, d)))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class SASRec(SequentialRecommender):
    """SASRec (Kang & McAuley 2018): causal self-attention over the history; the
    output at the last item is the user.

    Positions are counted back from the most recent item (0 = last item), so the
    latest item always has the same position embedding whatever the history length.
    With right padding and causal attention, real positions never attend to padding.

    Args:
        num_items: Number of items.
        max_len: Longest history.
        dim: Model width.
        num_blocks: Transformer blocks.
        num_heads: Attention heads.
        dropout: Dropout on the embeddings, attention weights and residual branches.
        tie_weights: See :class:`SequentialRecommender` (the paper ties them).
    """

    def __init__(
        self,
        num_items: int,
        max_len: int = 10,
        dim: int = 64,
        num_blocks: int = 2,
        num_heads: int = 1,
        dropout: float = 0.2,
        tie_weights: bool = True,
    ):
        super().__init__(num_items, max_len, dim, tie_weights)
        self.position_embeddings = nn.Embedding(max_len, dim)
        nn.init.normal_(self.position_embeddings.weight, std=1.0 / math.sqrt(dim))
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            CausalSelfAttentionBlock(dim, num_heads, dropout) for _ in range(num_blocks)
        )
        self.final_norm = nn.LayerNorm(dim)
        self.config.update(num_blocks=num_blocks, num_heads=num_heads, dropout=dropout)

    def encode(self, history: Tensor, lengths: Tensor) -> Tensor:
        emb, mask = self.embed(history, lengths)
        positions = (
            lengths[:, None] - 1 - torch.arange(history.size(1), device=history.device)
        ).clamp(min=0)
        x = self.dropout(emb + self.position_embeddings(positions)) * mask[..., None]
        for block in self.blocks:
            x = block(x)
        return self.final_norm(last_position(x, lengths))
