"""Text corpora and tokenizers: the fortunes subset, text:PATH, the split between documents, bytes and BPE."""

from __future__ import annotations

import pytest

from genlab.data.text import DOCUMENT_SEPARATOR, FORTUNE_FILES, fortune_folder, is_text_spec, load_text_splits
from genlab.data.tokenization import (
    BYTE_VOCABULARY,
    ByteTokenizer,
    build_tokenizer,
    encode_corpus,
    parse_tokenizer,
    tokenizer_from_dict,
)
from genlab.errors import GenlabError


@pytest.fixture(scope="module")
def fortunes():
    return load_text_splits("fortunes")


def test_fortunes_is_the_named_subset_split_90_10_between_quotations(fortunes):
    train, test = fortunes
    shipped = {p.name for p in fortune_folder().iterdir() if p.is_file() and "." not in p.name}
    assert set(FORTUNE_FILES) < shipped and {"ethnic", "men-women", "ascii-art"} <= shipped - set(FORTUNE_FILES)
    total = len(train) + len(test)
    assert total > 10_000 and abs(len(test) / total - 0.1) < 0.001
    assert not set(train.documents) & set(test.documents)  # no quotation on both sides (repeats are one document)
    assert all(d.strip() and "\n%\n" not in f"\n{d}\n" for d in train.documents[:2000])  # never cut inside one
    assert 1.8e6 < train.num_bytes < 2.6e6 and train.text.count(DOCUMENT_SEPARATOR) == len(train) - 1
    assert load_text_splits("fortunes") == fortunes  # the same split every time


def test_text_path_reads_a_file_or_a_folder_by_paragraphs(tmp_path):
    (tmp_path / "a.txt").write_text("one\ntwo\n\nthree\r\n\r\nfour\n\n\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("five\n\nsix")
    (tmp_path / "skip.md").write_text("not read")
    train, test = load_text_splits(f"text:{tmp_path}")
    assert sorted(train.documents + test.documents) == sorted(["one\ntwo", "three", "four", "five", "six"])
    assert len(test) == 1 and is_text_spec(f"text:{tmp_path}") and is_text_spec("fortunes")
    assert not is_text_spec("mnist-5k")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"just one paragraph", "holds 1 document(s)"),
        (b"fine\n\ncaf\xe9 latin-1", "is not UTF-8 text: byte 9 (0xe9)"),
    ],
)
def test_bad_text_files(tmp_path, content, message):
    path = tmp_path / "t.txt"
    path.write_bytes(content)
    with pytest.raises(GenlabError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_text_splits(f"text:{path}")


def test_bad_text_specs(tmp_path):
    with pytest.raises(GenlabError, match="holds no .txt file"):
        load_text_splits(f"text:{tmp_path}")
    with pytest.raises(GenlabError, match="does not exist"):
        load_text_splits(f"text:{tmp_path / 'nope.txt'}")
    with pytest.raises(GenlabError, match="not a text dataset"):
        load_text_splits("mnist-5k")


def test_bytes_round_trip_any_text():
    tokenizer = ByteTokenizer()
    text = "To be — or not: naïve 🙂\n\t"
    ids = tokenizer.encode(text)
    assert len(ids) == len(text.encode()) and max(ids) < BYTE_VOCABULARY == tokenizer.vocabulary_size
    assert tokenizer.decode(ids) == text
    assert [tokenizer.token_text(i) for i in tokenizer.encode("a\n")] == ["a", "\\n"]


def test_bpe_is_trained_on_train_only_deterministic_and_saved_whole(fortunes):
    train, test = fortunes
    tokenizer = build_tokenizer("bpe:1024", train)
    assert tokenizer.vocabulary_size == 1024
    ids = encode_corpus(test, tokenizer)
    assert tokenizer.decode(ids.tolist()) == test.text  # lossless on unseen text
    assert test.num_bytes / len(ids) > 2.0  # merges learned: over two bytes per token on held-out text
    again = build_tokenizer("bpe:1024", train)
    assert again.to_dict() == tokenizer.to_dict()
    restored = tokenizer_from_dict(tokenizer.to_dict(), "run.json")
    assert restored.encode(test.documents[0]) == tokenizer.encode(test.documents[0])


@pytest.mark.parametrize("spec", ["bpe", "bpe:10", "bpe:255", "bpe:x", "bytes:3", "words", "bpe:100000"])
def test_bad_tokenizer_specs(spec):
    with pytest.raises(GenlabError, match="is not one genlab has: bytes"):
        parse_tokenizer(spec)


def test_a_damaged_saved_tokenizer_is_one_clear_error(fortunes):
    with pytest.raises(GenlabError, match="run.json: tokenizer 'bpe:7'"):
        tokenizer_from_dict({"name": "bpe:7"}, "run.json")
    with pytest.raises(GenlabError, match="the saved BPE tokenizer cannot be read"):
        tokenizer_from_dict({"name": "bpe:512", "tokenizer": {"model": 3}}, "run.json")
