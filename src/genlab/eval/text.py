"""Text measures of the text family: bits per byte beside what general-purpose compressors reach on the same
text (the outside reference the issue names), for the Quality section of `genlab train`.

A model that predicts each next byte with probability p spends -log2 p bits on it, so its test loss in bits
per byte is the size a compressor driven by it would reach (arithmetic coding, to within a few bytes): it
can stand beside `xz -9e` (LZMA) measured on the very same bytes.
"""

from __future__ import annotations

import lzma
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from genlab.data.text import load_text_splits
from genlab.errors import GenlabError
from genlab.eval.evaluate import Evaluation
from genlab.eval.table import Row, metrics_table


def compressor_bits_per_byte(data: bytes) -> dict[str, float]:
    """Bits per byte of `data` under the compressors this Python has: xz -9e (stdlib lzma), and zstd -19 where
    the zstandard package is installed."""
    sizes = {"xz -9e": len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))}
    try:
        import zstandard
    except ImportError:
        pass
    else:
        sizes["zstd -19"] = len(zstandard.ZstdCompressor(level=19).compress(data))
    return {name: 8 * size / max(1, len(data)) for name, size in sizes.items()}


def text_quality(info: dict[str, Any], history: list[dict[str, Any]]) -> str:
    """The Quality section of a text run: its last test bits per byte beside the compressors' on the test text."""
    spec = info["data"]["spec"]
    record = history[-1] if history else {}
    if "test_bits_per_byte" not in record:
        return "Quality: not measured: the run has no test loss yet"
    _, test = load_text_splits(spec)
    data = test.text.encode("utf-8")
    references = compressor_bits_per_byte(data)
    model = record["test_bits_per_byte"]
    lines = [
        "Quality",
        f"{spec} test split: {len(test):,} documents, {len(data):,} bytes; bits per byte (lower is better)",
        "",
        f"{'this model (epoch ' + str(record['epoch']) + ')':<26} {model:.3f}",
    ]
    for name, value in references.items():
        side = "below" if model < value else "above"
        lines.append(f"{name:<26} {value:.3f}  (the model: {abs(1 - model / value):.0%} {side} it)")
    return "\n".join(lines)


# ---------------------------------------------------------------- copies and diversity (pure functions)

COPY_WIDTH = 32  # bytes: a generated window of this many bytes found verbatim in the training text is a copy
HASH_BASE, HASH_MOD_A, HASH_MOD_B = 257, 2_147_483_629, 2_147_483_587  # two 31-bit polynomial hashes, one key


def window_keys(data: bytes, width: int = COPY_WIDTH) -> np.ndarray:
    """A 62-bit key for every `width`-byte window of `data` (two polynomial hashes side by side): (len - width + 1,)
    int64. Equal windows have equal keys; unequal ones collide with probability about 2^-62."""
    values = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
    count = len(values) - width + 1
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    a = np.zeros(count, dtype=np.int64)
    b = np.zeros(count, dtype=np.int64)
    for k in range(width):  # h = h * base + byte, over the window's bytes in order: `width` vector steps
        a = (a * HASH_BASE + values[k : k + count]) % HASH_MOD_A
        b = (b * HASH_BASE + values[k : k + count]) % HASH_MOD_B
    return a * HASH_MOD_B + b


def copied_share(texts: Sequence[bytes], train_keys: np.ndarray, width: int = COPY_WIDTH) -> float:
    """The share of all `width`-byte windows of `texts` found verbatim in the training text (`train_keys`: its
    window_keys, sorted), by binary search. 0 when the texts have no window that long."""
    keys = np.concatenate([window_keys(text, width) for text in texts] or [np.zeros(0, dtype=np.int64)])
    if not len(keys) or not len(train_keys):
        return 0.0
    where = np.minimum(np.searchsorted(train_keys, keys), len(train_keys) - 1)  # train_keys is sorted
    return float((train_keys[where] == keys).mean())


def copied_pieces(text: str, train_keys: np.ndarray, width: int = COPY_WIDTH) -> list[tuple[str, bool]]:
    """`text` cut into pieces that alternate between not copied and copied (True): a character is copied when one of
    its bytes lies in a `width`-byte window found verbatim in the training text (`train_keys`: its window_keys,
    sorted). The pieces join back into `text`."""
    data = text.encode("utf-8")
    keys = window_keys(data, width)
    copied = np.zeros(len(data) + 1, dtype=np.int64)  # +1 where a copied window starts, -1 where it ends
    if len(keys) and len(train_keys):
        found = train_keys[np.minimum(np.searchsorted(train_keys, keys), len(train_keys) - 1)] == keys
        starts = np.flatnonzero(found)
        np.add.at(copied, starts, 1)
        np.add.at(copied, starts + width, -1)
    inside = np.cumsum(copied)[: len(data)] > 0  # (bytes,): in at least one copied window
    pieces: list[tuple[str, bool]] = []
    offset = 0
    for character in text:
        size = len(character.encode("utf-8"))
        mark = bool(inside[offset : offset + size].any())
        offset += size
        if pieces and pieces[-1][1] == mark:
            pieces[-1] = (pieces[-1][0] + character, mark)
        else:
            pieces.append((character, mark))
    return pieces


