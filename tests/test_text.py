"""The text family end to end: `genlab train gpt`, its trace and Quality section, exact resume, BPE, and
`genlab sample --prompt`, on a small real corpus cut from fortunes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import genlab
from genlab.cli import main
from genlab.data.text import load_text_splits

TINY = ["--set", "preset=tiny", "--set", "context=32", "--batch-size", "16", "--quiet"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    """About 20 kB of real quotations, one paragraph each: a corpus that trains in seconds."""
    train, _ = load_text_splits("fortunes")
    path = tmp_path_factory.mktemp("text") / "quotes.txt"
    quotes = [d.replace("\n\n", "\n") for d in train.documents if len(d) < 300][:160]
    path.write_text("\n\n".join(quotes) + "\n")
    return f"text:{path}"


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "gpt"
    assert main(["train", "gpt", "--data", corpus, "--epochs", "3", "--out", str(out), *TINY]) == 0
    return out


def test_train_writes_a_text_run_with_its_trace_and_quality(corpus, tmp_path, capsys):
    out = tmp_path / "gpt"
    assert main(["train", "gpt", "--data", corpus, "--epochs", "2", "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "Bits/byte" in printed and "Test bits/byte" in printed and "tokens/s" in printed
    assert "Quality" in printed and "xz -9e" in printed and "--prompt" in printed
    history = genlab.Run.load(out).history
    assert [r["epoch"] for r in history] == [1, 2] and history[1]["test_loss"] < history[0]["test_loss"]
    record = history[-1]
    assert record["bits_per_byte"] == pytest.approx(record["loss"] / 0.6931471805599453)  # bytes: 1 token per byte
    assert record["tokens_per_second"] == pytest.approx(record["images_per_second"] * 32)
    assert json.loads((out / "tokenizer.json").read_text()) == {"name": "bytes"}
    text = (out / "samples" / "epoch_0002.txt").read_text()
    assert text.startswith("--- sample 1 (seed 0, epoch 2)") and text.count("--- sample") == 4


def test_resume_gives_the_weights_of_an_unbroken_run(corpus, trained, tmp_path):
    from genlab.training import Callback

    class StopInsideEpochTwo(Callback):
        def on_step_end(self, trainer, metrics):
            if (trainer.epoch, trainer.step) == (2, 3):
                trainer.request_stop()

    out = tmp_path / "gpt"
    with pytest.raises(KeyboardInterrupt):
        genlab.train("gpt", corpus, out, epochs=3, batch_size=16, seed=0, progress=False,
                     model_config={"preset": "tiny", "context": 32}, callbacks=[StopInsideEpochTwo()])  # fmt: skip
    assert main(["train", "--resume", "--out", str(out), "--quiet", "--no-final-eval"]) == 0
    resumed, whole = load_file(out / "model.safetensors"), load_file(trained / "model.safetensors")
    assert resumed.keys() == whole.keys() and all(torch.equal(resumed[k], whole[k]) for k in whole)
    # the learning rate followed the same schedule: warm-up, then the cosine towards lr / 10 at the planned end
    straight = genlab.Run.load(trained)
    assert [r["lr"] for r in genlab.Run.load(out).history] == [r["lr"] for r in straight.history]
    planned = straight.info["model"]["config"]["decay_steps"]
    assert planned == 3 * -(-len(genlab.data.tokens.load_token_splits(corpus, "bytes", 32)[0]) // 16)
    model = straight.model
    assert model.learning_rate(0) < model.learning_rate(planned // 10) == pytest.approx(1e-3)
    assert model.learning_rate(planned) == pytest.approx(1e-4) == model.learning_rate(10 * planned)


def test_sample_continues_a_prompt_the_same_way_for_the_same_seed(trained, tmp_path, capsys):
    argv = ["sample", str(trained), "--prompt", "To be", "--n", "2", "--max-new-tokens", "40", "--seed", "3"]
    assert main([*argv, "--temperature", "0.8", "--top-k", "20"]) == 0
    first = capsys.readouterr().out
    assert main([*argv, "--temperature", "0.8", "--top-k", "20"]) == 0
    assert capsys.readouterr().out == first and first.count("--- ") == 2 and "\nTo be" in first
    assert main([*argv, "--out", str(tmp_path / "t.jsonl")]) == 0
    lines = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [line["index"] for line in lines] == [0, 1] and all(line["prompt"] == "To be" for line in lines)
    assert main([*argv, "--temperature", "0", "--out", str(tmp_path / "t.txt")]) == 0
    greedy = (tmp_path / "t.txt").read_text().split("--- ")[1:]
    assert greedy[0].split("\n", 1)[1] == greedy[1].split("\n", 1)[1]  # temperature 0: the likeliest, every time


def test_a_bpe_tokenizer_is_trained_saved_and_used_again(corpus, tmp_path, capsys):
    out = tmp_path / "bpe"
    argv = ["train", "gpt", "--data", corpus, "--epochs", "1", "--out", str(out), *TINY, "--set", "tokenizer=bpe:300"]
    assert main(argv) == 0
    saved = json.loads((out / "tokenizer.json").read_text())
    assert saved["name"] == "bpe:300" and len(saved["tokenizer"]["model"]["vocab"]) == 300
    record = genlab.Run.load(out).history[-1]
    assert record["bits_per_byte"] < record["loss"] / 0.6931471805599453  # fewer tokens than bytes
    capsys.readouterr()
    assert main(["sample", str(out), "--prompt", "Life", "--max-new-tokens", "5"]) == 0
    assert "Life" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "gpt", "--data", "mnist-5k", "--epochs", "1"], "the gpt family learns from text"),
        (
            ["train", "vae", "--data", "fortunes", "--epochs", "1"],
            "fortunes is text; the vae family learns from images",
        ),
        (["train", "gpt", "--data", "fortunes", "--set", "tokenizer=words"], "tokenizer 'words' is not one"),
        (["train", "gpt", "--data", "fortunes", "--eval-every", "1"], "drop --eval-every"),
        (["train", "gpt", "--data", "fortunes", "--size", "28"], "drop --size"),
    ],
)
def test_bad_text_training_input(argv, message, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--temperature", "-1"], "--temperature must be 0"),
        (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
        (["--labels", "3"], "--labels belong to image runs"),
        (["--out", "x.png"], "must end in .txt"),
    ],
)
def test_bad_text_sampling_input(trained, extra, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["sample", str(trained), "--prompt", "a", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_prompt_is_refused_by_an_image_run(capsys):
    fixture = Path(__file__).parent / "fixtures" / "runs" / "vae"
    assert main(["sample", str(fixture), "--prompt", "hello"]) == 2
    assert "draws images, not text" in capsys.readouterr().err


def test_from_a_text_run_keeps_its_tokenizer_and_weights(corpus, tmp_path):
    source = tmp_path / "bpe"
    argv = [
        "train",
        "gpt",
        "--data",
        corpus,
        "--epochs",
        "1",
        "--out",
        str(source),
        *TINY,
        "--set",
        "tokenizer=bpe:300",
    ]
    assert main(argv) == 0
    out = tmp_path / "more"
    assert main(["train", "--from", str(source), "--out", str(out), "--epochs", "1", "--quiet", "--no-final-eval"]) == 0
    assert (out / "tokenizer.json").read_text() == (source / "tokenizer.json").read_text()
    first, second = genlab.Run.load(source).history[-1], genlab.Run.load(out).history[-1]
    assert second["test_loss"] < first["test_loss"]  # it went on from the source's weights


def test_export_to_transformers_runs_in_its_pipeline_as_genlab_does(trained, tmp_path, capsys, monkeypatch):
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "hf"
    assert main(["export", str(trained), "--format", "transformers", "--out", str(out)]) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json", "genlab_export.json"} <= {
        p.name for p in out.iterdir()
    }
    assert json.loads((out / "genlab_export.json").read_text())["kind"] == "transformers-gpt2"
    pipe = transformers.pipeline("text-generation", model=str(out))
    theirs = pipe("To be", max_new_tokens=20, do_sample=False)[0]["generated_text"]
    capsys.readouterr()
    assert main(["sample", str(trained), "--prompt", "To be", "--max-new-tokens", "20", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.split("\n", 1)[1].rstrip("\n") == theirs  # the same greedy text
    assert main(["export", str(trained), "--format", "transformers", "--out", str(out)]) == 2  # no --overwrite
    assert main(["export", str(trained), "--format", "transformers", "--out", str(out), "--overwrite"]) == 0


def test_a_bpe_run_exports_with_its_own_tokenizer(corpus, tmp_path):
    transformers = pytest.importorskip("transformers")
    run = tmp_path / "bpe"
    argv = ["train", "gpt", "--data", corpus, "--epochs", "1", "--out", str(run), *TINY, "--set", "tokenizer=bpe:300"]
    assert main(argv) == 0
    assert main(["export", str(run), "--format", "transformers", "--out", str(tmp_path / "hf")]) == 0
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    ours = genlab.run.load_tokenizer(run)
    assert tokenizer("Life is short.")["input_ids"] == ours.encode("Life is short.")


def test_transformers_export_refuses_an_image_run(tmp_path, capsys):
    fixture = Path(__file__).parent / "fixtures" / "runs" / "vae"
    assert main(["export", str(fixture), "--format", "transformers", "--out", str(tmp_path / "hf")]) == 2
    assert "exports text runs (gpt)" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()


def test_eval_of_a_text_run_puts_copies_and_diversity_beside_held_out_text(trained, capsys):
    assert main(["eval", str(trained), "--n", "8", "--seed", "4"]) == 0
    printed = capsys.readouterr().out
    assert "Bits per byte (test)" in printed and "Held-out text" in printed and "Self-BLEU" in printed
    saved = json.loads((trained / "metrics.json").read_text())
    keys = {"bits_per_byte", "copy_share", "longest_copy", "distinct_1", "distinct_2", "distinct_3", "self_bleu"}
    assert set(saved["metrics"]) == keys == set(saved["floor"]) and saved["counts"]["samples"] == 8
    history = genlab.Run.load(trained).history
    assert saved["metrics"]["bits_per_byte"] == pytest.approx(history[-1]["test_bits_per_byte"], rel=1e-4)
    assert 0 <= saved["metrics"]["copy_share"] <= 1 and 0 < saved["floor"]["distinct_1"] <= 1
    assert main(["eval", str(trained), "--n", "8", "--seed", "4", "--out", str(trained.parent / "again")]) == 0
    again = json.loads((trained.parent / "again" / "metrics.json").read_text())
    assert again["metrics"] == saved["metrics"]  # the same seed, the same numbers
    assert main(["eval", str(trained), "--metrics", "fid"]) == 2
    assert "drop --metrics" in capsys.readouterr().err


def test_one_text_streams_to_the_terminal_as_the_file_holds_it(trained, tmp_path, capsys):
    pieces = []
    run = genlab.Run.load(trained)
    texts = run.generate("Life", 1, 50, 0.9, None, None, torch.Generator().manual_seed(5), stream=pieces.append)
    assert len(pieces) > 10 and "".join(pieces) == texts[0]  # piece by piece, adding up to the text
    argv = ["sample", str(trained), "--prompt", "Life", "--max-new-tokens", "50", "--temperature", "0.9", "--seed", "5"]
    assert main(argv) == 0
    assert capsys.readouterr().out == f"--- 1 (seed 5)\nLife{texts[0]}\n"
    assert main([*argv, "--out", str(tmp_path / "t.txt")]) == 0
    assert (tmp_path / "t.txt").read_text() == f"--- 1 (seed 5)\nLife{texts[0]}\n"


def test_init_reads_a_transformers_gpt2_directory_back_into_genlab(trained, corpus, tmp_path, capsys):
    pytest.importorskip("transformers")
    from genlab.models import build_model
    from genlab.models.base import TokenSpec
    from genlab.models.gpt.hf_import import gpt2_state_dict, read_gpt2_directory

    hf = tmp_path / "hf"
    assert main(["export", str(trained), "--format", "transformers", "--out", str(hf)]) == 0
    settings, tokenizer = read_gpt2_directory(hf)
    assert tokenizer.encode("To be") == list(b"To be") and settings["context"] == 32
    model = build_model("gpt", TokenSpec(tokenizer.vocabulary_size, tokenizer.name), settings)
    model.network.load_state_dict(gpt2_state_dict(hf, model.network.state_dict()))
    source = genlab.Run.load(trained).model
    ids = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.network(ids)[0], source.network(ids)[0], rtol=0, atol=1e-5)
    out = tmp_path / "tuned"
    argv = ["train", "--init", str(hf), "--data", corpus, "--epochs", "1", "--batch-size", "16", "--out", str(out)]
    assert main([*argv, "--quiet", "--no-final-eval"]) == 0
    assert read_json(out)["train"]["init_from"] == f"transformers:{hf}"
    assert genlab.Run.load(out).history[0]["test_loss"] < genlab.Run.load(trained).history[0]["test_loss"]


def read_json(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


@pytest.mark.parametrize(
    "files, extra, message",
    [
        ({"config.json": '{"model_type": "bert"}'}, [], "field model_type must be one of"),
        ({}, [], "has no readable config.json"),
        ({"config.json": "{}"}, ["--resume"], "--init starts a new run"),
    ],
)
def test_init_refuses_what_is_not_a_gpt2_directory(files, extra, message, corpus, tmp_path, capsys):
    folder = tmp_path / "not-gpt2"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    argv = ["train", "--init", str(folder), "--data", corpus, "--out", str(tmp_path / "r"), "--quiet", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_explain_measures_a_text_run_on_real_windows_and_a_prompt(trained, corpus, capsys):
    import torch.nn.functional as F

    from genlab.data.tokens import load_token_splits

    argv = ["explain", str(trained), "--prompt", "To be", "--format", "json", "--seed", "3"]
    assert main(argv) == 0
    document = json.loads(capsys.readouterr().out)
    stages = {stage["name"]: stage for stage in document["stages"]}
    assert [s["path"] for s in document["stages"]].count("generation") == 6
    assert stages["windows"]["output_shape"] == [8, 33] and stages["logits"]["output_shape"] == [8, 32, 256]
    assert stages["read the prompt"]["output_shape"] == [2, 2, 1, 2, 5, 32]  # blocks, (k, v), (1, heads, P, width)
    run = genlab.Run.load(trained)
    train, _ = load_token_splits(corpus, genlab.run.load_tokenizer(trained), 32)
    assert stages["tokenize"]["output_shape"] == [len(train.tokens)]
    starts = torch.tensor(document["data"]["starts"])
    windows = train.tokens[starts[:, None] + torch.arange(33)]
    with torch.no_grad():  # the loss the stage quotes, computed here from the windows it names
        logits, _ = run.model.network(windows[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten())
        prompt = run.model.network(torch.tensor([list(b"To be")]))[0][0].softmax(-1)  # (5, 256)
    assert stages["loss"]["example"].startswith(f"{loss:.2f} nats per token")
    rows = document["next_tokens"]
    assert [r["token"] for r in rows] == ["T", "o", " ", "b", "e"] and rows[-1]["following"] is None
    assert rows[0]["following"] == "o" and rows[0]["following_probability"] == pytest.approx(float(prompt[0, 111]))
    for row, probabilities in zip(rows, prompt):
        assert [p for _, p in row["top"]] == pytest.approx(probabilities.topk(5).values.tolist())
    assert document["lens"][-1]["token"] == rows[-1]["top"][0][0] and document["lens"][-1]["rank_of_final"] == 1
    assert [layer["name"] for layer in document["layers"]][:3] == ["input", "wte", "wpe"]
    assert document["parameters"] == sum(p.numel() for p in run.model.network.parameters())
    assert main(argv) == 0 and json.loads(capsys.readouterr().out) == document  # the same seed, the same page


def test_explain_an_untrained_text_family_and_its_bad_input(corpus, capsys):
    argv = ["explain", "gpt", "--data", corpus, "--set", "preset=tiny", "--set", "context=16"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Training path: text -> loss" in printed and "Generation path: prompt -> text" in printed
    assert "Next-token table - 'The secret of life is'" in printed and "untrained (initialised with seed 0)" in printed
    loss = float(printed.split("e.g. ")[8].split(" nats per token")[0])
    assert abs(loss - 5.545) < 0.1  # untrained: about a uniform guess over 256 bytes, ln 256
    fixture = Path(__file__).parent / "fixtures" / "runs" / "vae"
    for bad, message in [
        ([*argv, "--size", "28"], "--size resizes images"),
        ([*argv, "--prompt", ""], "the prompt is empty"),
        (["explain", "vae", "--prompt", "hi"], "--prompt belongs to text models"),
        (["explain", str(fixture), "--prompt", "hi"], "--prompt belongs to text models"),
    ]:
        assert main(bad) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_report_and_compare_of_text_runs_show_text(trained, corpus, tmp_path, capsys):
    assert main(["eval", str(trained), "--n", "4", "--seed", "2", "--out", str(tmp_path / "eval")]) == 0
    (trained / "metrics.json").write_bytes((tmp_path / "eval" / "metrics.json").read_bytes())
    page = tmp_path / "report.html"
    assert main(["report", str(trained), "--out", str(page)]) == 0
    text = page.read_text()
    assert "Next-token table of the prompt" in text and "Prediction over the blocks" in text
    assert "Continuations and copies" in text and "Held-out text" in text and "Reconstructions" not in text
    details = json.loads((trained / "metrics.json").read_text())["details"]
    import html

    assert len(details["prompts"]) == 4 and html.escape(details["prompts"][0], quote=True) in text
    assert "test tokens, bytes" in text and "Epoch 3</h3>" in text  # the samples training wrote, as text
    assert main(["compare", str(trained), str(trained), "--out", str(tmp_path / "c.html")]) == 0
    printed = capsys.readouterr().out
    assert "Bits/byte" in printed and "FID" not in printed
    fixture = Path(__file__).parent / "fixtures" / "runs" / "vae"
    assert main(["compare", str(trained), str(fixture), "--out", str(tmp_path / "mixed.html")]) == 2
    assert "compare runs of one kind" in capsys.readouterr().err and not (tmp_path / "mixed.html").exists()


def test_bf16_autocast_trains_the_text_family_like_fp32_and_compile_targets_the_network(corpus):
    from genlab.data.tokens import load_token_splits
    from genlab.models import build_model
    from genlab.training import TrainConfig, Trainer

    train, test = load_token_splits(corpus, "bytes", 32)
    losses, seen = {}, []
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = build_model("gpt", train, {"preset": "tiny", "context": 32})
        model.network.h[0].mlp.c_fc.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
        config = TrainConfig(epochs=1, batch_size=16, device="cpu", precision=precision)
        losses[precision] = [r["loss"] for r in Trainer(model, train, test, config).fit()]
        assert all(p.dtype == torch.float32 for p in model.parameters())
    assert set(seen) == {torch.float32, torch.bfloat16}  # autocast ran the MLP in bf16, the weights stayed fp32
    assert losses["bf16"] != losses["fp32"] and losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)
    assert model.compile_targets() == [model.network]  # what --compile hands to torch.compile


def test_hostile_text_files_each_get_one_line_and_change_nothing(trained, corpus, tmp_path, capsys):
    import shutil

    from genlab.data.text import load_text_splits as splits
    from genlab.data.tokenization import build_tokenizer

    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as file:
        file.truncate(600 * 2**20)  # sparse: its size is checked before a byte is read
    assert main(["train", "gpt", "--data", f"text:{huge}", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "over the 512 MiB" in capsys.readouterr().err and not (tmp_path / "r").exists()
    other = build_tokenizer("bpe:300", splits(corpus)[0]).to_dict()  # a good tokenizer, but not this run's
    for damage, message in [
        (b"\xff\xfe{", "is not valid JSON"),
        (b'{"name": "bpe:300", "tokenizer": {"oops": 1}}', "the saved BPE tokenizer cannot be read"),
        (json.dumps(other).encode(), "is not this run's"),
        (None, "the run's tokenizer is missing"),
    ]:
        run = tmp_path / "damaged"
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(trained, run)
        if damage is None:
            (run / "tokenizer.json").unlink()
        else:
            (run / "tokenizer.json").write_bytes(damage)
        before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
        for argv in (["sample", str(run), "--prompt", "hi"], ["explain", str(run)], ["eval", str(run), "--n", "2"]):
            assert main(argv) == 2, (damage, argv)
            err = capsys.readouterr().err
            assert message in err and len(err.strip().splitlines()) == 1, err
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # nothing written or lost


def test_likelihood_of_text_runs_is_exact_bits_per_byte_of_the_test_text(trained, corpus, tmp_path, capsys):
    out = tmp_path / "likelihood.json"
    assert main(["likelihood", str(trained), str(trained), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "test text: all" in printed and "Bits/byte" in printed and "UTF-8 bytes" in printed
    rows = json.loads(out.read_text())["rows"]
    expected = genlab.Run.load(trained).history[-1]["test_bits_per_byte"]  # the trainer's figure for the same text
    assert rows[0]["bits_per_dim"] == pytest.approx(expected, rel=1e-5) and rows[0]["kind"] == "exact"
    assert rows[0]["nll_nats"] == pytest.approx(expected * 0.6931471805599453)
    fixture = Path(__file__).parent / "fixtures" / "runs" / "vae"
    for argv, message in [
        (["likelihood", str(trained), str(fixture)], "give runs of one kind"),
        (["likelihood", str(trained), "--images", "10"], "drop it"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_a_huge_or_broken_sample_page_is_left_out_of_the_report_and_compare(trained, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    with open(run / "samples" / "epoch_0009.txt", "wb") as file:
        file.truncate(3 * 2**20)  # sparse: 3 MiB of a page training would never write
    (run / "samples" / "epoch_0008.txt").write_bytes(b"\xff\xfe not UTF-8 \xc3")
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "epoch_0009.txt is 3,145,728 bytes, too large to show: left out" in page
    assert "not UTF-8" in page  # undecodable bytes replaced, the rest shown
    assert main(["compare", str(run), str(trained), "--out", str(tmp_path / "c.html")]) == 0
    assert "too large to show" in (tmp_path / "c.html").read_text()
