"""The GPT-2 layout (Radford et al. 2019): a decoder-only transformer over token ids, with a key/value cache.

    logits, cache = network(ids)                   # ids (B, T) -> logits (B, T, V); cache: per layer (k, v)
    logits, cache = network(next_ids, cache)       # (B, 1): one new position, attending to the cached ones

Token and position embeddings are added, then `layers` pre-LayerNorm blocks (x + attn(ln(x)), then
x + mlp(ln(x))), a final LayerNorm, and the output projection, which is the token embedding itself
(tied weights, Press & Wolf 2017). Attention is causal self-attention through
`torch.nn.functional.scaled_dot_product_attention`; the MLP is 4x wide with GELU (GPT-2's tanh form).
Parameter names follow GPT-2's (wte, wpe, h.N.ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc,
mlp.c_proj, ln_f), so the Hugging Face exporter maps them one to one (its Conv1D holds each Linear's
weight transposed).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genlab.models.gpt.config import GPTConfig

Cache = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys and values (B, heads, T_cached, head width)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which each position sees itself and the positions before it."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.width is not None and config.heads is not None and config.dropout is not None
        self.heads = config.heads
        self.c_attn = nn.Linear(config.width, 3 * config.width, bias=config.bias)  # queries, keys, values at once
        self.c_proj = nn.Linear(config.width, config.width, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        batch, length, width = x.shape  # (B, T, C)
        # The Linear layers take (B * T, C): the same numbers, and about half the overhead of a 3-D input at T = 1,
        # the one-token steps of generation.
        q, k, v = self.c_attn(x.reshape(batch * length, width)).view(batch, length, 3 * width).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.heads, width // self.heads).transpose(1, 2) for t in (q, k, v))
        if past is not None:  # keys and values of the cached positions come first: (B, H, T_cached + T, D)
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        cached = k.shape[2] - length
        dropout = self.dropout if self.training else 0.0
        if cached == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        elif length == 1:  # one new position sees every cached one and itself: no mask
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        else:  # several new positions after a cache: new position i sees keys 0 .. cached + i
            allowed = torch.ones(length, cached + length, dtype=torch.bool, device=x.device).tril(diagonal=cached)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout)
        y = y.transpose(1, 2).reshape(batch * length, width)  # heads side by side again: (B * T, C)
        return self.resid_dropout(self.c_proj(y).view(batch, length, width)), (k, v)


class MLP(nn.Module):
    """Position-wise: width -> 4 x width -> GELU (tanh approximation, as GPT-2) -> width."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.width is not None and config.dropout is not None
        self.c_fc = nn.Linear(config.width, 4 * config.width, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.width, config.width, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])  # (B * T, C), as in the attention
        return self.dropout(self.c_proj(F.gelu(self.c_fc(flat), approximate="tanh")).view(x.shape))


class Block(nn.Module):
    """One pre-LayerNorm transformer block: x + attention(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.width is not None
        self.ln_1 = nn.LayerNorm(config.width, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.width, bias=config.bias)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        attended, present = self.attn(self.ln_1(x), past)
        x = x + attended
        return x + self.mlp(self.ln_2(x)), present


class GPT(nn.Module):
    """Token ids (B, T) -> next-token logits (B, T, V), optionally continuing from a key/value cache."""

    def __init__(self, config: GPTConfig, vocabulary: int):
        super().__init__()
        assert config.width is not None and config.context is not None and config.layers is not None
        self.config = config
        self.wte = nn.Embedding(vocabulary, config.width)  # token embedding, also the output projection
        self.wpe = nn.Embedding(config.context, config.width)  # learned position embedding
        self.drop = nn.Dropout(config.dropout or 0.0)
        self.h = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.ln_f = nn.LayerNorm(config.width, bias=config.bias)
        self.apply(self._init_weights)
        # GPT-2's scaled initialisation of the projections into the residual stream: std 0.02 / sqrt(2 x layers)
        for name, parameter in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * config.layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def context(self) -> int:
        assert self.config.context is not None
        return self.config.context

    def forward(self, ids: torch.Tensor, cache: Cache | None = None) -> tuple[torch.Tensor, Cache]:
        """Logits (B, T, V) for ids (B, T) that follow the `cache`'s positions (none: they start at 0), and the
        cache extended by them. The cached and new positions together must fit the context."""
        start = 0 if cache is None else cache[0][0].shape[2]
        length = ids.shape[1]
        if start + length > self.context:
            raise ValueError(f"{start + length} positions exceed the context of {self.context}")
        positions = torch.arange(start, start + length, device=ids.device)
        x = self.drop(self.wte(ids) + self.wpe(positions))  # (B, T, C)
        present: Cache = []
        for index, block in enumerate(self.h):
            x, layer_cache = block(x, None if cache is None else cache[index])
            present.append(layer_cache)
        logits = self.ln_f(x) @ self.wte.weight.T  # tied output projection: (B, T, V)
        return logits, present
