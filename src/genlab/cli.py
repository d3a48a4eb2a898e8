"""The `genlab` command: a thin argparse layer over the Python API, with no logic of its own.

Heavy modules (torch, the model families) are imported inside the handlers so that
`genlab --help` answers at once. Bad input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from genlab.names import DIFFUSION_SAMPLERS, EMA_FAMILIES, FAMILIES, SAMPLER_OPTIONS

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 1
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _image_size(text: str) -> int | tuple[int, int]:
    """'32' -> 32 (square), '32x28' -> (32, 28) as (height, width)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"expected a size like 32 or 32x28, got {text!r}")
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])


def _setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to {2**32 - 1}, got {text!r}")
    return value


def _labels(text: str) -> list[int]:
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a class index or a comma-separated list, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="genlab", description="Train, sample, evaluate and explain generative models of images.")
    parser.add_argument("--version", action="version", version=f"genlab {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    datasets = commands.add_parser("datasets", help="list the datasets, where they are, and how to get the rest")
    datasets.add_argument("--download", metavar="NAME", help="download NAME (mnist, fashion-mnist), checksums verified")
    datasets.add_argument("--mirror", metavar="URL", help="base URL to download from instead of the default mirror")
    datasets.add_argument(
        "--root",
        metavar="DIR",
        help="data root to download into, as $GENLAB_DATA (default: $GENLAB_DATA or ~/.local/share/genlab)",
    )
    datasets.set_defaults(handler=_datasets)

    explain = commands.add_parser(
        "explain", help="a family's pipeline stage by stage and its layers, measured on one real batch"
    )
    explain.add_argument(
        "target", metavar="MODEL_OR_RUN", help=f"model family ({', '.join(FAMILIES)}), a run directory, or zoo:NAME"
    )
    explain.add_argument(
        "--data",
        help="dataset for a family (default mnist-5k; fortunes for gpt): mnist-5k, mnist, fashion-mnist, digits, "
        "folder:PATH, npz:PATH, fortunes, text:PATH",
    )
    explain.add_argument(
        "--prompt",
        help='a text model: the prompt of the generation path and the next-token table (default "The '
        'secret of life is")',
    )
    explain.add_argument("--size", type=_image_size, help="resize images to S or HxW (a family)")
    explain.add_argument("--batch-size", type=_positive_int, default=8, help="images in the batch (default 8)")
    explain.add_argument(
        "--seed",
        type=_seed,
        default=0,
        help="seed of the batch, the noise and an untrained family's weights (default 0): "
        "the same seed prints the same",
    )
    explain.add_argument(
        "--format",
        choices=("text", "json", "markdown"),
        default="text",
        help="aligned text (default), JSON for machines, Markdown for docs",
    )
    explain.add_argument("--conditional", action="store_const", const=True, help="a family: condition on class labels")
    explain.add_argument(
        "--set",
        type=_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a family: any config field, e.g. --set arch=conv (repeatable)",
    )
    explain.set_defaults(handler=_explain)

    train = commands.add_parser("train", help="train a model family on a dataset into a run directory")
    train.add_argument("model", nargs="?", help=f"model family: {', '.join(FAMILIES)}; optional with --resume")
    train.add_argument("--data", help="dataset: mnist-5k, mnist, fashion-mnist, digits, folder:PATH, npz:PATH")
    train.add_argument(
        "--epochs",
        type=_positive_int,
        help="total epochs (default: the family's budget of steps for this data, printed at the start; "
        "with --resume: the run's)",
    )
    train.add_argument("--batch-size", type=_positive_int, help="images per step (default: the family's)")
    train.add_argument("--seed", type=_seed, help="seed for weights, order and noise (default 0)")
    train.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:N, mps")
    train.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="auto: bf16 autocast on a CUDA GPU that has it, fp32 elsewhere (default auto)",
    )
    train.add_argument("--compile", action="store_true", help="torch.compile the networks (pays off on a GPU)")
    train.add_argument("--size", type=_image_size, help="resize images to S or HxW (folder data of mixed sizes)")
    train.add_argument("--out", help="run directory (default runs/MODEL)")
    train.add_argument(
        "--from",
        dest="init_from",
        metavar="RUN",
        help="start from this run's (or zoo:NAME's) weights, family and settings; a fresh optimizer, epochs from 0",
    )
    train.add_argument(
        "--init",
        dest="init_transformers",
        metavar="DIR",
        help="gpt: start from a transformers GPT-2 directory (its sizes, tokenizer and weights) and fine-tune it",
    )
    given = train.add_mutually_exclusive_group()
    given.add_argument("--resume", action="store_true", help="continue the run at --out where it stopped")
    given.add_argument("--overwrite", action="store_true", help="replace the run at --out")
    model_settings = train.add_argument_group("model settings (any field of the family's config)")
    model_settings.add_argument("--conditional", action="store_const", const=True, help="condition on class labels")
    model_settings.add_argument("--arch", help="architecture variant (vae: mlp, conv)")
    model_settings.add_argument("--latent-dim", type=_positive_int, help="size of the latent space")
    model_settings.add_argument("--lr", type=float, help="learning rate")
    model_settings.add_argument(
        "--ema",
        type=float,
        metavar="DECAY",
        help=f"{', '.join(EMA_FAMILIES)}: sample from a moving average of the generating "
        "network's weights, e.g. --ema 0.999",
    )
    model_settings.add_argument(
        "--set",
        type=_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other config field, e.g. --set hidden_dim=512 (repeatable)",
    )
    train.add_argument(
        "--sample-every",
        type=int,
        metavar="N",
        help="sample grid every N epochs (0: none; default: as often as the run validates)",
    )
    train.add_argument(
        "--validate-every",
        type=_positive_int,
        metavar="N",
        help="measure the test set every N epochs and after the last (default: every epoch; in runs of more "
        "than 50 epochs, about 50 times; a resumed run keeps its own)",
    )
    train.add_argument(
        "--eval-every",
        type=int,
        default=0,
        metavar="N",
        help="FID, precision and recall of 1,000 samples every N epochs, into history.jsonl (0: never)",
    )
    train.add_argument(
        "--no-final-eval",
        action="store_true",
        help="skip the Quality section after training: FID, precision and recall of 1,000 samples (fewer, "
        "at least 300, when sampling 1,000 would take over 30 s) against the test split, beside the "
        "real-vs-real floor, saved as RUN/metrics.json; a metrics.json that `genlab eval` wrote for the same "
        "epoch is kept, one of an earlier epoch (before --resume) is replaced",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    train.set_defaults(handler=_train)

    sample = commands.add_parser("sample", help="draw images from a trained run")
    sample.add_argument("run", help="run directory written by `genlab train`, or zoo:NAME")
    sample.add_argument(
        "--n",
        type=_positive_int,
        help="images (default 64, or one per --labels entry), or strips with --interpolate (default 1)",
    )
    sample.add_argument("--seed", type=_seed, default=0, help="noise seed: the same seed gives the same file")
    sample.add_argument("--out", help="output file (default RUN/samples/seed_SEED.png or .npz)")
    sample.add_argument("--labels", type=_labels, help="class(es) to draw on a conditional model: 3 or 0,1,2")
    sample.add_argument("--interpolate", action="store_true", help="decode a straight line between two latents")
    _add_sampler_options(sample, steps_help="with --interpolate: images per strip (default 10); ")
    sample.add_argument(
        "--trajectory",
        type=_positive_int,
        metavar="K",
        help="diffusion: save the denoising of each image from x_T to x_0, every K steps, one row each",
    )
    sample.add_argument(
        "--complete",
        metavar="IMAGE",
        help="pixelcnn: keep the top --rows rows of this image file (resized to the model's size) "
        "and draw the rest, --n times (default 8); the grid shows the image, what was kept, "
        "then the completions",
    )
    sample.add_argument(
        "--rows", type=int, help="with --complete: rows of the image to keep (default: half its height)"
    )
    sample.add_argument("--format", choices=("png", "npz"), help="png grid or npz of raw images and labels")
    sample.add_argument(
        "--nrow",
        type=_positive_int,
        help="images per grid row (default 8; a conditional model drawing every class: one column per class)",
    )
    sample.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    text = sample.add_argument_group("text runs (genlab train gpt)")
    text.add_argument("--prompt", help="the text to continue (default: the start of a new document)")
    text.add_argument("--max-new-tokens", type=_positive_int, default=200, help="tokens to write (default 200)")
    text.add_argument(
        "--temperature", type=float, default=1.0, help="0: always the likeliest token; higher: bolder (default 1)"
    )
    text.add_argument("--top-k", type=_positive_int, help="draw only from the k likeliest tokens")
    text.add_argument("--top-p", type=float, help="draw only from the likeliest tokens that make up this probability")
    sample.set_defaults(handler=_sample)

    evaluate = commands.add_parser(
        "eval", help="FID/KID, precision/recall, memorization ... of a run or any images, beside the real-vs-real floor"
    )
    evaluate.add_argument("run", nargs="?", help="run directory written by `genlab train`, or zoo:NAME")
    evaluate.add_argument("--samples", metavar="FILE.npz", help="evaluate these images instead of a run (needs --data)")
    evaluate.add_argument(
        "--real-vs-real", action="store_true", help="only the floor: held-out real images against the reference"
    )
    evaluate.add_argument("--data", help="real data to compare with (default: the run's)")
    evaluate.add_argument(
        "--reference",
        choices=("test", "train"),
        default="test",
        help="real split the samples are compared with (default test)",
    )
    evaluate.add_argument(
        "--n", type=_positive_int, help="samples (default: as many as the reference has, up to 10,000)"
    )
    evaluate.add_argument("--seed", type=_seed, default=0, help="seed for sampling and every random subset (default 0)")
    evaluate.add_argument(
        "--metrics",
        metavar="NAMES",
        help="comma-separated subset of: fid, kid, precision, recall, density, coverage, "
        "classifier_score, mode_coverage, label_accuracy, memorization, cas, nll, augmentation (default all but "
        "augmentation, which is asked for by name: what the samples add to a small real training set, minutes "
        "of classifier training)",
    )
    evaluate.add_argument(
        "--real-sizes",
        metavar="PERCENTS",
        help="augmentation: the real-set sizes, in percent of the training split (default 1,5,10,25)",
    )
    evaluate.add_argument(
        "--inception", metavar="PATH", help="pytorch-fid's Inception-v3 weight file: use it as the feature extractor"
    )
    evaluate.add_argument(
        "--out",
        metavar="DIR",
        help="folder for metrics.json and memorization.png (default: the run; FILE_eval for --samples)",
    )
    evaluate.add_argument("--no-cache", action="store_true", help="recompute the real features and the floor")
    _add_sampler_options(evaluate)
    evaluate.set_defaults(handler=_eval)

    likelihood = commands.add_parser(
        "likelihood",
        help="one NLL table (nats per image, bits/dim) for runs of any likelihood family, same test images",
    )
    likelihood.add_argument(
        "runs", nargs="+", metavar="RUN", help="run directories (or zoo:NAME) trained on the same data"
    )
    likelihood.add_argument(
        "--images",
        type=_positive_int,
        help="test images to score (default: all, or the fewest a family asks for, e.g. DDPM's 1,000)",
    )
    likelihood.add_argument(
        "--seed", type=_seed, default=0, help="seed of the test subset and of any sampling in a bound"
    )
    likelihood.add_argument("--out", metavar="FILE.json", help="also write the table as JSON")
    likelihood.set_defaults(handler=_likelihood)

    report = commands.add_parser("report", help="write RUN/report.html: the whole run on one self-contained page")
    report.add_argument("run", help="run directory written by `genlab train`, or zoo:NAME")
    report.add_argument("--out", metavar="FILE.html", help="where to write the page (default RUN/report.html)")
    report.add_argument(
        "--seed",
        type=_seed,
        default=0,
        help="seed of the images drawn for the page: reconstructions, interpolation, trajectory",
    )
    report.set_defaults(handler=_report)

    compare = commands.add_parser("compare", help="two or more runs side by side: one table, and compare.html")
    compare.add_argument(
        "runs", nargs="+", metavar="RUN", help="run directories written by `genlab train`, or zoo:NAME"
    )
    compare.add_argument(
        "--out",
        metavar="FILE.html",
        default="compare.html",
        help="where to write the page (default compare.html in the current folder)",
    )
    compare.set_defaults(handler=_compare)

    zoo = commands.add_parser(
        "zoo", help="the pretrained models shipped with genlab: zoo:NAME works wherever a run does"
    )
    zoo.add_argument("name", nargs="?", help="a zoo model: print its model card (data, recipe, numbers, weaknesses)")
    zoo.set_defaults(handler=_zoo)

    export = commands.add_parser(
        "export", help="write a run's generation network as ONNX, with a JSON file that says how to sample from it"
    )
    export.add_argument("run", help="run directory written by `genlab train`, or zoo:NAME")
    export.add_argument(
        "--format",
        choices=("onnx", "transformers"),
        default="onnx",
        help="onnx: model.onnx with a dynamic batch axis (default); transformers: a text run as a GPT-2 "
        "directory for transformers.pipeline('text-generation', model=DIR)",
    )
    export.add_argument(
        "--out", required=True, metavar="DIR", help="new folder for the export and genlab_export.json (outside the run)"
    )
    export.add_argument(
        "--overwrite", action="store_true", help="replace a previous genlab export at --out (never anything else)"
    )
    export.set_defaults(handler=_export)

    augment = commands.add_parser(
        "augment", help="labelled samples of a conditional run, balanced per class, as an .npz to train on"
    )
    augment.add_argument("run", help="a conditional run directory written by `genlab train`, or zoo:NAME")
    augment.add_argument("--per-class", type=_positive_int, required=True, help="samples of each class")
    augment.add_argument("--out", required=True, metavar="FILE.npz", help="the new .npz (npz:FILE.npz loads it)")
    augment.add_argument("--seed", type=_seed, default=0, help="seed of the draws (default 0)")
    _add_sampler_options(augment)
    augment.set_defaults(handler=_augment)

    serve = commands.add_parser(
        "serve", help="the live explorer in the browser: sample, move through a latent space, watch a model work"
    )
    serve.add_argument("runs", nargs="+", metavar="RUN", help="run directories written by `genlab train`, or zoo:NAME")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 opens it to the network)",
    )
    serve.add_argument("--port", type=_port, default=8765, help="port to listen on (default 8765; 0 picks a free one)")
    serve.add_argument(
        "--workers",
        choices=("threads", "auto", "processes"),
        default="auto",
        help="where each run's model work happens: auto (default) gives a process of its own, at a lower priority on "
        "half the cores, to each run whose views run long (diffusion chains, PixelCNN completions, text), so that "
        "its chain holds up no slider and a crash or its memory cannot take the server down, and a thread to the "
        "others; threads keeps every run on a thread of the server's process (one copy of each model, less "
        "memory); processes gives every run a process",
    )
    serve.set_defaults(handler=_serve)
    return parser


