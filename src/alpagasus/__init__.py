"""alpagasus: the AlpaGasus recipe as a library (rating, selection, training, pairwise evaluation)."""

__version__ = "0.1.0"
