"""GPT's settings: everything needed to rebuild the text model (saved in run.json, presets resolved)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from genlab.data.tokenization import parse_tokenizer
from genlab.errors import GenlabError
from genlab.models.common import check_bool, check_choice, check_int, check_number

FAMILY = "GPT"  # the name config errors give
MAX_CONTEXT = 8192
SCHEDULES = ("cosine", "constant")
MIN_LR_RATIO = 0.1  # the cosine schedule ends at lr x this (nanoGPT's min_lr = lr / 10)


@dataclass(frozen=True)
class GPTPreset:
    """The transformer's sizes a preset stands for (each overridable by the config field of the same name)."""

    layers: int
    heads: int
    width: int  # the embedding size C, split across the heads
    context: int  # tokens a window holds (GPT-2: 1,024)
    dropout: float
    lr: float  # AdamW's peak learning rate


# "tiny" is for tests and a first look; "cpu" (about 1.2M parameters with bytes) is sized for minutes on a CPU;
# "gpu" is nanoGPT's character-level Shakespeare model (6 layers of 384, context 256, about 10.7M parameters).
# The cpu preset's rate is 2e-3: at its default budget on fortunes it gave 2.604 bits per byte with bytes and 2.085
# with bpe:4096, against 2.779 and 2.163 at 1e-3 (benchmarks/README.md, the text family); the others keep 1e-3
# (nanoGPT's for the Shakespeare model), unmeasured here.
PRESETS: Mapping[str, GPTPreset] = MappingProxyType(
    {
        "tiny": GPTPreset(layers=2, heads=2, width=64, context=64, dropout=0.0, lr=1e-3),
        "cpu": GPTPreset(layers=4, heads=4, width=160, context=128, dropout=0.0, lr=2e-3),
        "gpu": GPTPreset(layers=6, heads=6, width=384, context=256, dropout=0.2, lr=1e-3),
    }
)


@dataclass
class GPTConfig:
    """Everything needed to rebuild a GPT (saved in run.json, presets resolved)."""

    preset: str = "cpu"
    layers: int | None = None  # None: the preset's
    heads: int | None = None
    width: int | None = None
    context: int | None = None
    dropout: float | None = None
    tokenizer: str = "bytes"  # "bytes" (256 ids) or "bpe:N" (byte-level BPE of N tokens, trained on the train split)
    bias: bool = True  # GPT-2 has biases in its Linear and LayerNorm layers
    lr: float | None = None  # AdamW's peak learning rate; None: the preset's (resolved, so run.json holds it)
    weight_decay: float = 0.1  # on matrices only (not biases, norms or embeddings' positions)
    # The learning rate over the optimizer steps: "cosine" warms up linearly for `warmup_steps` (at most a tenth of
    # the decay) and then falls along a cosine to lr / 10 at `decay_steps`, staying there after (as nanoGPT and GPT-2
    # train); "constant" keeps lr. decay_steps None: the run's planned steps, filled in when training starts.
    schedule: str = "cosine"
    warmup_steps: int = 100
    decay_steps: int | None = None
    conditional: bool = False  # text is not drawn per class; kept for the contract

    def __post_init__(self) -> None:
        check_choice(FAMILY, "preset", self.preset, tuple(PRESETS))
        check_bool(FAMILY, "bias", self.bias)
        preset = PRESETS[self.preset]
        self.layers = preset.layers if self.layers is None else self.layers
        self.heads = preset.heads if self.heads is None else self.heads
        self.width = preset.width if self.width is None else self.width
        self.context = preset.context if self.context is None else self.context
        self.dropout = preset.dropout if self.dropout is None else self.dropout
        self.lr = preset.lr if self.lr is None else self.lr
        check_int(FAMILY, "layers", self.layers, 1, 256)
        check_int(FAMILY, "heads", self.heads, 1, 256)
        check_int(FAMILY, "width", self.width, 1, 65_536)
        check_int(FAMILY, "context", self.context, 2, MAX_CONTEXT)
        parse_tokenizer(self.tokenizer)
        check_number(FAMILY, "dropout", self.dropout, 0.0, below=1.0, what="in [0, 1)")
        check_number(FAMILY, "lr", self.lr, above=0, what="a positive number")
        check_number(FAMILY, "weight_decay", self.weight_decay, 0.0, what="0 or more")
        check_choice(FAMILY, "schedule", self.schedule, SCHEDULES)
        check_int(FAMILY, "warmup_steps", self.warmup_steps, 0, 10**9)
        if self.decay_steps is not None:
            check_int(FAMILY, "decay_steps", self.decay_steps, 1, 10**12)
        if self.width % self.heads:
            raise GenlabError(
                f"{FAMILY} setting width ({self.width}) must be a multiple of heads ({self.heads}): "
                "each head takes an equal share of the width"
            )
        if self.conditional:
            raise GenlabError("the gpt family is not conditional: it continues a prompt instead (drop --conditional)")