def _port(text: str) -> int:
    """--port: 0 (any free port) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, got {value}")
    return value


def _add_sampler_options(parser: argparse.ArgumentParser, steps_help: str = "") -> None:
    """--steps, --sampler, --eta, --guidance: how a diffusion run draws its images (--guidance: a PixelCNN's too);
    --truncation: a GAN's."""
    parser.add_argument(
        "--steps",
        type=_positive_int,
        help=f"{steps_help}diffusion: denoising steps (default the model's; 20 for new runs)",
    )
    parser.add_argument(
        "--sampler",
        choices=DIFFUSION_SAMPLERS,
        help="diffusion: ddpm (ancestral steps), ddim (deterministic with --eta 0), dpm++ (DPM-Solver++, "
        "deterministic) or dpm++sde (its SDE variant; the default of new runs, 20 steps)",
    )
    parser.add_argument(
        "--eta", type=float, help="diffusion, ddim and dpm++: fresh noise per step, 0 (deterministic) to 1"
    )
    parser.add_argument(
        "--guidance",
        type=float,
        help="conditional diffusion and PixelCNN: classifier-free guidance scale (0 unconditional, 1 conditional, "
        "above 1 the label shows more)",
    )
    parser.add_argument(
        "--truncation",
        type=float,
        help="GANs: z ~ N(0, truncation² I) (the truncation trick; default the run's, 1 for new runs: off; "
        "below 1 more typical and less varied images)",
    )


def _sampler_options(args: argparse.Namespace) -> dict:
    """The sampler flags given on the command line (diffusion runs), by `sample`'s keyword names."""
    given = vars(args)
    return {key: given[key] for key in SAMPLER_OPTIONS if given.get(key) is not None}


def _version() -> str:
    from genlab import __version__

    return __version__


def _datasets(args: argparse.Namespace) -> int:
    from genlab.data import dataset_catalog, download_dataset
    from genlab.data.text import text_catalog

    if args.download:
        path = download_dataset(args.download, root=args.root, mirror=args.mirror)
        print(f"{args.download} is ready in {path}")
        return 0
    catalog = dataset_catalog()
    header = ["Name", "Train", "Test", "Shape", "Classes", "Here", "Description"]
    rows = [
        [
            info.name,
            f"{info.train_size:,}" if info.train_size else "-",
            f"{info.test_size:,}" if info.test_size else "-",
            "x".join(map(str, info.image_shape)) if info.image_shape else "any",
            str(info.num_classes) if info.num_classes else "-",
            "-" if info.image_shape is None else "yes" if info.available else "no",  # PATH forms: the user's files
            info.description,
        ]
        for info in catalog
    ]
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(widths[c]) for c, cell in enumerate(row)).rstrip())
    text_header = ["Text", "Train docs", "Test docs", "Here", "Description"]
    text_rows = [list(row) for row in text_catalog()]
    widths = [max(len(r[c]) for r in [text_header, *text_rows]) for c in range(len(text_header))]
    print()
    for row in [text_header, *text_rows]:
        print("  ".join(cell.ljust(widths[c]) for c, cell in enumerate(row)).rstrip())
    missing = [info for info in catalog if not info.available and info.how_to_get]
    if missing:
        print("\nTo get the rest:")
        for info in missing:
            print(f"  {info.name}: {info.how_to_get}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    import json

    from genlab.explain.pipeline import explain_model

    model_config = dict(args.set)
    if args.conditional:
        model_config["conditional"] = True
    explanation = explain_model(
        args.target,
        args.data,
        batch_size=args.batch_size,
        seed=args.seed,
        size=args.size,
        model_config=model_config,
        prompt=args.prompt,
    )
    if args.format == "json":
        print(json.dumps(explanation.to_dict(), indent=2))
    else:
        print(explanation.to_markdown() if args.format == "markdown" else explanation.to_text())
    return 0


def _train(args: argparse.Namespace) -> int:
    from genlab.explain.trace import training_trace
    from genlab.models import is_text_family
    from genlab.outputs import naming
    from genlab.training import distributed
    from genlab.training.api import default_out, train

    model_config = dict(args.set)
    for key in ("conditional", "arch", "latent_dim", "lr", "ema"):
        if getattr(args, key) is not None:
            model_config[key] = getattr(args, key)
    out = Path(args.out) if args.out else default_out(args.model)
    if args.init_from:
        print(
            f"starting from the weights of {args.init_from}; the optimizer starts afresh "
            "(its state is not carried over) and this run counts its epochs from 0"
        )
    try:
        with naming(out):  # a full disk while checkpointing names the run
            run = train(
                args.model,
                args.data,
                out,
                epochs=args.epochs,
                batch_size=args.batch_size,
                seed=args.seed,
                device=args.device,
                precision=args.precision,
                compile=args.compile,
                size=args.size,
                resume=args.resume,
                overwrite=args.overwrite,
                progress=not args.quiet,
                sample_every=args.sample_every,
                validate_every=args.validate_every,
                eval_every=args.eval_every,
                model_config=model_config,
                init_from=args.init_from,
                init_transformers=args.init_transformers,
            )
    except KeyboardInterrupt:
        if distributed.is_main_process():  # rank 0 says where the run stopped
            print(f"genlab train: {_interrupted(out)}", file=sys.stderr)
            if not args.no_final_eval:
                print("genlab train: quality not measured: the run was interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if distributed.is_main_process():  # under torchrun, rank 0 reports for every rank
        print()
        print(training_trace(run.history, type(run.model)))
    if not args.no_final_eval:
        from genlab.eval.final import show_final_quality

        show_final_quality(run, separator="\n")  # under torchrun every rank draws its share
    if distributed.is_main_process():
        draw = (
            f'genlab sample {out} --prompt "The secret of life is" --n 3 --temperature 0.8 --top-k 40 --seed 1'
            if is_text_family(run.family)
            else f"genlab sample {out} --n 64 --seed 1 --out grid.png"
        )
        print(f"\nrun saved in {out}; draw from it with: {draw}")
    return 0


def _interrupted(out: Path) -> str:
    """What an interrupted `genlab train` left at `out`, and how to go on."""
    from genlab.run import STATE_FILE, is_run_dir, read_run_info

    info = read_run_info(out) if is_run_dir(out) else {}
    resume = f"continue with: genlab train --resume --out {out}"
    if info.get("status") == "interrupted":
        return f"{info['message']}; {resume}"
    if (out / STATE_FILE).is_file():  # e.g. a second Ctrl-C came before run.json recorded the stop
        return (
            f"interrupted; {out} keeps its last checkpoint, after epoch {info.get('epochs_completed', 0)} "
            f"(its last completed epoch); {resume}"
        )
    if info:
        return f"interrupted before the first epoch ended; no epoch was saved: start {out} again with --overwrite"
    return "interrupted before the run was written; nothing was saved"


def _sample(args: argparse.Namespace) -> int:
    import torch

    from genlab.errors import GenlabError
    from genlab.images import save_grid, save_npz
    from genlab.models.base import GeneratesText
    from genlab.outputs import NPZ_ARRAYS, PNG_GRID, check_output, naming
    from genlab.run import SAMPLES_DIR, Run
    from genlab.training.trainer import pick_device

    modes = [
        flag
        for flag, given in (
            ("--interpolate", args.interpolate),
            ("--trajectory", args.trajectory),
            ("--complete", args.complete),
        )
        if given
    ]
    if len(modes) > 1:
        raise GenlabError(f"{' and '.join(modes)} are different kinds of output: give one of them")
    if args.rows is not None and not args.complete:
        raise GenlabError("--rows is the part of the --complete image to keep: give --complete IMAGE too")
    suffix = Path(args.out).suffix.lower() if args.out else ""
    fmt = args.format or ("npz" if suffix == ".npz" else "png")
    kind = NPZ_ARRAYS if fmt == "npz" else PNG_GRID
    inputs = [args.complete] if args.complete else []
    textual = args.prompt is not None or suffix in (".txt", ".jsonl")  # a text run's output, checked once loaded
    if args.out and not textual:  # before loading anything
        check_output(args.out, kind, run=args.run, inputs=inputs)
    run = Run.load(args.run, device=pick_device(args.device))
    if isinstance(run.model, GeneratesText) or args.prompt is not None:
        return _write_text(run, args, modes)
    default = run.output_path(f"{SAMPLES_DIR}/seed_{args.seed}.{fmt}", f"_seed_{args.seed}.{fmt}")
    out = check_output(args.out or default, kind, run=run.path, inputs=inputs)
    generator = torch.Generator().manual_seed(args.seed)
    options = _sampler_options(args)
    if args.interpolate:
        options.pop("steps", None)  # images per strip there
        steps = args.steps or 10
        images, labels = run.interpolate(args.n or 1, steps, generator, args.labels)
        nrow = steps
    elif args.complete:
        images, labels, nrow = _completions(run, args, generator)
    elif args.trajectory:
        images, labels, nrow = run.sample_chain(args.n or 8, args.trajectory, generator, args.labels, **options)
    else:
        n = args.n or (len(args.labels) if args.labels and len(args.labels) > 1 else 64)
        images = run.sample(n, generator=generator, labels=args.labels, **options)  # checks n before allocating
        labels = run.model.check_labels(n, args.labels)
        cycling = run.model.conditional and args.labels is None  # labels 0, 1, ..., K-1, 0, ...
        nrow = args.nrow or (run.model.data.num_classes if cycling else 8)
    with naming(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "npz":
            save_npz(images, out, labels, run.model.data.class_names)
        else:
            save_grid(images, out, nrow=nrow)
    print(f"wrote {len(images)} images to {out}")
    return 0


def _write_text(run, args: argparse.Namespace, modes: list[str]) -> int:
    """`genlab sample` on a text run: --n continuations of --prompt, printed, or written as .txt or .jsonl."""
    import json

    import torch

    from genlab.errors import GenlabError
    from genlab.io import atomic_write_bytes
    from genlab.outputs import check_output, naming, text_kind

    image_flags = modes + [flag for flag, given in (("--labels", args.labels), ("--format", args.format)) if given]
    if image_flags and isinstance(args.prompt, str):
        raise GenlabError(
            f"{' and '.join(image_flags)} belong to image runs; a text run takes --prompt and its options"
        )
    if image_flags:
        raise GenlabError(f"{run.name} writes text: {' and '.join(image_flags)} belong to image runs; give --prompt")
    context = run.text_model().context
    out = check_output(args.out, text_kind(args.out), run=run.path) if args.out else None
    prompt = args.prompt or ""
    prompt_tokens = len(run.tokenizer.encode(prompt))
    if prompt_tokens > context - 1:
        print(
            f"note: the prompt is {prompt_tokens:,} tokens; the model reads its last {context - 1:,} (its context)",
            file=sys.stderr,
        )
    streaming = out is None and (args.n or 1) == 1  # one text to the terminal: show it as it is written
    if streaming:
        print(f"--- 1 (seed {args.seed})\n{prompt}", end="", flush=True)

    def show(piece: str) -> None:
        print(piece, end="", flush=True)

    texts = run.generate(
        prompt, args.n or 1, args.max_new_tokens, args.temperature, args.top_k, args.top_p,
        torch.Generator().manual_seed(args.seed), stream=show if streaming else None,
    )  # fmt: skip
    if streaming:
        print()
        return 0
    if out is None:
        for i, text in enumerate(texts):
            print(f"--- {i + 1} (seed {args.seed})\n{prompt}{text}")
        return 0
    if out.suffix.lower() == ".jsonl":
        lines = [
            json.dumps({"prompt": prompt, "text": text, "seed": args.seed, "index": i}) for i, text in enumerate(texts)
        ]
        body = "\n".join(lines) + "\n"
    else:
        body = "".join(f"--- {i + 1} (seed {args.seed})\n{prompt}{text}\n" for i, text in enumerate(texts))
    with naming(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, body.encode("utf-8"))
    print(f"wrote {len(texts)} texts to {out}")
    return 0


def _completions(run, args: argparse.Namespace, generator):
    """(images, labels, images per row) for `genlab sample --complete`: the image, what is kept, completions."""
    import torch

    from genlab.data.folder import read_image

    data = run.model.data
    rows = data.height // 2 if args.rows is None else args.rows
    image = read_image(args.complete, data.channels, (data.height, data.width)).float() / 255  # (C, H, W)
    n = args.n or 8
    completions = run.complete(image, rows, n, generator, args.labels)
    kept = image.clone()
    kept[:, rows:] = 0.5  # grey where the model draws
    labels = run.model.check_labels(n, args.labels)
    if labels is not None:
        labels = torch.cat([labels[:1], labels[:1], labels.cpu()])  # the two reference images take the first label
    return torch.cat([image[None], kept[None], completions]), labels, n + 2


def _eval(args: argparse.Namespace) -> int:
    from genlab import zoo
    from genlab.errors import GenlabError
    from genlab.eval.evaluate import evaluate, parse_metrics, write_results
    from genlab.outputs import EVAL_FOLDER, check_output
    from genlab.training import distributed

    given = [
        name
        for name, value in (("RUN", args.run), ("--samples", args.samples), ("--real-vs-real", args.real_vs_real))
        if value
    ]
    if len(given) != 1:
        raise GenlabError(
            "give one of: a run directory, --samples FILE.npz (with --data), or --real-vs-real (with --data)"
            + (f"; got {' and '.join(given)}" if given else "")
        )
    if (args.samples or args.real_vs_real) and not args.data:
        raise GenlabError(f"{given[0]} needs --data: the real images to compare with, e.g. --data fashion-mnist")
    selected = parse_metrics(args.metrics)  # a typo fails before any work
    if args.real_sizes is not None:
        from genlab.eval.augmentation import parse_shares

        parse_shares(args.real_sizes)
        if "augmentation" not in selected:
            raise GenlabError("--real-sizes sets the augmentation measure's sizes: add --metrics augmentation")
    source = args.run or args.samples
    options = _sampler_options(args)
    if options and not args.run:
        from genlab.models.base import flag_list

        raise GenlabError(f"{flag_list(list(SAMPLER_OPTIONS))} choose how a run draws its images: give a run")
    out = args.out or (
        (zoo.local_output(args.run, "_eval") if zoo.is_zoo_spec(args.run) else args.run)
        if args.run
        else Path(args.samples).with_suffix("").as_posix() + "_eval"
        if args.samples
        else None
    )
    if out is not None:  # before measuring anything
        check_output(out, EVAL_FOLDER, run=args.run)
    result = evaluate(
        source,
        args.data,
        reference=args.reference,
        n=args.n,
        seed=args.seed,
        metrics=args.metrics,
        inception=args.inception,
        use_cache=not args.no_cache,
        sample_options=options,
        real_sizes=args.real_sizes,
    )
    if not distributed.is_main_process():  # under torchrun every rank holds the result; rank 0 reports it
        return 0
    print(_eval_header(result.info))
    print(result.table())
    if out is not None:
        written = write_results(result, out)
        extra = (
            " and memorization.png (the 16 samples closest to a training image, over them)"
            if "memorization" in written
            else ""
        )
        print(f"\nwrote {written['metrics']}{extra}")
    return 0


def _likelihood(args: argparse.Namespace) -> int:
    from genlab.eval.likelihood import likelihoods
    from genlab.io import atomic_write_json
    from genlab.outputs import LIKELIHOOD_TABLE, check_output, naming

    out = check_output(args.out, LIKELIHOOD_TABLE) if args.out else None  # before measuring anything
    table = likelihoods(args.runs, images=args.images, seed=args.seed)
    print(table.heading() + "\n")
    print(table.table())
    if out is not None:
        with naming(out):
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(out, table.to_dict())
        print(f"\nwrote {out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from genlab.explain.report import report

    path = report(args.run, out=args.out, seed=args.seed)
    print(f"wrote {path} ({path.stat().st_size / 1e3:,.0f} kB, self-contained: open it in any browser)")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from genlab.explain.compare import compare

    comparison = compare(args.runs, out=args.out)
    print(comparison.table())
    print(f"\nwrote {comparison.out}")
    return 0


def _zoo(args: argparse.Namespace) -> int:
    from genlab import zoo

    if args.name:
        entry = zoo.entry(args.name)
        print((zoo.resolve(entry.spec) / zoo.CARD_FILE).read_text().rstrip())
        return 0
    rows = zoo.zoo_rows()
    if not rows:
        print("this installation ships no zoo models")
        return 0
    print(zoo.zoo_table(rows))
    print(
        "\nuse one wherever a run goes, e.g.: genlab sample zoo:NAME --n 16 --out grid.png; its card: genlab zoo NAME"
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    from genlab.export import EXPORT_FILE, FORMATS, ONNX_FILE

    out = FORMATS[args.format](args.run, args.out, overwrite=args.overwrite)
    if args.format == "onnx":
        print(f"wrote {out / ONNX_FILE} and {out / EXPORT_FILE} (what to feed the graph and how to read its output)")
    else:
        print(f"wrote {out}: transformers.pipeline('text-generation', model='{out}') runs it, offline")
    return 0


def _augment(args: argparse.Namespace) -> int:
    from genlab.eval.augmentation import write_augmented

    path, seconds = write_augmented(args.run, args.per_class, args.out, seed=args.seed, **_sampler_options(args))
    print(
        f"wrote {path}: {args.per_class:,} samples of each class, drawn in {seconds:.1f} s; --data npz:{path} reads it"
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    import ipaddress
    import socket
    import time

    from genlab.errors import GenlabError

    try:
        from genlab.serve.app import ServerThread, create_app
    except ImportError as missing:
        raise GenlabError(
            f"genlab serve needs the serve extra ({missing.name} is not installed): pip install 'genlab[serve]'"
        ) from None
    try:  # the port first, so that a busy one is one line before any model is loaded
        with socket.create_server((args.host, args.port)):
            pass
    except OSError as error:
        raise GenlabError(
            f"cannot listen on {args.host}:{args.port} ({error.strerror or error}): choose another --port, or --port 0"
        ) from None
    app = create_app(args.runs, processes={"auto": None, "threads": False, "processes": True}[args.workers])
    # The worker threads and the event loop share one interpreter lock: a thread that holds it (a chain's Python
    # between its network calls, with --workers threads) keeps it up to the switch interval. At 1 ms instead of 5
    # a slider's request waits less behind it (benchmarks/serve_latency.py).
    sys.setswitchinterval(0.001)
    server = ServerThread(app, args.host, args.port).start()
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    print(f"genlab serve: {len(args.runs)} run(s) at {server.url} (Ctrl-C stops it)", flush=True)
    if not loopback:
        print(f"genlab serve: listening on {args.host}: anyone who can reach this machine can use the explorer")
    try:
        while server.thread.is_alive():
            time.sleep(0.2)
    except KeyboardInterrupt:
        server.stop()
        print("genlab serve: stopped")
        return 0
    return 0


def _eval_header(info: dict) -> str:
    source, data, counts = info["source"], info["data"], info["counts"]
    if info["source"].get("kind") == "run" and "prompt_bytes" in info["counts"]:  # a text run
        counts, source = info["counts"], info["source"]
        return (
            f"{source['family']} run {source['path']} ({source['epochs']} epochs): {counts['samples']} continuations "
            f"of {counts['prompt_bytes']} bytes of held-out text, {counts['continuation_bytes']} bytes each, against "
            f"the real continuations; bits per byte over the {counts['test_bytes']:,}-byte test text; seed "
            f"{info['seed']}, {info['seconds']:.1f} s\n"
        )
    if info["extractor"] is None:  # --metrics nll alone
        return (
            f"{source['family']} run {source['path']} ({source['epochs']} epochs): likelihood of "
            f"{data['spec']} test images, seed {info['seed']}, {info['seconds']:.1f} s\n"
        )
    if source["kind"] == "run":
        what = f"{source['family']} run {source['path']} ({source['epochs']} epochs), {counts['samples']:,} samples"
    elif source["kind"] == "samples":
        what = f"{counts['samples']:,} images from {source['path']}"
    else:
        what = f"{counts['held_out']:,} held-out real images"
    extractor = info["extractor"]
    return (
        f"{what} vs {data['spec']} {data['reference']} ({counts['reference']:,} images); "
        f"floor: {counts['held_out']:,} held-out real images; extractor {extractor['name']} "
        f"({extractor['sha256'][:12]}), seed {info['seed']}, {info['seconds']:.1f} s\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `genlab` command; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # --help, --version, or a usage error already printed
        return int(exit.code or 0)
    from genlab.errors import GenlabError, TrainingDiverged

    try:
        return args.handler(args)
    except GenlabError as error:
        print(f"genlab {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainingDiverged as error:
        print(f"genlab {args.command}: training diverged: {error}", file=sys.stderr)
        return EXIT_DIVERGED
    except KeyboardInterrupt:
        print(f"genlab {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `genlab ... | head` closed the pipe: stop quietly, as other commands do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout
        return 0
    except OSError as error:  # unwritable --out, full disk ...: say which file, why, and what to do
        from genlab.outputs import describe_os_error

        print(f"genlab {args.command}: error: {describe_os_error(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
