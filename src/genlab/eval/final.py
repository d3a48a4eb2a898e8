"""The Quality section at the end of `genlab train`: FID, precision and recall beside their floor.

    quality = final_quality(run)      # measured with `genlab eval`'s own evaluator, saved as metrics.json
    print(quality.text())

The numbers are exactly those of `genlab eval RUN --metrics fid,precision,recall --n N`
(genlab.eval.evaluate), on as many samples as fit a time budget: 1,000, or fewer (never under
300) for a family whose sampling is slow, timed on a small seeded batch of the trained model.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from genlab.errors import GenlabError
from genlab.eval.evaluate import Evaluation, evaluate, write_results
from genlab.eval.features import extractor_for
from genlab.eval.text import text_quality
from genlab.io import read_json
from genlab.models.base import GeneratesText
from genlab.models.common import eval_mode
from genlab.run import METRICS_FILE, Run
from genlab.schema import METRICS_SOURCE, validate
from genlab.training import distributed

METRICS = "fid,precision,recall"
MAX_SAMPLES = 1000
MIN_SAMPLES = 300  # fewer and precision/recall (k = 3) and FID's covariance are too noisy to read
BUDGET_SECONDS = 30.0  # the sampling a user waits for after training
TIMING_BATCH = 20  # images drawn to time the sampler (a small batch: its per-image cost errs high, never low)
SEED = 0  # `genlab eval`'s default seed, so `genlab eval RUN --n N` gives the same numbers


def final_sample_count(seconds_per_image: float, available: int, processes: int = 1) -> tuple[int, str]:
    """(samples to draw, why fewer than MAX_SAMPLES or ""): as many as `processes` draw in BUDGET_SECONDS at
    `seconds_per_image` each, at least MIN_SAMPLES, at most MAX_SAMPLES and the `available` reference images."""
    per_image = max(seconds_per_image, 0.0) / processes
    fits = MAX_SAMPLES if per_image == 0 else int(BUDGET_SECONDS / per_image)
    count = min(max(fits, MIN_SAMPLES), MAX_SAMPLES)
    if available < count:
        return available, f"the test split holds {available:,}"
    if count < MAX_SAMPLES:
        return count, f"drawing {MAX_SAMPLES:,} would take ~{_about(MAX_SAMPLES * per_image)}"
    return count, ""


def _about(seconds: float) -> str:
    """'40 s', '3 min', '2 h': a rough duration."""
    if seconds < 90:
        return f"{math.ceil(seconds)} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{round(seconds / 3600)} h"


def seconds_per_image(run: Run, batch: int = TIMING_BATCH) -> float:
    """Seconds the run's model takes to draw one image: a seeded batch of `batch`, in eval mode, without autograd."""
    started = time.perf_counter()
    with eval_mode(run.model), torch.no_grad():
        run.sample(batch, generator=torch.Generator().manual_seed(SEED))  # on the CPU: waits for the device
    return (time.perf_counter() - started) / batch


def skip_reason(run: Run) -> str:
    """Why the run's quality cannot be measured here ("" when it can)."""
    data = run.info["data"]
    if data.get("in_memory"):
        return "the run was trained on a dataset in memory; measure it with genlab.evaluate(run, DATA)"
    if not data.get("test_images"):
        return f"{data['spec']} has no test split to compare the samples with"
    try:
        extractor_for(data["spec"], run.model.data.image_shape)
    except GenlabError as error:
        return str(error)
    return ""


