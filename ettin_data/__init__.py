"""ettin-data: prepare Ettin/ModernBERT pretraining data as MDS shards."""

__version__ = "0.1.0"


def run(cfg, *, quiet: bool = True):  # noqa: ANN001, ANN201 - the library's entry point; see driver.run
    """Run the ettin-data command whose options model is ``cfg`` (e.g. ``TokenizeConfig(...)``) and return its
    summary; what a run does: ``ettin_data/driver.py``."""
    from .driver import run as _run

    return _run(cfg, quiet=quiet)