def longest_copied_span(text: bytes, train: bytes) -> int:
    """Bytes of the longest stretch of `text` found verbatim in `train` (greedy: each start is extended only past
    the best length so far, so the search costs about two substring tests per byte)."""
    best = 0
    for start in range(len(text)):
        while start + best < len(text) and text[start : start + best + 1] in train:
            best += 1
    return best


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): distinct word n-grams over all word n-grams of `texts` (words: split at
    whitespace); 0 when there are none."""
    grams = [tuple(words[i : i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def self_bleu(texts: Sequence[str], max_n: int = 4) -> float:
    """Self-BLEU (Zhu et al. 2018): the mean BLEU-`max_n` of each text against all the others as references
    (Papineni et al. 2002: clipped n-gram precisions, geometric mean, brevity penalty; add-one smoothing for
    n > 1). High when the texts repeat each other; 0 for fewer than two texts."""
    tokenized = [t.split() for t in texts]
    if len(tokenized) < 2:
        return 0.0
    scores = []
    for i, hypothesis in enumerate(tokenized):
        if not hypothesis:
            continue
        references = tokenized[:i] + tokenized[i + 1 :]
        logs = []
        for n in range(1, max_n + 1):
            counts = Counter(tuple(hypothesis[j : j + n]) for j in range(len(hypothesis) - n + 1))
            most: Counter = Counter()
            for reference in references:
                most |= Counter(tuple(reference[j : j + n]) for j in range(len(reference) - n + 1))
            matched = sum(min(c, most[g]) for g, c in counts.items())
            total = sum(counts.values())
            smooth = 0 if n == 1 else 1
            logs.append(math.log((matched + smooth) / (total + smooth)) if matched + smooth else -math.inf)
        closest = min((len(r) for r in references), key=lambda length: (abs(length - len(hypothesis)), length))
        brevity = 1.0 if len(hypothesis) > closest else math.exp(1 - closest / len(hypothesis))
        scores.append(brevity * math.exp(sum(logs) / max_n))
    return sum(scores) / len(scores) if scores else 0.0


# ---------------------------------------------------------------- genlab eval on a text run

PROMPT_BYTES, CONTINUATION_BYTES = 32, 256  # each sample continues 32 bytes of held-out text for 256 bytes
TEXT_SAMPLES = 100
TEXT_ROWS = (
    ("bits_per_byte", "Bits per byte (test)", "lower"),
    ("copy_share", f"Copied {COPY_WIDTH}-byte windows", "lower"),
    ("longest_copy", "Longest copied span (bytes, mean)", "lower"),
    ("distinct_1", "Distinct-1", "near held-out"),  # gibberish is more distinct than English: nearer is better
    ("distinct_2", "Distinct-2", "near held-out"),
    ("distinct_3", "Distinct-3", "near held-out"),
    ("self_bleu", "Self-BLEU", "near held-out"),
)
SHOWN_SAMPLES = 5  # continuations kept in metrics.json, with their prompts, for the report
COPY_EXCESS = 0.01  # the bound: samples copy at most 1 point more 32-byte windows than held-out text does
REPETITION_FACTOR = 0.5  # distinct-2 under half of held-out text's: the samples repeat themselves


@dataclass
class TextEvaluation(Evaluation):
    """What `genlab eval` measured of a text run: the image Evaluation's fields, a text table and text rules."""

    @property
    def observations(self) -> list[str]:
        return observe_text(self.metrics, self.floor)

    def table(self) -> str:
        rows = [Row(key, label, better, "text") for key, label, better in TEXT_ROWS]
        text = metrics_table(rows, self.metrics, self.floor, self.skipped, self.observations)
        return text.replace("Real vs real", "Held-out text") + (
            "\n(bits per byte: the held-out column is xz -9e on the same test text, the outside reference)"
        )


def observe_text(metrics: dict[str, Any], floor: dict[str, Any]) -> list[str]:
    """The evaluation rules of text, each against held-out text: copying training text, collapse into repetition."""
    found = []
    copies, real = metrics.get("copy_share"), floor.get("copy_share")
    if isinstance(copies, float) and isinstance(real, float) and copies > real + COPY_EXCESS:
        found.append(
            f"samples copying training text: {copies:.1%} of their {COPY_WIDTH}-byte windows appear verbatim in the "
            f"training text (held-out text: {real:.1%})"
        )
    distinct, real_distinct = metrics.get("distinct_2"), floor.get("distinct_2")
    if (
        isinstance(distinct, float)
        and isinstance(real_distinct, float)
        and distinct < REPETITION_FACTOR * real_distinct
    ):
        found.append(f"collapse into repetition: distinct-2 {distinct:.3f} (held-out text: {real_distinct:.3f})")
    return found


