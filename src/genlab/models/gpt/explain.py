"""What `genlab explain gpt` shows: text to loss and prompt to text stage by stage, the network call the prediction
trace hooks, what the model would predict after each block, and the next-token table of a prompt.

genlab.explain.text assembles these into a TextExplanation; every value quoted comes from running the stage on
real windows of the run's text (or on the prompt).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from genlab.data.tokenization import Tokenizer
from genlab.data.tokens import TokenDataset
from genlab.explain.stages import PredictionPass, Stage, format_number, format_values

if TYPE_CHECKING:
    from genlab.models.gpt.model import GPTModel

TOP = 5  # alternatives listed per position of the next-token table
SHOWN_CHARACTERS = 48  # of a window's or a generated text in an example


@dataclass(frozen=True)
class NextToken:
    """One position of a prompt: its token, the prompt's next token and its probability, the likeliest tokens."""

    position: int
    token: str  # how the token at `position` reads (tokenizer.token_text)
    following: str | None  # the prompt's token at position + 1 (None after the last)
    following_probability: float | None
    top: list[tuple[str, float]]  # the TOP likeliest next tokens, most likely first

    def to_dict(self) -> dict:
        return {
            "position": self.position,
            "token": self.token,
            "following": self.following,
            "following_probability": self.following_probability,
            "top": [[text, probability] for text, probability in self.top],
        }


@dataclass(frozen=True)
class LensRow:
    """The prediction at the prompt's last position if the network stopped after `after` (logit lens)."""

    after: str  # "embeddings", "block 1", ...
    token: str
    probability: float
    rank_of_final: int  # where the network's final choice ranks here (1 = it is already the likeliest)


def shown(text: str, limit: int = SHOWN_CHARACTERS) -> str:
    """A text for one line of a table: newlines and tabs escaped, cut at `limit` characters."""
    text = text.replace("\n", "\\n").replace("\t", "\\t")
    return "'" + (text if len(text) <= limit else text[:limit] + "...") + "'"


def token_list(tokenizer: Tokenizer, ids: list[int], limit: int = 6) -> str:
    """The first `limit` ids as "'T' 84, 'h' 104, ..."."""
    parts = [f"'{tokenizer.token_text(i)}' {i}" for i in ids[:limit]]
    return ", ".join(parts) + (", ..." if len(ids) > limit else "")


def top_tokens(tokenizer: Tokenizer, probabilities: torch.Tensor, k: int = TOP) -> list[tuple[str, float]]:
    """The k likeliest tokens of a distribution (V,) with their probabilities."""
    values, ids = probabilities.topk(min(k, probabilities.numel()))
    return [(tokenizer.token_text(int(i)), float(v)) for v, i in zip(values, ids)]


def leading(values: torch.Tensor) -> str:
    """The first three values of a vector as "[0.01, -0.02, 0.03, ...]"."""
    return format_values(values[:3])[:-1] + ", ...]"


def rms(values: torch.Tensor) -> torch.Tensor:
    return values.pow(2).mean().sqrt()


def listed(top: list[tuple[str, float]]) -> str:
    return ", ".join(f"'{text}' {format_number(p)}" for text, p in top)


