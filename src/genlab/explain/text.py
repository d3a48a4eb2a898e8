"""`genlab explain` for the text family: text to loss and prompt to text, stage by stage, on real windows.

    explanation = explain_text_model("gpt", "fortunes", seed=0)              # an untrained model
    explanation = explain_text_run("runs/gpt", prompt="To be")               # a trained run, its text and tokenizer
    print(explanation.to_text())                                             # or .to_markdown(), .to_dict()

Besides the stages and the hooked layers every family has, a text explanation holds what the model makes of a
prompt: the likeliest next tokens at each of its positions (the next-token table), and the prediction at its last
position after each block (the prediction over the blocks). The family's measurements are in
genlab.models.gpt.explain; nothing is trained, and the caller's random-number state is left as it was.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from genlab import rng
from genlab.data.tokens import TokenDataset, load_token_splits
from genlab.errors import GenlabError
from genlab.explain.pipeline import Explanation, aligned, trace_layers, trained_weights, wrap
from genlab.models import GPTModel, build_model, make_config
from genlab.models.common import eval_mode
from genlab.models.gpt import explain as gpt_explain
from genlab.models.gpt.explain import LensRow, NextToken, shown
from genlab.run import Run

DEFAULT_DATA = "fortunes"
DEFAULT_PROMPT = "The secret of life is"
GENERATED_TOKENS = 32  # the generation path's decode stage writes this many
TABLE_ROWS = 40  # positions of the next-token table shown in text (the prompt's last ones)


@dataclass
class TextExplanation(Explanation):
    """An Explanation of a text model, with the prompt's next-token table and the prediction over the blocks."""

    prompt: str = ""
    next_tokens: list[NextToken] = field(default_factory=list)
    lens: list[LensRow] = field(default_factory=list)
    paths: ClassVar[dict[str, str]] = {
        "training": "Training path: text -> loss",
        "generation": "Generation path: prompt -> text",
    }

    def _heading(self) -> str:
        data = self.data
        return (
            f"genlab explain {self.family}: {data['spec']}, {data['split']} split ({data['tokens']:,} tokens of the "
            f"{data['tokenizer']} tokenizer), a batch of {data['batch_size']} windows of {data['window']} tokens, "
            f"seed {self.seed}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "prompt": self.prompt,
            "next_tokens": [row.to_dict() for row in self.next_tokens],
            "lens": [dataclasses.asdict(row) for row in self.lens],
        }

    def _lens_title(self) -> str:
        return (
            f"Prediction over the blocks - at the prompt's last position ('{self.next_tokens[-1].token}'), the "
            "likeliest next token if the network stopped there"
        )

    def _table_title(self) -> str:
        return (
            f"Next-token table - {shown(self.prompt, 40)} ({len(self.next_tokens)} tokens): the "
            f"{gpt_explain.TOP} likeliest next tokens at each position"
        )

    def to_text(self) -> str:
        lines = [super().to_text(), "", self._lens_title()]
        lens = [dataclasses.asdict(row) for row in self.lens]
        lines += ["  " + line for line in aligned(LENS_HEADER, lens_cells(lens), right={2, 3})]
        lines += ["", self._table_title()]
        shown_rows = self.next_tokens[-TABLE_ROWS:]
        if len(shown_rows) < len(self.next_tokens):
            lines += wrap(f"(the last {TABLE_ROWS} of {len(self.next_tokens)} positions)", "  ", "  ")
        rows = next_token_cells([row.to_dict() for row in shown_rows])
        lines += ["  " + line for line in aligned(TABLE_HEADER, rows, right={0, 3})]
        return "\n".join(line.rstrip() for line in lines)

    def to_markdown(self) -> str:
        def row(cells: list[str]) -> str:
            return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

        lines = [super().to_markdown(), "", f"### {self._lens_title()}", ""]
        lines += [row(LENS_HEADER), "|---|---|---:|---:|"]
        lines += [row(cells) for cells in lens_cells([dataclasses.asdict(r) for r in self.lens])]
        lines += ["", f"### {self._table_title()}", ""]
        lines += [row(TABLE_HEADER), "|---:|---|---|---:|---|"]
        lines += [row(cells) for cells in next_token_cells([r.to_dict() for r in self.next_tokens])]
        return "\n".join(lines)


LENS_HEADER = ["After", "Likeliest", "p", "Rank of the final choice"]
TABLE_HEADER = ["#", "Token", "Next in prompt", "p(next)", "Likeliest next tokens"]


def lens_cells(lens: list[dict[str, Any]]) -> list[list[str]]:
    """The prediction over the blocks as text cells, from its to_dict form (the text, Markdown and HTML tables)."""
    return [[r["after"], f"'{r['token']}'", f"{r['probability']:.3f}", str(r["rank_of_final"])] for r in lens]