def text_measures(texts: Sequence[bytes], train: bytes, train_keys: np.ndarray) -> dict[str, float]:
    """Copies and diversity of `texts` (each UTF-8 bytes) against the training text."""
    words = [t.decode("utf-8", errors="ignore") for t in texts]
    return {
        "copy_share": copied_share(texts, train_keys),
        "longest_copy": float(np.mean([longest_copied_span(t, train) for t in texts])),
        "distinct_1": distinct_n(words, 1),
        "distinct_2": distinct_n(words, 2),
        "distinct_3": distinct_n(words, 3),
        "self_bleu": self_bleu(words),
    }


def windows_bits_per_byte(model: Any, windows: Any, batch_size: int = 64) -> float:
    """Exact bits per byte of a text model on every window of a TokenDataset (in order, each token predicted once
    per window): its mean next-token loss in nats x tokens per byte / ln 2."""
    nats, predicted = 0.0, 0
    with torch.no_grad():
        for batch, _ in windows.batches(batch_size, shuffle=False):
            nats += model.validation_step((batch.to(model.device), None))["test_loss"] * batch[:, 1:].numel()
            predicted += batch[:, 1:].numel()
    return nats / max(1, predicted) * windows.tokens_per_byte / math.log(2)


def evaluate_text(
    source: Any, n: int | None = None, seed: int = 0, temperature: float = 1.0, top_k: int | None = None
) -> TextEvaluation:
    """`genlab eval` of a text run: test bits per byte (beside xz -9e), and for `n` (100) continuations of held-out
    prompts (PROMPT_BYTES of test text at seeded places, continued for CONTINUATION_BYTES) the share of copied
    32-byte windows, the longest copied span, distinct-1/2/3 and self-BLEU, each beside the same measure of the
    real continuations of those prompts (the floor). The same seed gives the same numbers."""
    from genlab.data.tokenization import encode_corpus
    from genlab.data.tokens import TokenDataset
    from genlab.run import Run

    started = time.perf_counter()
    run = source if isinstance(source, Run) else Run.load(source)
    run.text_model()  # a text run, or one clear error
    model = run.model
    count = TEXT_SAMPLES if n is None else n
    if isinstance(count, bool) or not isinstance(count, int) or count < 2:
        raise GenlabError(f"--n must be 2 or more continuations for a text run, got {count!r}")
    spec = run.info["data"]["spec"]
    train, test = load_text_splits(spec)
    tokenizer = run.tokenizer
    test_bytes, train_bytes = test.text.encode("utf-8"), train.text.encode("utf-8")

    windows = TokenDataset(encode_corpus(test, tokenizer), run.text_model().context, len(test_bytes), spec, tokenizer)
    bits_per_byte = windows_bits_per_byte(model, windows)

    span = PROMPT_BYTES + CONTINUATION_BYTES
    if len(test_bytes) < span + count:
        raise GenlabError(f"{spec}'s test text ({len(test_bytes):,} bytes) is too short for {count} samples of {span}")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randperm(len(test_bytes) - span, generator=generator)[:count].sort().values.tolist()
    samples, real = [], []
    for start in starts:
        prompt = test_bytes[start : start + PROMPT_BYTES].decode("utf-8", errors="ignore")
        drawn = run.generate(prompt, 1, CONTINUATION_BYTES, temperature, top_k, None, generator)[0]
        samples.append(drawn.encode("utf-8")[:CONTINUATION_BYTES])
        real.append(test_bytes[start + PROMPT_BYTES : start + span])
    train_keys = np.sort(window_keys(train_bytes))
    metrics = {"bits_per_byte": bits_per_byte, **text_measures(samples, train_bytes, train_keys)}
    floor = {
        "bits_per_byte": compressor_bits_per_byte(test_bytes)["xz -9e"],
        **text_measures(real, train_bytes, train_keys),
    }
    info = {
        "source": {"kind": "run", "path": run.name, "family": run.family, "epochs": run.info.get("epochs_completed")},
        "data": {"spec": spec, "size": None, "reference": "test", "fingerprint": run.info["data"]["fingerprint"]},
        "extractor": None,
        "counts": {"samples": count, "prompt_bytes": PROMPT_BYTES, "continuation_bytes": CONTINUATION_BYTES,
                   "test_bytes": len(test_bytes), "train_bytes": len(train_bytes)},
        "seed": seed,
        "metrics_selected": ["text"],
        "sampling": {"temperature": temperature, "top_k": top_k},
        "seconds": round(time.perf_counter() - started, 2),
    }  # fmt: skip
    details = {
        "samples": [s.decode("utf-8", errors="replace") for s in samples[:SHOWN_SAMPLES]],
        "prompts": [test_bytes[s : s + PROMPT_BYTES].decode("utf-8", errors="ignore") for s in starts[:SHOWN_SAMPLES]],
    }
    return TextEvaluation(metrics=metrics, floor=floor, details=details, info=info)
