"""gameopt's benchmarks: one folder per study (see README.md here); shared pieces in :mod:`benchmarks.common`."""
