"""The text family: a GPT trained to predict the next token, and its sampler (temperature, top-k, top-p).

    model = GPTModel(GPTConfig(preset="cpu"), TokenSpec(256, "bytes"))
    numbers = model.training_step((windows, None), model.configure_optimizers())   # windows (B, T + 1)
    ids = model.generate(prompt_ids, 200, temperature=0.8, top_k=40, generator=g)   # (B, P + 200)

The loss is the cross-entropy of each next token in nats (Radford et al. 2019); a window of T + 1
tokens gives T predictions. Generation feeds the prompt once, then one token at a time through the
key/value cache, so each new token costs one position, not the whole window.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F

from genlab.errors import GenlabError
from genlab.models.base import Batch, GeneratesText, GenerativeModel, TokenSpec
from genlab.models.gpt.config import MIN_LR_RATIO, GPTConfig
from genlab.models.gpt.networks import GPT, Cache

GRADIENT_CLIP = 1.0  # global norm, as nanoGPT and GPT-2's training


class GPTModel(GeneratesText, GenerativeModel):
    """A decoder-only transformer over token ids (the GPT-2 layout), trained on next-token prediction."""

    family = "gpt"
    config_class = GPTConfig
    default_batch_size = 32  # windows
    # Steps of 32 windows of 128 tokens (the cpu preset): sized from one busy thread's step time (0.86 s), about
    # 10 minutes there and less on 2 quiet cores (bpe:4096: 588 s of epochs, benchmarks/README.md).
    default_steps = 1_200
    # The budget stays 1,200 steps on any corpus: the text bar (issue 23) was measured at it, and a step's windows are
    # no images (a corpus' window count is no dataset size in the sense of `budget_steps`).
    largest_budget_scale = 1.0
    trace_columns: ClassVar[tuple[tuple[str, str], ...]] = (
        ("loss", "Loss (nats/token)"),
        ("bits_per_byte", "Bits/byte"),
        ("test_loss", "Test loss"),
        ("test_bits_per_byte", "Test bits/byte"),
        ("test_accuracy", "Next-token acc."),
    )
    monitor = "test_loss"
    absent_in_older_runs = {"schedule": "constant"}  # runs written before the learning rate was scheduled
    planned_settings = ("decay_steps",)
    idea = (
        "A transformer reads a window of tokens and, at every position, predicts the next one from the ones "
        "before it (causal attention). Text is drawn one token at a time from those predictions."
    )

    def __init__(self, config: GPTConfig, data: TokenSpec):
        super().__init__(config, data)  # type: ignore[arg-type]
        self.network = GPT(config, data.vocabulary)

    @property
    def context(self) -> int:
        """Tokens the model reads at once."""
        return self.network.context

    @property
    def vocabulary(self) -> int:
        """Token ids the model knows: 0 .. vocabulary - 1."""
        return self.network.wte.num_embeddings

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """AdamW (betas 0.9, 0.95), weight decay on the matrices only: not on biases, norms or the position table."""
        decayed = [p for name, p in self.network.named_parameters() if p.dim() >= 2 and name != "wpe.weight"]
        kept = [p for name, p in self.network.named_parameters() if p.dim() < 2 or name == "wpe.weight"]
        groups = [{"params": decayed, "weight_decay": self.config.weight_decay}, {"params": kept, "weight_decay": 0.0}]
        fused = all(p.device.type in ("cuda", "cpu") for p in self.network.parameters()) or None
        return {"gpt": torch.optim.AdamW(groups, lr=self.config.lr, betas=(0.9, 0.95), fused=fused)}

    def _loss(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean next-token cross-entropy (nats) and accuracy over a batch of windows (B, T + 1)."""
        inputs, targets = windows[:, :-1], windows[:, 1:]  # (B, T) each
        logits, _ = self.network(inputs)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        accuracy = (logits.argmax(dim=-1) == targets).float().mean()
        return loss, accuracy

    def plan_steps(self, steps: int) -> None:
        """Spread the cosine schedule over the `steps` optimizer steps a new run plans (unless decay_steps is set)."""
        if self.config.decay_steps is None:
            self.config.decay_steps = max(1, steps)

    def learning_rate(self, step: int) -> float:
        """The learning rate of optimizer step `step` (0 for the first): the config's schedule."""
        config = self.config
        if config.schedule == "constant":
            return config.lr
        decay = config.decay_steps or 1
        warmup = min(config.warmup_steps, decay // 10)
        if step < warmup:
            return config.lr * (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, decay - warmup))
        return config.lr * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress)))

    def training_step(self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, float]:
        optimizer = optimizers["gpt"]
        # The step count lives in AdamW's state, so a resumed run continues the schedule exactly where it stopped.
        state = optimizer.state.get(optimizer.param_groups[0]["params"][0], {})
        lr = self.learning_rate(int(state["step"]) if "step" in state else 0)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, accuracy = self._loss(batch[0])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), GRADIENT_CLIP)
        optimizer.step()
        return {"loss": loss.item(), "accuracy": accuracy.item(), "lr": lr}

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, float]:
        loss, accuracy = self._loss(batch[0])
        return {"test_loss": loss.item(), "test_accuracy": accuracy.item()}

    # inference_mode, not no_grad: no autograd bookkeeping at all, about 15% less time per cached token on a CPU
    # (256 tokens of the cpu preset: 0.47 s against 0.56, one thread), where a step is mostly per-op overhead.
    @torch.inference_mode()
    def next_token_logits(self, ids: torch.Tensor, cache: Cache | None = None) -> tuple[torch.Tensor, Cache]:
        """Logits (B, V) of the token after `ids` (B, T), and the cache extended by them."""
        logits, cache = self.network(ids, cache)
        return logits[:, -1].float(), cache

    @torch.inference_mode()
    def generate(
        self,
        prompt: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        on_token: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        """The prompt ids (B, P) followed by `max_new_tokens` drawn ones: (B, P + max_new_tokens).
        `on_token`, if given, hears each step's new tokens (B, 1) as they are drawn (streaming), with the
        logits (B, V) they were drawn from (before temperature, top-k and top-p).

        Each token is drawn from softmax(logits / temperature) restricted to the `top_k` likeliest tokens
        and to the smallest set whose probability reaches `top_p` (Holtzman et al. 2020); temperature 0
        takes the likeliest token. The prompt's last `context - 1` tokens at most are read; when the
        window fills, its last half is read again afresh (a new cache) and drawing goes on.
        """
        check_sampling(max_new_tokens, temperature, top_k, top_p)
        if prompt.ndim != 2 or prompt.shape[1] < 1:
            raise GenlabError("a prompt is at least one token per sequence: (B, P) with P >= 1")
        ids = prompt.to(self.device)
        window = ids[:, -(self.context - 1) :]
        logits, cache = self.next_token_logits(window)
        for _ in range(max_new_tokens):
            token = draw_token(logits, temperature, top_k, top_p, generator)  # (B, 1)
            if on_token is not None:
                on_token(token, logits)
            ids = torch.cat([ids, token], dim=1)
            window = torch.cat([window, token], dim=1)
            if not use_cache:
                window = window[:, -self.context :]
                logits, _ = self.next_token_logits(window)
            elif window.shape[1] < self.context:
                logits, cache = self.next_token_logits(token, cache)
            else:  # the window is full: keep its last half and read it afresh
                window = window[:, -(self.context // 2) :]
                logits, cache = self.next_token_logits(window)
        return ids


def check_sampling(max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None) -> None:
    """One clear error for a sampling setting out of range."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise GenlabError(f"--max-new-tokens must be a positive integer, got {max_new_tokens!r}")
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        raise GenlabError(f"--temperature must be 0 (the likeliest token) or more, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise GenlabError(f"--top-k must be a positive integer, got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise GenlabError(f"--top-p must be in (0, 1], got {top_p!r}")


def draw_token(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token per row (B, 1) from next-token logits (B, V) (see GPTModel.generate)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    if temperature != 1:
        logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1): the k-th largest
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        ordered, order = torch.sort(logits, dim=-1, descending=True)
        before = ordered.softmax(dim=-1).cumsum(dim=-1) - ordered.softmax(dim=-1)  # probability above each token
        ordered = ordered.masked_fill(before >= top_p, float("-inf"))  # the likeliest always stays
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, ordered)
    probabilities = logits.softmax(dim=-1)
    device = generator.device if generator is not None else probabilities.device
    return torch.multinomial(probabilities.to(device), 1, generator=generator).to(logits.device)