@dataclass
class Quality:
    """The Quality section: what was measured (or why not), on how many samples, where it was saved."""

    run: Run
    evaluation: Evaluation | None = None
    samples: int = 0
    fewer_because: str = ""  # why fewer than MAX_SAMPLES were drawn
    skipped: str = ""  # why nothing was measured
    saved: str = ""  # what became of metrics.json
    seconds: float = 0.0

    def text(self) -> str:
        """The section as `genlab train` prints it after the training trace."""
        if self.evaluation is None:
            return f"Quality: not measured: {self.skipped}"
        info = self.evaluation.info
        counts, data = info["counts"], info["data"]
        fewer = f" ({self.fewer_because})" if self.fewer_because else ""
        lines = [
            "Quality",
            f"{self.samples:,} samples{fewer} vs {data['spec']} test ({counts['reference']:,} images); "
            f"floor: {counts['held_out']:,} held-out real images; extractor {info['extractor']['name']}, "
            f"seed {info['seed']}",
            f"(the numbers of `genlab eval {self.run.path} --metrics {METRICS} --n {self.samples}`)",
            "",
            self.evaluation.table(),
            "",
            self.saved,
            f"quality measured in {self.seconds:.1f} s",
        ]
        return "\n".join(lines)


def final_quality(run: Run) -> Quality:
    """FID, precision and recall of the run's samples against its test split, beside the floor; saved as the
    run's metrics.json unless `genlab eval` already measured these weights there (see `save`).

    Under torchrun every rank calls it: the ranks draw their shares of the samples, and rank 0 saves.
    """
    started = time.perf_counter()
    quality = Quality(run, skipped=skip_reason(run))
    if quality.skipped:
        return quality
    device = next(run.model.parameters()).device
    with distributed.process_group_from_env(device):
        # Every rank times its own batch; the mean gives all ranks the same count.
        timed, _, _ = distributed.average_metrics({"seconds": seconds_per_image(run)}, 1)
        quality.samples, quality.fewer_because = final_sample_count(
            timed["seconds"], run.info["data"]["test_images"], distributed.world_size()
        )
        quality.evaluation = evaluate(run, metrics=METRICS, n=quality.samples, seed=SEED)
    if distributed.is_main_process():
        quality.saved = save(quality.evaluation, run)
    quality.seconds = time.perf_counter() - started
    return quality


def show_final_quality(run: Run, separator: str = "") -> Quality | None:
    """`final_quality`, then its text printed by rank 0 after `separator`: how `genlab train` and
    `genlab.train(final_eval=True)` end. Under torchrun every rank must call it (each draws its share).
    A text run's section is its test bits per byte beside general compressors' (genlab.eval.text); None then."""
    if isinstance(run.model, GeneratesText):
        if distributed.is_main_process():
            print(f"{separator}{text_quality(run.info, run.history)}")
        return None
    quality = final_quality(run)
    if distributed.is_main_process():
        print(f"{separator}{quality.text()}")
    return quality


def save(result: Evaluation, run: Run) -> str:
    """Write `result` as the run's metrics.json, as `genlab eval RUN` does, and say what happened.

    A metrics.json that measured these same weights (a `genlab eval` of the same epoch, likely of
    more samples or metrics) is kept; one of older weights (before a resume) or a damaged one is
    replaced, since a report would otherwise show numbers of a model that no longer exists.
    """
    path = run.path / METRICS_FILE
    replacing = ""
    if path.exists():
        try:
            existing = read_json(path, "the run's metrics")
            validate(existing, METRICS_SOURCE, str(path), "it is replaced")
        except GenlabError as error:
            replacing = f" (replacing a damaged one: {error})"
        else:
            source, epochs = existing["source"], run.info.get("epochs_completed")
            if source["kind"] == "run" and source.get("epochs") == epochs:
                measured = ", ".join(existing.get("metrics_selected") or ["its metrics"])
                samples = (existing.get("counts") or {}).get("samples")
                of = f" of {samples:,} samples" if samples else ""
                return (
                    f"kept {path}: it already holds {measured}{of} of these weights (epoch {epochs}); "
                    f"`genlab eval {run.path}` measures again"
                )
            replacing = f" (replacing the one of epoch {source.get('epochs')}, older weights)"
    written = write_results(result, run.path)
    return f"saved in {written['metrics']}{replacing}"