def next_token_cells(rows: list[dict[str, Any]]) -> list[list[str]]:
    """The next-token table as text cells, from its to_dict form (the text, Markdown and HTML tables)."""
    return [
        [
            str(r["position"]),
            f"'{r['token']}'",
            "" if r["following"] is None else f"'{r['following']}'",
            "" if r["following_probability"] is None else f"{r['following_probability']:.3f}",
            ", ".join(f"'{text}' {p:.2f}" for text, p in r["top"]),
        ]
        for r in rows
    ]


def explain_text_model(
    family: str,
    data: object = None,
    *,
    batch_size: int,
    seed: int = 0,
    model_config: dict[str, Any] | None = None,
    prompt: str | None = None,
) -> TextExplanation:
    """Explain text family `family`, untrained (weights drawn with `seed`), on the train split of `data` (default
    fortunes), tokenized as its settings say (`model_config`, e.g. {"tokenizer": "bpe:512"})."""
    if data is not None and not isinstance(data, str):
        raise GenlabError(f"the {family} family is explained on text: --data fortunes or text:PATH")
    config = make_config(family, model_config)
    train, _ = load_token_splits(data or DEFAULT_DATA, config.tokenizer, config.context)
    with rng.preserved(torch.device("cpu")):
        torch.manual_seed(seed)  # the initial weights depend on the seed only, as in `genlab.train`
        model = build_model(family, train, config, training=False)
    assert isinstance(model, GPTModel)
    weights = f"untrained (initialised with seed {seed})"
    return _explain_text(model, train, batch_size, seed, prompt, {"weights": weights, "run": None})


def explain_text_run(
    run: Run, seed: int = 0, *, batch_size: int, data: object = None, prompt: str | None = None
) -> TextExplanation:
    """Explain a trained text run: its model on windows of its training text (or `data`'s), read with its
    tokenizer."""
    model = run.model
    assert isinstance(model, GPTModel)
    if data is not None and not isinstance(data, str):
        raise GenlabError(f"a text run is explained on text: --data fortunes or text:PATH, not {type(data).__name__}")
    train, _ = load_token_splits(data or run.info["data"]["spec"], run.tokenizer, model.context)
    return _explain_text(model, train, batch_size, seed, prompt, {"weights": trained_weights(run), "run": run.name})


def _explain_text(
    model: GPTModel,
    dataset: TokenDataset,
    batch_size: int,
    seed: int,
    prompt: str | None,
    model_info: dict[str, Any],
) -> TextExplanation:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise GenlabError(f"the batch size must be a positive integer, got {batch_size!r}")
    prompt = DEFAULT_PROMPT if prompt is None else prompt
    if not prompt:
        raise GenlabError("the prompt is empty: give --prompt some text to explain the next-token table with")
    if len(dataset) < 1:
        raise GenlabError(f"{dataset.name} is too short for one window of {dataset.context + 1} tokens")
    tokenizer = dataset.tokenizer
    generator = torch.Generator().manual_seed(seed)  # the windows' offsets
    windows, starts = gpt_explain.draw_windows(dataset, batch_size, generator)
    windows = windows.to(model.device)
    with eval_mode(model), torch.no_grad(), rng.preserved(model.device):
        stages = gpt_explain.training_stages(model, dataset, windows, starts)
        generation, ids = gpt_explain.generation_stages(model, tokenizer, prompt, seed, GENERATED_TOKENS)
        stages += generation
        layers = trace_layers(gpt_explain.prediction_pass(model, windows[:, :-1]))
        next_tokens = gpt_explain.next_token_table(model, tokenizer, ids)
        lens = gpt_explain.lens(model, tokenizer, ids)
    parameters = sum(layer.parameters for layer in layers)
    data = {
        "spec": dataset.name,
        "split": "train",
        "tokenizer": tokenizer.name,
        "vocabulary": model.vocabulary,
        "tokens": len(dataset.tokens),
        "bytes": dataset.num_bytes,
        "batch_size": len(windows),
        "window": windows.shape[1],
        "starts": starts.tolist(),
    }
    config = json.loads(json.dumps(dataclasses.asdict(model.config)))
    return TextExplanation(
        model.family,
        model.idea,
        data,
        {"config": config, "conditional": False, **model_info},
        seed,
        stages,
        layers,
        parameters,
        "transformer",
        f"one call of the transformer on {len(windows)} windows of {windows.shape[1] - 1} tokens; a forward hook on "
        "every layer (the token table wte is called once for the inputs and reused, as a weight, for the logits)",
        prompt,
        next_tokens,
        lens,
    )
