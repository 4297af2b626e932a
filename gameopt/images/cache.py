"""Where gameopt keeps what it builds once and reuses: trained metric classifiers, parsed data sets.

One small module so that the loaders (:mod:`gameopt.images.mnist`) and the classifiers
(:mod:`gameopt.images.classifier`) both use it without importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "cache_directory"]

#: Environment variable naming the cache folder.
CACHE_ENV = "GAMEOPT_CACHE"


def cache_directory(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$GAMEOPT_CACHE``, else ``~/.cache/gameopt``.

    Args:
        cache_dir: an explicit folder, which wins over the environment (``~`` is expanded).

    Returns:
        The folder as a :class:`~pathlib.Path`; it is not created here.
    """
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "gameopt"
    return Path(cache_dir).expanduser()
