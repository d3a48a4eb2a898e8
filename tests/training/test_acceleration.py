"""The GPU speed settings, checked on the CPU (bf16 autocast, channels_last, TF32 flags, compile), and memory."""

import json

import pytest
import torch
from torch._dynamo.utils import counters

import genlab
from genlab.cli import main
from genlab.errors import GenlabError
from genlab.models import build_model
from genlab.training import TrainConfig, Trainer, acceleration

CONV_FAMILIES = {  # tiny settings of every family that has convolutions
    "vae": {"arch": "conv", "conv_channels": 8, "hidden_dim": 32, "latent_dim": 4},
    "dcgan": {"latent_dim": 8, "channels": 8},
    "wgan-gp": {"latent_dim": 8, "channels": 8},
    "ddpm": {"channels": 8, "channel_mult": (1, 2), "diffusion_steps": 20, "sample_steps": 5},
    "pixelcnn": {"channels": 8, "layers": 3, "kernel_size": 3, "head_channels": 16},
    "realnvp": {"hidden_channels": 8, "res_blocks": 1},
}
ALL_FAMILIES = {**CONV_FAMILIES, "gan": {"latent_dim": 8}, "vae-mlp": {"hidden_dim": 32, "latent_dim": 4}}


@pytest.fixture(scope="module")
def digits():
    data = genlab.load_dataset("digits")
    return data.subset(torch.arange(64)), genlab.load_dataset("digits", split="test").subset(torch.arange(32))


def fit(family, settings, data, **config):
    """(history, trained model) of 2 epochs at batch 32 from seed 0."""
    torch.manual_seed(0)
    model = build_model(family, data[0], dict(settings))
    trainer = Trainer(model, data[0], data[1], TrainConfig(epochs=2, batch_size=32, device="cpu", **config))
    return trainer.fit(), model


@pytest.mark.parametrize("family", CONV_FAMILIES)
def test_channels_last_trains_like_contiguous_and_keeps_weights_nhwc(family, digits):
    plain, _ = fit(family, CONV_FAMILIES[family], digits, channels_last=False)
    nhwc, model = fit(family, CONV_FAMILIES[family], digits, channels_last=True)
    convolutions = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convolutions and all(w.is_contiguous(memory_format=torch.channels_last) for w in convolutions)
    for before, after in zip(plain, nhwc):  # same numbers up to float summation order
        for key in ("loss", "test_loss", "d_loss", "nll"):
            if key in before:
                assert after[key] == pytest.approx(before[key], rel=2e-3, abs=1e-4), (family, key)


def test_channels_last_gives_optimizer_state_the_weights_layout():
    conv = torch.nn.Conv2d(3, 4, 3)
    optimizer = torch.optim.Adam(conv.parameters())
    conv(torch.randn(2, 3, 5, 5)).sum().backward()
    optimizer.step()  # creates exp_avg / exp_avg_sq, contiguous
    moments = optimizer.state[conv.weight]["exp_avg"].clone()
    acceleration.to_channels_last(conv, {"adam": optimizer})
    state = optimizer.state[conv.weight]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert state["exp_avg"].stride() == conv.weight.stride() == state["exp_avg_sq"].stride()
    assert torch.equal(state["exp_avg"], moments)  # same values, new layout


def test_bf16_autocast_runs_the_networks_in_bf16_and_keeps_fp32_weights(digits):
    family, settings = "ddpm", CONV_FAMILIES["ddpm"]
    seen = []
    torch.manual_seed(0)
    model = build_model(family, digits[0], dict(settings))
    model.network.stem.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    history = Trainer(model, digits[0], digits[1], TrainConfig(epochs=2, batch_size=32, device="cpu",
                                                                precision="bf16")).fit()
    assert seen and set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    plain, _ = fit(family, settings, digits, precision="fp32")
    bf16 = [r["loss"] for r in history]
    assert bf16 != [r["loss"] for r in plain]  # autocast really changed the arithmetic ...
    assert bf16 == pytest.approx([r["loss"] for r in plain], rel=0.05)  # ... and not the result


def test_precision_is_resolved_per_device():
    assert acceleration.resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert acceleration.resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(GenlabError, match="choose one of auto, fp32, bf16"):
        acceleration.resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(GenlabError, match="not on mps"):
        acceleration.resolve_precision("bf16", torch.device("mps"))
    with pytest.raises(GenlabError, match="unknown precision"):
        TrainConfig(precision="half").validate()


