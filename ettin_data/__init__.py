"""ettin-data: prepare Ettin/ModernBERT pretraining data as MDS shards."""

__version__ = "0.1.0"