def draw_windows(
    dataset: TokenDataset, batch_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch_size` windows (B, context + 1) of the dataset's tokens at seeded offsets, and the offsets (B,)."""
    context = dataset.context
    starts = torch.randint(0, len(dataset.tokens) - context, (batch_size,), generator=generator)
    return dataset.tokens[starts[:, None] + torch.arange(context + 1)], starts


def training_stages(model: GPTModel, dataset: TokenDataset, windows: torch.Tensor, starts: torch.Tensor) -> list[Stage]:
    """Text -> token ids -> windows (B, T + 1) -> inputs and targets -> embeddings (B, T, C) -> blocks ->
    logits (B, T, V) -> loss, measured on `windows` cut from `dataset` at `starts`."""
    tokenizer, network = dataset.tokenizer, model.network
    vocabulary, width = model.vocabulary, network.wte.embedding_dim
    first = windows[0].tolist()
    stages = [
        Stage(
            "tokenize",
            f"the training text's {dataset.num_bytes:,} UTF-8 bytes as ids of the {tokenizer.name} tokenizer "
            f"({vocabulary:,} ids, {dataset.tokens_per_byte:.3f} tokens per byte)",
            (dataset.num_bytes,),
            tuple(dataset.tokens.shape),
            f"{shown(tokenizer.decode(first[:6]))} is {token_list(tokenizer, first)}",
        ),
        Stage(
            "windows",
            f"cut {len(windows)} windows of {windows.shape[1]} tokens (the context and one more) at seeded offsets; "
            "an epoch reads every token once, cut at other places each epoch",
            tuple(dataset.tokens.shape),
            tuple(windows.shape),
            f"window 0 starts at token {int(starts[0]):,}: {shown(tokenizer.decode(first))}",
        ),
    ]
    inputs, targets = windows[:, :-1], windows[:, 1:]  # (B, T) each
    last = inputs.shape[1] - 1

    def token(ids: torch.Tensor, position: int) -> str:
        return f"'{tokenizer.token_text(int(ids[0, position]))}'"

    stages.append(
        Stage.measured(
            "inputs and targets",
            "the inputs are a window's first T tokens and the targets its last T: position t is asked for token t + 1",
            windows,
            inputs,
            f"position 0 reads {token(inputs, 0)} and must predict {token(targets, 0)}; position {last} reads "
            f"{token(inputs, last)} and must predict {token(targets, last)}",
        )
    )
    tokens = network.wte(inputs)  # (B, T, C)
    stages.append(
        Stage.measured(
            "token embedding",
            f"each id picks its row of the token table wte ({vocabulary:,} x {width}), the same table the output "
            "layer reuses (tied weights)",
            inputs,
            tokens,
            f"{token(inputs, 0)} becomes {leading(tokens[0, 0])}",
        )
    )
    positions = network.wpe(torch.arange(inputs.shape[1], device=inputs.device))  # (T, C)
    x = tokens + positions  # (B, T, C): dropout is off in eval mode
    stages.append(
        Stage.measured(
            "position embedding",
            f"add row t of the position table wpe ({network.context} x {width}): attention alone does not see order",
            tokens,
            x,
            f"position 0 adds {leading(positions[0])}: the sum {leading(x[0, 0])}",
        )
    )
    embedded = x
    for block in network.h:
        x, _ = block(x)
    heads = model.config.heads
    stages.append(
        Stage.measured(
            "blocks",
            f"{len(network.h)} pre-LayerNorm blocks, each adding to the residual stream causal self-attention "
            f"({heads} heads; position t reads positions 0..t) and then a 4x wide GELU MLP",
            embedded,
            x,
            f"the stream's RMS {format_number(rms(embedded))} before, {format_number(rms(x))} after",
        )
    )
    logits = network.ln_f(x) @ network.wte.weight.T  # (B, T, V)
    probabilities = logits[0, last].float().softmax(-1)
    target = int(targets[0, last])
    stages.append(
        Stage.measured(
            "logits",
            f"a final LayerNorm, then the product with wte transposed: a score for each of the {vocabulary:,} ids "
            "at every position",
            x,
            logits,
            f"after {shown(tokenizer.decode(inputs[0, -12:].tolist()), 24)} the likeliest are "
            f"{listed(top_tokens(tokenizer, probabilities, 3))}; the target '{tokenizer.token_text(target)}' has "
            f"p {format_number(probabilities[target])}",
        )
    )
    loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
    accuracy = (logits.argmax(-1) == targets).float().mean()
    bits_per_byte = float(loss) / math.log(2) * dataset.tokens_per_byte
    stages.append(
        Stage(
            "loss",
            "the cross-entropy of each target in nats, averaged over the B x T positions; x tokens per byte / ln 2 "
            "gives bits per byte, which compares tokenizers",
            tuple(logits.shape),
            (),
            f"{format_number(loss)} nats per token = {format_number(bits_per_byte)} bits per byte (a uniform guess: "
            f"{format_number(math.log(vocabulary))} nats); next-token accuracy {float(accuracy):.1%}",
        )
    )
    return stages


def generation_stages(
    model: GPTModel, tokenizer: Tokenizer, prompt: str, seed: int, new_tokens: int
) -> tuple[list[Stage], torch.Tensor]:
    """Prompt -> ids (1, P) -> the key/value cache -> next-token distribution -> a drawn token -> one cached step
    -> text, measured at temperature 1 with generator seed `seed`; and the prompt's ids (1, P) as read."""
    network = model.network
    encoded = tokenizer.encode(prompt)
    ids = torch.tensor([encoded[-(model.context - 1) :]], device=model.device)  # the model reads context - 1 at most
    kept = "" if ids.shape[1] == len(encoded) else f"; the model reads the last {ids.shape[1]:,} (its context)"
    stages = [
        Stage(
            "encode the prompt",
            f"the prompt's {len(prompt.encode('utf-8')):,} UTF-8 bytes as {len(encoded):,} token ids{kept}",
            (len(prompt.encode("utf-8")),),
            tuple(ids.shape),
            f"{shown(prompt, 32)} is {token_list(tokenizer, encoded)}",
            "generation",
        )
    ]
    logits, cache = network(ids)  # (1, P, V); per block (keys, values) of (1, H, P, D)
    keys = cache[0][0]
    stages.append(
        Stage(
            "read the prompt",
            "one pass over the prompt; each block keeps the keys and values of every position (the cache), so "
            "later tokens never recompute them",
            tuple(ids.shape),
            (len(cache), 2, *keys.shape),
            f"{len(cache)} blocks x keys and values of {tuple(keys.shape)}: "
            f"{sum(k.numel() + v.numel() for k, v in cache):,} numbers",
            "generation",
        )
    )
    probabilities = logits[:, -1].float().softmax(-1)  # (1, V) at temperature 1
    stages.append(
        Stage.measured(
            "next-token distribution",
            "softmax of the last position's logits / temperature (1 here; top-k and top-p, when asked, keep only "
            "the likeliest tokens)",
            logits[:, -1],
            probabilities,
            f"likeliest: {listed(top_tokens(tokenizer, probabilities[0], 3))}",
            "generation",
        )
    )
    generator = torch.Generator(device=model.device).manual_seed(seed)
    token = torch.multinomial(probabilities, 1, generator=generator)  # (1, 1)
    stages.append(
        Stage.measured(
            "draw",
            "one token drawn from that distribution (temperature 0 would take the likeliest)",
            probabilities,
            token,
            f"drew '{tokenizer.token_text(int(token))}' (p {format_number(probabilities[0, int(token)])}), "
            f"generator seed {seed}",
            "generation",
        )
    )
    next_logits, cache = network(token, cache)  # (1, 1, V): one position, attending to the cached ones
    following = next_logits[0, -1].float().softmax(-1)
    stages.append(
        Stage.measured(
            "one cached step",
            "only the drawn token goes through the network; attention reads the cached keys and values, so each "
            "new token costs one position, not the whole text",
            token,
            next_logits,
            f"the cache now holds {cache[0][0].shape[2]} positions; the likeliest next: "
            f"{listed(top_tokens(tokenizer, following, 3))}",
            "generation",
        )
    )
    drawn = model.generate(ids, new_tokens, generator=torch.Generator(device=model.device).manual_seed(seed))
    stages.append(
        Stage.measured(
            "decode",
            f"repeat draw and step for {new_tokens} tokens, then turn the ids back into text",
            ids,
            drawn,
            f"{shown(prompt, 16)} + {shown(tokenizer.decode(drawn[0, ids.shape[1] :].tolist()))}",
            "generation",
        )
    )
    return stages, ids


def prediction_pass(model: GPTModel, inputs: torch.Tensor) -> PredictionPass:
    """One call of the transformer on token ids (B, T), for the prediction trace."""
    return PredictionPass(
        "transformer",
        model.network,
        "token ids",
        inputs,
        lambda: model.network(inputs)[0],
        "next-token logits",
        f"one call of the transformer on {len(inputs)} windows of {inputs.shape[1]} tokens",
    )


def lens(model: GPTModel, tokenizer: Tokenizer, ids: torch.Tensor) -> list[LensRow]:
    """What the network would predict at the prompt's last position if it stopped after its embeddings or after
    each block: the final LayerNorm and the tied output applied to the stream there (the "logit lens")."""
    network = model.network
    x = network.wte(ids) + network.wpe(torch.arange(ids.shape[1], device=ids.device))  # (1, P, C)
    streams = [("embeddings", x)]
    for index, block in enumerate(network.h, start=1):
        x, _ = block(x)
        streams.append((f"block {index}", x))
    distributions = [(network.ln_f(s[0, -1]) @ network.wte.weight.T).float().softmax(-1) for _, s in streams]
    final = int(distributions[-1].argmax())
    rows = []
    for (name, _), probabilities in zip(streams, distributions):
        best = int(probabilities.argmax())
        rank = int((probabilities > probabilities[final]).sum()) + 1
        rows.append(LensRow(name, tokenizer.token_text(best), float(probabilities[best]), rank))
    return rows


def next_token_table(model: GPTModel, tokenizer: Tokenizer, ids: torch.Tensor) -> list[NextToken]:
    """For each position of the prompt ids (1, P): the TOP likeliest next tokens, and the probability the model gives
    the prompt's own next token."""
    probabilities = model.network(ids)[0][0].float().softmax(-1)  # (P, V)
    tokens = ids[0].tolist()
    rows = []
    for position, token in enumerate(tokens):
        following = tokens[position + 1] if position + 1 < len(tokens) else None
        rows.append(
            NextToken(
                position,
                tokenizer.token_text(token),
                None if following is None else tokenizer.token_text(following),
                None if following is None else float(probabilities[position, following]),
                top_tokens(tokenizer, probabilities[position]),
            )
        )
    return rows