def test_tf32_is_switched_on_for_cuda_only_and_put_back():
    flags = lambda: (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)  # noqa: E731
    before = flags()
    with acceleration.tf32_on_cuda(torch.device("cpu")):
        assert flags() == before
    with acceleration.tf32_on_cuda(torch.device("cuda")):
        assert flags() == (True, True)
    assert flags() == before


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_compile_targets_are_what_training_and_validation_call(family, digits):
    name = "vae" if family == "vae-mlp" else family
    torch.manual_seed(0)
    model = build_model(name, digits[0], dict(ALL_FAMILIES[family]))
    targets = model.compile_targets()
    called = set()
    for target in targets:
        target.register_forward_pre_hook(lambda module, inputs: called.add(id(module)))
    images, labels = next(digits[0].batches(16))
    model.training_step((images.float() / 255, labels), model.configure_optimizers())
    model.validation_step((images.float() / 255, labels))  # DDPM validates (and samples) with its EMA copy
    assert targets and called == {id(t) for t in targets}
    owned = {id(p) for p in model.parameters()}
    assert all(id(p) in owned for t in targets for p in t.parameters())


def test_compile_trains_the_same_numbers_and_run_json_records_the_settings(tmp_path, digits):
    settings = {"hidden_dim": 32, "latent_dim": 4}
    runs, compiled_frames = {}, {}
    for compiled in (False, True):
        out = tmp_path / f"compiled_{compiled}"
        before = counters["frames"]["ok"]
        genlab.train("vae", digits[0], out, test_data=digits[1], epochs=2, batch_size=32, progress=False,
                     sample_every=0, model_config=settings, compile=compiled)
        runs[compiled] = out
        compiled_frames[compiled] = counters["frames"]["ok"] - before
    assert compiled_frames[False] == 0 and compiled_frames[True] > 0  # dynamo really compiled the networks
    eager, compiled = (genlab.Run.load(runs[flag]) for flag in (False, True))
    assert [r["loss"] for r in compiled.history] == pytest.approx([r["loss"] for r in eager.history], rel=1e-4)
    info = json.loads((runs[True] / "run.json").read_text())
    assert info["train"]["compile"] is True and info["train"]["precision"] == "fp32"


def test_a_second_compiling_trainer_leaves_the_compiled_networks_as_they_are(digits):
    torch.manual_seed(0)
    model = build_model("vae", digits[0], {"hidden_dim": 32, "latent_dim": 4})
    config = TrainConfig(epochs=1, batch_size=64, compile=True)
    Trainer(model, digits[0], None, config)
    first = [target.forward for target in model.compile_targets()]
    Trainer(model, digits[0], None, config)
    assert [target.forward for target in model.compile_targets()] == first  # not wrapped a second time
    assert all("forward" in vars(target) for target in model.compile_targets())


def test_cli_precision_flag_and_its_bad_value(tmp_path, capsys):
    out = tmp_path / "bf16"
    assert main(["train", "vae", "--data", "digits", "--epochs", "1", "--out", str(out), "--quiet",
                 "--precision", "bf16", "--set", "hidden_dim=32", "--sample-every", "0"]) == 0
    assert json.loads((out / "run.json").read_text())["train"]["precision"] == "bf16"
    capsys.readouterr()
    assert main(["train", "vae", "--data", "digits", "--out", str(tmp_path / "bad"), "--precision", "fp16"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'fp16'" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


def test_an_epoch_never_copies_the_dataset():
    """The dataset stays one uint8 tensor: the largest allocation of two epochs is a batch's worth, not a copy."""
    from torch.profiler import ProfilerActivity, profile

    data = genlab.load_dataset("mnist-5k")  # 4,000 images: 3.1 MB as uint8, 12.5 MB as float
    torch.manual_seed(0)
    model = build_model("vae", data, {"hidden_dim": 32, "latent_dim": 4})
    trainer = Trainer(model, data, None, TrainConfig(epochs=2, batch_size=64, device="cpu"))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        trainer.fit()
    largest = max(event.cpu_memory_usage for event in profiler.events())
    assert 0 < largest < data.images.numel() / 4  # measured: 0.41 MB (Adam's step, a log-sigmoid of a batch)
