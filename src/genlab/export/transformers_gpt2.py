"""A text run as a Hugging Face GPT-2 directory: `transformers.pipeline('text-generation', model=DIR)` runs it.

    export_transformers("runs/gpt", "hf/")   # config.json, model.safetensors, tokenizer files, genlab_export.json

genlab's network has GPT-2's layout and parameter names (genlab.models.gpt.networks), so the weights map one
to one: `transformer.` before each name, and the attention, MLP and projection matrices transposed (the
library's Conv1D keeps (in, out)); the output projection is the token embedding, tied as in GPT-2. The
tokenizer is written as a `PreTrainedTokenizerFast` over a `tokenizers` Tokenizer: a byte-level BPE run's
own, or for the bytes tokenizer a byte-level model with no merges whose ids are the byte values. Before the
folder is kept, transformers loads it back and must give genlab's next-token probabilities (to 1e-5) and the
same greedy continuation, token for token. `transformers` and `tokenizers` are the optional `text` extra.
"""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path
from typing import Any

import torch

import genlab
from genlab.data.tokenization import BPETokenizer, Tokenizer
from genlab.errors import GenlabError
from genlab.export.folder import EXPORT_FILE, EXPORT_FORMAT, EXPORT_FORMAT_VERSION, check_export_out, move_into_place
from genlab.io import writing
from genlab.models.gpt import GPTModel
from genlab.run import Run

# Everything the exporter writes (save_pretrained's files and genlab's description); --overwrite replaces only these.
EXPORT_ENTRIES = (
    EXPORT_FILE, "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json",
)  # fmt: skip
TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")  # Conv1D: (in, out)
VERIFY_TOLERANCE = 1e-5  # max |p_transformers - p_genlab| over next-token probabilities
VERIFY_TOKENS = 20  # greedy tokens that must agree
INSTALL_HINT = "pip install 'genlab[text]'"


def export_transformers(run_path: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Export the text run at `run_path` to the folder `out_dir` as a transformers GPT-2 model and tokenizer, checked
    against genlab before it is kept; the folder appears whole or not at all. Returns the folder."""
    transformers = _transformers()
    out = check_export_out(out_dir, run_path, overwrite, EXPORT_ENTRIES)  # before loading anything
    run = Run.load(run_path)
    model = run.model
    if not isinstance(model, GPTModel):
        raise GenlabError(f"--format transformers exports text runs (gpt); {run.name} is a {run.family} run")
    tokenizer = run.tokenizer
    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = out.parent / f".{out.name}.{secrets.token_hex(6)}.tmp"
        try:
            reference = transformers.GPT2LMHeadModel(gpt2_config(transformers, model)).eval()
            reference.load_state_dict(gpt2_weights(model), strict=False)  # the causal-mask buffers are rebuilt
            reference.save_pretrained(staging)
            fast_tokenizer(transformers, tokenizer).save_pretrained(staging)
            description = {
                "format": EXPORT_FORMAT,
                "format_version": EXPORT_FORMAT_VERSION,
                "genlab_version": genlab.__version__,
                "kind": "transformers-gpt2",
                "run": run.name,
                "family": run.family,
                "epochs": run.info.get("epochs_completed"),
                "tokenizer": tokenizer.name,
                "context": model.context,
                "use": "transformers.pipeline('text-generation', model=THIS_FOLDER)",
            }
            (staging / EXPORT_FILE).write_text(json.dumps(description, indent=2) + "\n")
            verify(transformers, staging, model, tokenizer)
            move_into_place(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return out


def gpt2_config(transformers, model: GPTModel):
    """The GPT2Config of `model`: its sizes, GPT-2's tanh GELU, no dropout (an exported model is for inference)."""
    config = model.config
    return transformers.GPT2Config(
        vocab_size=model.vocabulary,
        n_positions=model.context,
        n_embd=config.width,
        n_layer=config.layers,
        n_head=config.heads,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=True,
    )


def gpt2_weights(model: GPTModel) -> dict[str, torch.Tensor]:
    """genlab's weights under GPT2LMHeadModel's names: `transformer.` before each, Conv1D matrices transposed, zero
    biases where the run had none (bias=False), and the tied output projection."""
    weights = {}
    for name, value in model.network.state_dict().items():
        weights[f"transformer.{name}"] = value.T.contiguous() if name.endswith(TRANSPOSED) else value
    width = model.config.width
    if not model.config.bias:
        for name, value in list(weights.items()):
            if name.endswith(".weight") and ("ln_" in name or "c_" in name):
                size = value.shape[1] if name.endswith(TRANSPOSED) else width
                weights[name[: -len("weight")] + "bias"] = torch.zeros(size)
    weights["lm_head.weight"] = model.network.wte.weight
    return weights


def fast_tokenizer(transformers, tokenizer: Tokenizer):
    """A PreTrainedTokenizerFast giving the run's token ids: the BPE run's own tokenizer, or byte-level with no merges
    and id = byte value for the bytes tokenizer."""
    if isinstance(tokenizer, BPETokenizer):
        backend = tokenizer.backend
    else:
        import tokenizers

        alphabet = byte_alphabet()
        backend = tokenizers.Tokenizer(tokenizers.models.BPE(vocab={alphabet[b]: b for b in range(256)}, merges=[]))
        backend.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        backend.decoder = tokenizers.decoders.ByteLevel()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=None)


def byte_alphabet() -> dict[int, str]:
    """GPT-2's byte-to-character map (byte-level BPE's alphabet): printable bytes stand for themselves, the others
    take the characters from 256 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def verify(transformers, folder: Path, model: GPTModel, tokenizer: Tokenizer) -> None:
    """Load the export with transformers and compare with genlab: next-token probabilities on a sentence and random
    ids (to VERIFY_TOLERANCE), the tokenizer's ids, and a greedy continuation token for token."""
    loaded = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    loaded_tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    text = "To be, or not to be: that is the question.\n"
    ids = tokenizer.encode(text)
    if list(loaded_tokenizer(text)["input_ids"]) != ids or loaded_tokenizer.decode(ids) != text:
        raise GenlabError("the exported tokenizer does not give genlab's token ids; nothing was written")
    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(0, model.vocabulary, (2, min(model.context, 48)), generator=generator)
    with torch.no_grad():
        for inputs in (torch.tensor([ids[: model.context]]), batch):
            theirs = loaded(inputs).logits.softmax(-1)
            ours = model.network(inputs.to(model.device))[0].softmax(-1).cpu()
            gap = float((theirs - ours).abs().max())
            if gap > VERIFY_TOLERANCE:
                raise GenlabError(
                    f"the exported model's probabilities differ from genlab's by {gap:.2e}; nothing was written"
                )
        prompt = torch.tensor([ids[: model.context // 2]])
        steps = min(VERIFY_TOKENS, model.context - prompt.shape[1])
        greedy = loaded.generate(prompt, max_new_tokens=steps, do_sample=False, pad_token_id=0)
        ours = model.generate(prompt, steps, temperature=0.0).cpu()
    if not torch.equal(greedy[:, : ours.shape[1]], ours):
        raise GenlabError("the exported model's greedy continuation differs from genlab's; nothing was written")


def _transformers() -> Any:
    """transformers, its progress bars and notices off (an export prints one line of its own)."""
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        raise GenlabError(
            f"--format transformers needs the transformers library: install it with {INSTALL_HINT}"
        ) from None
    return transformers
