"""`genlab.train` from a user's script, launched by tests/training/test_distributed.py under torchrun.

    python -m torch.distributed.run --nproc_per_node 2 ... tests/training/two_rank_script.py FOLDER

Each rank trains the same runs into FOLDER (rank 0 writes them) and keeps its own weights and
buffers as FOLDER/FAMILY.rankR.safetensors, so the test can compare the ranks exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import genlab
from genlab.data.text import load_text_splits
from genlab.io import save_tensors
from genlab.training import Callback, distributed

TINY_VAE = {"hidden_dim": 32, "latent_dim": 4}
TINY = {
    "pixelcnn": {"channels": 8, "layers": 2, "head_channels": 16},  # no noise in training: the tight comparison
    "dcgan": {"latent_dim": 8, "channels": 8, "lr": 1e-3, "conditional": True, "ema": 0.9},  # BatchNorm, EMA
    "wgan-gp": {"latent_dim": 8, "channels": 8, "lr": 1e-3, "n_critic": 2},  # gradient penalty, critic steps
}
EPOCHS = {"pixelcnn": 2, "dcgan": 1, "wgan-gp": 1}
TINY_GPT = {"preset": "tiny", "context": 16}  # the text family: token windows split between the ranks
STOP_AT = (2, 5)  # (epoch, step) where rank 1 alone asks the VAE run to stop
SAMPLES, EVAL_N = "samples.npz", 63  # 63: the ranks hold pieces of 31 and 32


class StopOnRankOne(Callback):
    """Rank 1 alone asks to stop: both ranks must stop at the same step boundary."""

    def on_step_end(self, trainer, metrics):
        if distributed.rank() == 1 and (trainer.epoch, trainer.step) == STOP_AT:
            trainer.request_stop()


def keep_state(run: genlab.Run, path: Path) -> None:
    """This rank's parameters and buffers, as the run returned them."""
    save_tensors(path, {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}, {})


def main(folder: Path) -> None:
    rank = int(os.environ["RANK"])  # torchrun's: no process group is up between runs
    common = dict(batch_size=64, seed=1, progress=False)
    for family, settings in TINY.items():
        run = genlab.train(family, "digits", folder / family, epochs=EPOCHS[family], model_config=settings, **common)
        keep_state(run, folder / f"{family}.rank{rank}.safetensors")
    quotes = folder / f"quotes.rank{rank}.txt"  # the same text on both ranks, each writing its own copy
    quotes.write_text("\n%\n".join(d for d in load_text_splits("fortunes")[0].documents[:120]) + "\n")
    run = genlab.train("gpt", f"text:{quotes}", folder / "gpt", epochs=2, model_config=TINY_GPT, **common)
    keep_state(run, folder / f"gpt.rank{rank}.safetensors")
    try:
        genlab.train("vae", "digits", folder / "vae", epochs=3, model_config=TINY_VAE, callbacks=[StopOnRankOne()],
                     **common)
        raise SystemExit("the VAE run was asked to stop but did not")
    except KeyboardInterrupt:
        if rank == 0:  # what the interrupted run said of itself
            shutil.copy(folder / "vae" / "run.json", folder / "vae.interrupted.json")
    run = genlab.train(out=folder / "vae", resume=True, progress=False)
    keep_state(run, folder / f"vae.rank{rank}.safetensors")
    # Evaluation under torchrun: each rank draws (or reads) its piece of the samples and extracts
    # their features; every rank ends with all of them. SAMPLES was written by the test.
    # (28x28 images: the shipped extractors take no 8x8 digits.)
    genlab.train("vae", "mnist-5k", folder / "vae28", epochs=1, model_config=TINY_VAE, **common)
    for name, source in (("run", folder / "vae28"), ("npz", folder / SAMPLES)):
        result = genlab.evaluate(source, "mnist-5k", n=EVAL_N, seed=2, metrics="fid,precision,recall")
        (folder / f"eval_{name}.rank{rank}.json").write_text(json.dumps({"metrics": result.metrics,
                                                                         "counts": result.info["counts"]}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
