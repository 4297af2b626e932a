"""gameopt: game-aware optimisers for PyTorch."""

__version__ = "0.1.0"
