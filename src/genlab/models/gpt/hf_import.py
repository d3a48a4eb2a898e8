"""A Hugging Face GPT-2 directory read into genlab: its sizes as GPTConfig settings, its tokenizer, its weights.

    settings, tokenizer = read_gpt2_directory("gpt2/")      # checked: a GPT-2 config, a tokenizer, the weights
    model.network.load_state_dict(gpt2_state_dict("gpt2/", model))

The inverse of genlab.export.transformers_gpt2: GPT2LMHeadModel's names lose their `transformer.` prefix and
its Conv1D matrices are transposed back; the tied `lm_head` is the token embedding. The weights are read from
model.safetensors (or, for older directories, pytorch_model.bin with torch.load(weights_only=True): never
unpickling code). `genlab train gpt --init DIR` starts a run from them (genlab.training.api).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from genlab import schema
from genlab.data.tokenization import BPETokenizer
from genlab.errors import GenlabError

TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
GPT2_CONFIG = (
    schema.Field("", "object"),
    schema.Field("model_type", "string", choices=("gpt2",)),
    schema.Field("n_layer", "integer", minimum=1, maximum=256),
    schema.Field("n_head", "integer", minimum=1, maximum=256),
    schema.Field("n_embd", "integer", minimum=1, maximum=65_536),
    schema.Field("n_positions", "integer", minimum=2, maximum=8192),
    schema.Field("vocab_size", "integer", minimum=2, maximum=65_536),
    schema.Field("activation_function", "string", optional=True, choices=("gelu_new", "gelu_pytorch_tanh")),
)
NOT_GPT2 = "give a transformers GPT-2 directory (config.json with model_type gpt2, tokenizer.json, model.safetensors)"


def read_gpt2_directory(folder: str | Path) -> tuple[dict[str, Any], BPETokenizer]:
    """(GPTConfig settings, tokenizer) of the GPT-2 directory `folder`, checked before any weight is read."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GenlabError(f"--init {folder} is not a folder: {NOT_GPT2}")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        raise GenlabError(f"--init {folder} has no readable config.json: {NOT_GPT2}") from None
    schema.validate(config, GPT2_CONFIG, f"{folder / 'config.json'}", NOT_GPT2)
    tokenizer = _tokenizer(folder, config["vocab_size"])
    settings = {
        "layers": config["n_layer"],
        "heads": config["n_head"],
        "width": config["n_embd"],
        "context": config["n_positions"],
        "tokenizer": tokenizer.name,
        "dropout": 0.0,
        "bias": True,
        "lr": 1e-3,  # fine-tuning keeps the rate it had before the cpu preset's became 2e-3 (not measured)
    }
    return settings, tokenizer


def _tokenizer(folder: Path, vocabulary: int) -> BPETokenizer:
    """The directory's tokenizer.json as a genlab BPE tokenizer, its size the model's vocabulary."""
    try:
        import tokenizers
    except ImportError:
        raise GenlabError("--init needs the tokenizers library: pip install 'genlab[text]'") from None
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise GenlabError(f"--init {folder} has no tokenizer.json (a fast tokenizer): {NOT_GPT2}")
    try:
        backend = tokenizers.Tokenizer.from_file(str(path))
    except Exception as error:  # the library raises its own Exception type for a damaged file
        raise GenlabError(f"--init {path} cannot be read as a tokenizer ({error}): {NOT_GPT2}") from None
    size = backend.get_vocab_size()
    if size != vocabulary:
        raise GenlabError(
            f"--init {folder}: its tokenizer has {size:,} tokens but its model {vocabulary:,}; genlab needs them equal"
        )
    return BPETokenizer(f"bpe:{vocabulary}", backend)


def gpt2_state_dict(folder: str | Path, network_names: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The directory's weights under genlab's names, checked against `network_names` (the network's state_dict)."""
    folder = Path(folder)
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        weights = load_file(folder / "model.safetensors")
    elif (folder / "pytorch_model.bin").is_file():
        weights = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise GenlabError(f"--init {folder} has no model.safetensors or pytorch_model.bin: {NOT_GPT2}")
    renamed = {}
    for name, value in weights.items():
        short = name.removeprefix("transformer.")
        if short in network_names:
            renamed[short] = value.T.contiguous() if short.endswith(TRANSPOSED) else value
    missing = sorted(set(network_names) - set(renamed))
    wrong = [k for k in renamed if renamed[k].shape != network_names[k].shape]
    if missing or wrong:
        problem = f"no {missing[0]}" if missing else f"{wrong[0]} of shape {list(renamed[wrong[0]].shape)}"
        raise GenlabError(f"--init {folder}: its weights do not fit its config ({problem}): {NOT_GPT2}")
    return {k: v.float() for k, v in renamed.items()}
