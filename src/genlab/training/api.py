"""`genlab.train`: one call from a model name and a dataset to a finished run directory."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from genlab.data import ImageDataset, fingerprint, load_splits
from genlab.data.text import is_text_spec
from genlab.data.tokens import TokenDataset, load_token_splits, token_fingerprint
from genlab.errors import GenlabError
from genlab.models import build_model, is_text_family, make_config, stored_config
from genlab.models.base import GenerativeModel, steps_per_epoch
from genlab.models.gpt import GPTModel
from genlab.models.gpt.hf_import import gpt2_state_dict, read_gpt2_directory
from genlab.run import (
    MODEL_FILE,
    STATE_FILE,
    Run,
    check_replaceable,
    is_run_dir,
    load_checkpoint,
    load_model_weights,
    load_tokenizer,
    model_from_info,
    new_run_info,
    read_checkpoint,
    read_history,
    read_run_info,
    run_lock,
    save_model,
    save_tokenizer,
    truncate_history,
    write_run_info,
)
from genlab.training import acceleration, distributed
from genlab.training.callbacks import EvalEvery, ProgressBar, RunWriter, SampleGrids, TextNumbers, TextSamples, counted
from genlab.training.trainer import (
    Callback,
    EpochProgress,
    TrainConfig,
    Trainer,
    default_validate_every,
    pick_device,
)


def train(
    model: str | None = None,
    data: str | ImageDataset | None = None,
    out: str | Path | None = None,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    compile: bool = False,
    size: int | tuple[int, int] | None = None,
    test_data: ImageDataset | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    sample_every: int | None = None,
    validate_every: int | None = None,
    eval_every: int = 0,
    eval_n: int = 1000,
    callbacks: Sequence[Callback] = (),
    model_config: dict[str, Any] | None = None,
    final_eval: bool = False,
    init_from: str | Path | Run | None = None,
    init_transformers: str | Path | None = None,
) -> Run:
    """Train family `model` on `data` into the run directory `out` and return the loaded Run.

    `data` is a dataset name ("mnist-5k", "folder:PATH", ...) whose train split is used for
    training and test split for validation, or an ImageDataset (then pass `test_data` for
    validation). `epochs` is the total; by default the family's budget of optimizer steps for this
    data's size (`budget_steps`: `default_steps`, grown for data larger than mnist-5k's, by at most the family's
    `largest_budget_scale`) turned into epochs (`default_epochs`), recorded in run.json as train.default_steps.
    `resume=True` continues the run at `out` exactly where it stopped, with its stored settings and
    the same data (checked by fingerprint); `epochs` may raise its total. `eval_every` N > 0 adds FID, precision and
    recall of `eval_n` samples to history.jsonl every N epochs. Nothing at `out` is touched
    until every input has been checked.

    `validate_every` N measures the test set after every N epochs and after the last (run.json keeps it as
    train.validate_every, which a resumed run follows); by default every epoch, and in runs of more than
    VALIDATIONS_PER_RUN (50) epochs often enough to validate about 50 times (`default_validate_every`): a budget
    of many short epochs would otherwise spend a twentieth of its time on the test set. `sample_every` (a grid
    in samples/; 0: none) defaults to the same.

    `precision` "auto" trains under bf16 autocast on a CUDA GPU that supports it and in fp32
    elsewhere ("fp32" and "bf16" force one); `compile=True` hands the family's networks to
    torch.compile. On CUDA, TF32 and channels_last (convolutional families) are always on. These
    settings may change on resume; run.json records the last ones.

    Launched by torchrun (several processes), it joins the process group (nccl on CUDA, gloo on
    the CPU) and trains data parallel; only rank 0 writes `out`, and the `callbacks` given here
    run on every rank. Rank 0 returns the loaded run, the others the same weights in memory.

    `init_from` (a run directory, "zoo:NAME" or a loaded Run) starts a new run from that run's weights (and
    its EMA copy) instead of a fresh initialisation: the family and model settings are the source's, with
    `model_config` changing single fields, and the data defaults to the source's. Only the weights carry
    over: the optimizers start afresh (a zoo model ships no optimizer state), and the new run counts its
    own epochs from 0; run.json records the source as train.init_from. `init_transformers` does the same from a
    Hugging Face GPT-2 directory (config.json, tokenizer.json, model.safetensors: the real gpt2 where a user has it,
    or a genlab export), for the gpt family: its sizes, tokenizer and weights (genlab.models.gpt.hf_import).

    `final_eval=True` measures FID, precision and recall of up to 1,000 samples against the test
    split once training ends normally, prints them beside the real-vs-real floor and saves them as
    the run's metrics.json (genlab.eval.final; up to about 30 s of sampling). Off by default here, so
    that scripts and tests are not slowed unasked; `genlab train` turns it on (--no-final-eval).
    """
    if not isinstance(final_eval, bool):
        raise GenlabError(f"final_eval must be True or False, got {final_eval!r}")
    from genlab import zoo

    if zoo.is_zoo_spec(str(out)) or (out is not None and zoo.inside_zoo(out)):
        raise GenlabError(
            f"zoo models are read-only: --out {out} cannot be trained; to train on from one, start a new run "
            "from its weights with --from zoo:NAME --out runs/NEW"
        )
    if init_from is not None and init_transformers is not None:
        raise GenlabError("--from and --init both name the weights to start from: give one")
    if init_transformers is not None and resume:
        raise GenlabError("--init starts a new run from a GPT-2 directory; --resume continues this one: give one")
    if init_from is not None and resume:
        raise GenlabError("--from starts a new run from another run's weights; --resume continues this one: give one")
    out = Path(out if out is not None else default_out(model))
    source: Run | None = None  # the run whose weights a new run starts from (init_from)
    if out.exists() and not out.is_dir():
        raise GenlabError(f"{out} is a file; give a folder for the run (--out)")
    if resume:
        info = _resumable_info(out, model, data, batch_size, seed, size, model_config)
        stored = info["train"]
        if epochs is not None:  # a total the user set, no longer the family's budget
            stored.pop("default_steps", None)
        if validate_every is not None:  # a cadence the user sets from here on
            stored["validate_every"] = validate_every
        config = TrainConfig(
            epochs or stored["epochs"],
            stored["batch_size"],
            stored["seed"],
            device,
            precision,
            compile,
            validate_every=stored.get("validate_every", 1),  # runs before the setting validated every epoch
        )
        size = info["data"]["size"]
        if data is None:
            if info["data"].get("in_memory"):
                raise GenlabError(f"{out} was trained on a dataset in memory; pass it again to resume")
            data = info["data"]["spec"]
    else:
        _check_new_out(out, overwrite)
        if init_transformers is not None:
            if model not in (None, "gpt"):
                raise GenlabError(f"--init reads a GPT-2 model, which the gpt family trains, not {model}")
            settings, hf_tokenizer = read_gpt2_directory(init_transformers)
            model, model_config = "gpt", {**settings, **(model_config or {})}
        if init_from is not None:
            source = init_from if isinstance(init_from, Run) else Run.load(init_from)
            model, data, size, model_config = _from_source(source, model, data, size, model_config)
        if model is None:
            raise GenlabError("name a model family to train, e.g. `genlab train vae`")
        if data is None:
            raise GenlabError("name the data to train on, e.g. --data mnist-5k")
        config = TrainConfig(
            epochs or 1, batch_size, 0 if seed is None else seed, device, precision, compile,
            validate_every=1 if validate_every is None else validate_every,
        )  # fmt: skip
    config.validate()

    family = info["model"]["name"] if resume else model
    if family is not None and is_text_family(family):
        tokenizer_from = out if resume else source.path if source is not None else None  # a run's saved tokenizer
        given = hf_tokenizer if init_transformers is not None else None
        train_data, test_data, data_info = _load_text(data, size, family, tokenizer_from, model_config, given)
    elif isinstance(data, str) and is_text_spec(data):
        raise GenlabError(f"{data} is text; the {family} family learns from images: train the gpt family on it")
    else:
        train_data, test_data, data_info = _load_data(data, size, test_data)
    monitoring = _monitor(eval_every, eval_n, train_data, test_data, config.seed)
    run_device = distributed.rank_device(pick_device(device))  # under torchrun: cuda -> cuda:LOCAL_RANK
    speed = {"precision": acceleration.resolve_precision(precision, run_device), "compile": bool(compile)}
    torch.manual_seed(config.seed)  # the initial weights depend on the seed only
    if resume:
        if data_info["fingerprint"] != info["data"]["fingerprint"]:
            raise GenlabError(
                f"the data {data_info['spec']} is not what {out} was trained on (its images or labels changed); "
                "a resumed run must see the same data"
            )
        network = model_from_info(info, out, training=True)
        _check_useful_epochs(network, out, config.epochs, stored["epochs"], len(train_data), stored["batch_size"])
    else:
        assert model is not None  # refused above, before anything was read
        network = build_model(model, train_data, model_config)
        if source is not None:
            _start_from(network, source)
        if init_transformers is not None:  # the GPT-2 directory's weights, under genlab's names
            assert isinstance(network, GPTModel)
            network.network.load_state_dict(gpt2_state_dict(init_transformers, network.network.state_dict()))
        run_batch_size = config.batch_size or network.default_batch_size
        config = dataclasses.replace(config, batch_size=run_batch_size)
        budget: dict[str, int] = {}
        if epochs is None:  # the family's budget of steps, in epochs of this data
            config = dataclasses.replace(config, epochs=network.default_epochs(len(train_data), run_batch_size))
            budget = {"default_steps": network.budget_steps(len(train_data))}
        if validate_every is None:  # the epochs are known now: the family's budget, or the user's
            config = dataclasses.replace(config, validate_every=default_validate_every(config.epochs))
        network.plan_steps(config.epochs * steps_per_epoch(len(train_data), run_batch_size))
        origin = {"init_from": source.name} if source is not None else {}
        if init_transformers is not None:
            origin = {"init_from": f"transformers:{init_transformers}"}
        info = new_run_info(
            network, data_info,
            {
                "epochs": config.epochs,
                "batch_size": config.batch_size,
                "seed": config.seed,
                "validate_every": config.validate_every,
                **budget,
                **origin,
            },
        )  # fmt: skip
    info["train"].update(speed)
    network.to(run_device)
    optimizers = network.configure_optimizers()
    if resume and (out / STATE_FILE).exists():  # checked whole before the run is locked or anything changes
        stopped = read_checkpoint(out, network, optimizers)
        if stopped.progress:
            _check_progress(stopped.progress, len(train_data), config.batch_size, out / STATE_FILE)
            if config.epochs <= stopped.epoch:
                raise GenlabError(
                    f"{out} stopped inside epoch {stopped.epoch + 1}; resume with --epochs {stopped.epoch + 1} or more"
                )

    assert config.batch_size is not None  # the run's, or the family's default
    with distributed.process_group_from_env(run_device):
        distributed.check_batch_size(config.batch_size)
        info["train"]["processes"] = distributed.world_size()  # this session's (a resume may use another number)
        distributed.barrier()  # every rank has checked its inputs before rank 0 changes anything at `out`
        if not distributed.is_main_process():  # the other ranks train alongside and write nothing
            run = _fit(
                out, info, network, optimizers, train_data, test_data, config, run_device, resume, list(callbacks)
            )
            return _final_quality(run) if final_eval else run
        if not resume:
            if out.exists() and overwrite:
                with run_lock(out):  # refuses to delete a run another process is training
                    check_replaceable(out)  # still a run, and still nothing else in it
                shutil.rmtree(out)
            out.mkdir(parents=True, exist_ok=True)
            if isinstance(train_data, TokenDataset):  # what the ids mean, beside the weights
                save_tokenizer(out, train_data.tokenizer)
        with run_lock(out):
            run = _fit(
                out,
                info,
                network,
                optimizers,
                train_data,
                test_data,
                config,
                run_device,
                resume,
                monitoring
                + _text_numbers(train_data, test_data)
                + [
                    RunWriter(out, info),
                    _sample_writer(
                        train_data, out, config.validate_every if sample_every is None else sample_every, config.seed
                    ),
                ]
                + ([ProgressBar(info["train"].get("default_steps"))] if progress else [])
                + list(callbacks),
            )
        return _final_quality(run) if final_eval else run


def _check_useful_epochs(
    network: GenerativeModel, out: Path, epochs: int, planned_epochs: int, images: int, batch_size: int
) -> None:
    """Refuse to resume a run for more epochs than it planned past the step where its learning rate reaches 0 (a
    GAN's linear schedule): they would cost their time and change nothing."""
    last = network.last_useful_step()
    if last is None or epochs <= planned_epochs:
        return
    per_epoch = steps_per_epoch(images, batch_size)
    if epochs * per_epoch <= last:
        return
    useful = max(planned_epochs, last // per_epoch)
    raise GenlabError(
        f"{out}'s learning rate falls to 0 at step {last:,} (its schedule's decay_steps), so epochs past {useful} "
        f"would not change its weights; resume with --epochs {useful} or fewer, or start a new run from its weights "
        f"(--from {out}), which plans its schedule afresh"
    )


def _from_source(
    source: Run, model: str | None, data: Any, size: Any, model_config: dict[str, Any] | None
) -> tuple[str, Any, Any, dict[str, Any]]:
    """(family, data, size, model settings) of a run started from `source`'s weights: the source's where not
    given."""
    if model is not None and model != source.family:
        raise GenlabError(
            f"{source.name} is a {source.family} model; a run started from its weights is one too (drop {model})"
        )
    if data is None:
        data, source_size = source.data_spec()
        size = size if size is not None else source_size
    planned = type(source.model).planned_settings  # planned again for this run's own steps
    settings = {key: value for key, value in source.info["model"]["config"].items() if key not in planned}
    return source.family, data, size, {**settings, **(model_config or {})}


def _start_from(network, source: Run) -> None:
    """Copy `source`'s weights into the freshly built `network`, with one clear error where they do not fit."""
    try:
        load_model_weights(network, source.model.state_dict(), source.path / MODEL_FILE)
    except GenlabError as error:
        raise GenlabError(
            f"the weights of {source.name} do not fit the model for this data and these settings ({error}); "
            "--from keeps the source's architecture: train on data of the same shape and classes"
        ) from None


def _final_quality(run: Run) -> Run:
    """Measure, save and print `run`'s quality (genlab.eval.final.show_final_quality); return the run."""
    from genlab.eval.final import show_final_quality

    show_final_quality(run)
    return run


def _fit(out, info, network, optimizers, train_data, test_data, config, device, resume, callbacks) -> Run:
    """Restore a resumed run's state, then train; the caller holds the run's lock (rank 0) or writes nothing."""
    start_epoch, epoch_progress = 0, None
    writes = distributed.is_main_process()
    if resume:
        if writes:
            for debris in out.glob(".*.tmp"):  # atomic writes cut off by a crash
                debris.unlink()
        if (out / STATE_FILE).exists():  # every rank loads the same checkpoint (checked again: read afresh)
            start_epoch, epoch_progress = load_checkpoint(out, network, optimizers)
        if writes:
            truncate_history(out, start_epoch)
        info.update(epochs_completed=start_epoch)
        if start_epoch >= config.epochs:  # nothing left to train: make sure the run is whole
            info.update(status="completed", message=f"already trained for {counted(start_epoch, 'epoch')}")
            if not writes:
                return Run(out, info, network.eval())
            if start_epoch:
                save_model(out, network, start_epoch)
            write_run_info(out, info)
            return Run.load(out, device=device)
        info["train"]["epochs"] = config.epochs
    trainer = Trainer(
        network,
        train_data,
        test_data,
        config,
        callbacks=callbacks,
        optimizers=optimizers,
        start_epoch=start_epoch,
        device=device,
        progress=EpochProgress.from_dict(epoch_progress) if epoch_progress else None,
    )
    trainer.fit()
    distributed.barrier()  # rank 0 has written the whole run
    if not writes:
        info.update(status="completed", epochs_completed=trainer.epoch)
        return Run(out, info, network.eval())
    return Run.load(out, device=device)


def _sample_writer(train_data, out: Path, every: int, seed: int) -> Callback:
    """What shows the model's progress in samples/ every epoch: a grid of images, or continuations of text."""
    if isinstance(train_data, TokenDataset):
        return TextSamples(out, train_data.tokenizer, every=every, seed=seed)
    return SampleGrids(out, every=every, seed=seed)


def _text_numbers(train_data, test_data) -> list[Callback]:
    """[TextNumbers] for a text run (bits per byte and tokens per second in each epoch's record), else []."""
    return [TextNumbers(train_data, test_data)] if isinstance(train_data, TokenDataset) else []


def _monitor(every: int, n: int, train_data, test_data, seed: int) -> list[Callback]:
    """[EvalEvery] when asked for (checked, reference features ready), else []."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise GenlabError(f"--eval-every must be a number of epochs (0: never), got {every!r}")
    if every and isinstance(train_data, TokenDataset):
        raise GenlabError(
            "--eval-every measures images (FID, precision, recall); a text run's trace already gives the test "
            "loss and bits per byte every epoch: drop --eval-every"
        )
    if not every or not distributed.is_main_process():  # under torchrun rank 0 alone measures and records
        return []
    from genlab.eval.monitor import TrainingMonitor

    return [EvalEvery(TrainingMonitor(train_data, test_data, n=n, seed=seed), every)]


def default_out(model: str | None) -> Path:
    """Where a run goes when no folder is named: runs/MODEL."""
    return Path("runs") / (model or "run")


def _check_new_out(out: Path, overwrite: bool) -> None:
    """A new run goes into a missing or empty folder, or replaces a run with `overwrite`; never anything else
    (a run by its format, holding nothing genlab does not write: genlab.run.check_replaceable)."""
    if not out.is_dir() or not any(out.iterdir()):
        return
    check_replaceable(out)
    if not overwrite:
        raise GenlabError(f"{out} already holds a run; pass --resume to continue it or --overwrite to replace it")


def _check_progress(progress: dict[str, Any], images: int, batch_size: int | None, source: Path) -> None:
    """Refuse a stop inside an epoch that this data cannot have made: past the epoch's last step, or steps
    taken with no images or no time (the epoch's averages would divide by zero)."""
    steps = steps_per_epoch(images, batch_size or 1)
    if progress["step"] > steps:
        raise GenlabError(
            f"{source} metadata field progress.step is {progress['step']}, past the {steps} steps of an epoch of "
            "this run: the training state is damaged; restore it from a copy, or train the run again with --overwrite"
        )
    if progress["step"] and (progress["images_seen"] < 1 or progress["seconds"] <= 0):
        raise GenlabError(
            f"{source} metadata fields progress.images_seen and progress.seconds must be positive after "
            f"{progress['step']} steps: the training state is damaged; restore it from a copy, "
            "or train the run again with --overwrite"
        )


def _resumable_info(out: Path, model, data, batch_size, seed, size, model_config) -> dict[str, Any]:
    """run.json of the run to resume, checked against what the caller asked for."""
    if not is_run_dir(out):
        raise GenlabError(f"there is no run to resume at {out} (no run.json); drop --resume to start one")
    info = read_run_info(out)
    read_history(out)  # checked now: resuming rewrites it
    if not (out / STATE_FILE).is_file() and (info["epochs_completed"] or (out / MODEL_FILE).exists()):
        raise GenlabError(
            f"{out / STATE_FILE} is missing: {out} cannot continue where it stopped without its training state "
            f"(optimizer and random-number state); --overwrite would train it again from epoch 0 and replace "
            f"the trained weights in {MODEL_FILE}"
        )
    stored = info["model"]
    conflicts = []
    if model is not None and model != stored["name"]:
        conflicts.append(f"model {model} (the run is a {stored['name']})")
    if isinstance(data, str) and data != info["data"]["spec"]:
        conflicts.append(f"data {data} (the run uses {info['data']['spec']})")
    if batch_size is not None and batch_size != info["train"]["batch_size"]:
        conflicts.append(f"batch size {batch_size} (the run uses {info['train']['batch_size']})")
    if seed is not None and seed != info["train"]["seed"]:
        conflicts.append(f"seed {seed} (the run uses {info['train']['seed']})")
    stored_size = info["data"]["size"]
    if size is not None and (list(size) if isinstance(size, tuple) else size) != stored_size:
        conflicts.append(f"size {size} (the run uses {stored_size})")
    if model_config:
        has = dataclasses.asdict(stored_config(stored["name"], stored["config"]))
        asked = dataclasses.asdict(stored_config(stored["name"], {**stored["config"], **model_config}))
        for key, value in asked.items():
            if value != has[key]:
                conflicts.append(f"{key}={value} (the run has {has[key]})")
    if conflicts:
        raise GenlabError(f"a resumed run keeps its settings; drop these or start a new run: {'; '.join(conflicts)}")
    return info


def _load_text(data, size, family: str, tokenizer_from: Path | None, model_config, given=None) -> tuple:
    """(train, test, run.json's data section) of a text run: a new one tokenizes as its settings say, a resumed
    one (or one started from another run's weights) with the tokenizer saved in that run (`tokenizer_from`), one
    started from a GPT-2 directory with its tokenizer (`given`)."""
    if not isinstance(data, str) or not is_text_spec(data):
        shown = data if isinstance(data, str) else type(data).__name__
        raise GenlabError(f"the {family} family learns from text: --data fortunes or text:PATH, not {shown}")
    if size is not None:
        raise GenlabError("--size resizes images; a text run has none: drop --size")
    if tokenizer_from is not None:
        config = stored_config(family, read_run_info(tokenizer_from)["model"]["config"])
        tokenizer: Any = load_tokenizer(tokenizer_from)
    else:
        config = make_config(family, model_config)
        tokenizer = given if given is not None else config.tokenizer
    train_data, test_data = load_token_splits(data, tokenizer, config.context)
    if len(train_data) < 1 or len(test_data) < 1:
        raise GenlabError(
            f"{data} is too short for windows of {config.context} tokens (train {len(train_data.tokens):,} tokens, "
            f"test {len(test_data.tokens):,}): give more text or a shorter context (--set context=N)"
        )
    data_info = {
        "spec": data,
        "in_memory": False,
        "size": None,
        "train_tokens": len(train_data.tokens),
        "test_tokens": len(test_data.tokens),
        "train_bytes": train_data.num_bytes,
        "test_bytes": test_data.num_bytes,
        "fingerprint": token_fingerprint(train_data, test_data),
    }
    return train_data, test_data, data_info


def _load_data(data, size, test_data) -> tuple[ImageDataset, ImageDataset | None, dict[str, Any]]:
    in_memory = isinstance(data, ImageDataset)
    if in_memory:
        train_data = data
    else:
        train_data, test_data = load_splits(data, size=size)
    info = {
        "spec": train_data.name if in_memory else data,
        "in_memory": in_memory,
        "size": list(size) if isinstance(size, tuple) else size,
        "train_images": len(train_data),
        "test_images": 0 if test_data is None else len(test_data),
        "fingerprint": fingerprint(train_data, test_data),
    }
    return train_data, test_data, info
