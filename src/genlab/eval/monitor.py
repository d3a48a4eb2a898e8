"""FID, precision and recall during training (`genlab train --eval-every`), on a small fixed budget."""

from __future__ import annotations

import torch

from genlab.data import ImageDataset
from genlab.data.transforms import to_uint8
from genlab.errors import GenlabError
from genlab.eval import metrics as M
from genlab.eval.features import extractor_for
from genlab.eval.reference import real_features
from genlab.eval.sources import seeded_subset
from genlab.models.base import GenerativeModel
from genlab.models.common import eval_mode


class TrainingMonitor:
    """FID, precision and recall of a model's samples on a small budget, for `genlab train --eval-every`.

    The reference is a fixed seeded subset of `n` real images (the test split when there is
    one) whose features come from the cache; each call draws `n` samples from the same noise
    seed, so epoch-to-epoch changes are the model's, not the sampling's. FID from 1,000
    samples is biased upwards against the full-size number: compare it across epochs and
    runs of the same budget, and use `genlab eval` for the final figure.
    """

    def __init__(self, train: ImageDataset, test: ImageDataset | None = None, n: int = 1000, seed: int = 0):
        if n < 4:
            raise GenlabError(f"evaluation during training needs at least 4 samples (precision/recall k=3); got {n}")
        self.extractor = extractor_for(train.name, train.image_shape)
        split, data = ("test", test) if test is not None and len(test) else ("train", train)
        reference = real_features(data, split, self.extractor)
        self.reference = reference.features[seeded_subset(len(reference), n, torch.Generator().manual_seed(seed))]
        self.stats = M.gaussian_stats(self.reference)  # (mean (D,), covariance (D, D)) of the reference
        self.n, self.seed = n, seed

    def __call__(self, model: GenerativeModel) -> dict[str, float]:
        """{"fid", "precision", "recall"} of n fresh samples of `model` (seeded, in eval mode, without autograd)."""
        with eval_mode(model), torch.no_grad():
            images = model.sample(self.n, generator=torch.Generator().manual_seed(self.seed))
        features = self.extractor.features(to_uint8(images.cpu()))
        precision, recall = M.precision_recall(self.reference, features)
        return {"fid": M.fid(*self.stats, *M.gaussian_stats(features)), "precision": precision, "recall": recall}
