"""Every ``ettin-data`` command, in one table: its name, options model, help, and the class that runs it.

The CLI, the run log, ``--dry-run`` and :func:`ettin_data.run` all look commands up here. A command's
module is imported only when it runs, so ``ettin-data --help`` and shell completion stay fast.
What a command and a stage are: ``ettin_data/stage.py``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from .. import config as C

__all__ = ["Entry", "COMMANDS", "entry", "command", "command_for"]


@dataclass(frozen=True)
class Entry:
    name: str  # as typed: "tokenize", "sample split"
    Config: type  # its options model (config.py)
    target: str  # "module:Class" of the class that runs it
    help: str
    input_help: str

    @property
    def table(self) -> str:
        """The config-file table of its options: [tokenize], [sample.split]."""
        return self.name.replace(" ", ".")

    def load(self) -> Any:
        """An instance of the command's class (importing its module)."""
        module, cls = self.target.split(":")
        return getattr(importlib.import_module(module), cls)()


COMMANDS: tuple[Entry, ...] = (
    Entry("convert", C.ConvertConfig, "ettin_data.stages.convert:Convert",
          "Convert raw text (JSONL, Dolma json.gz, Parquet, Hugging Face datasets) to MDS units.",
          "Input files, folders, globs, a Hugging Face dataset (save_to_disk folder or hub name), or "
          "'builtin:python-docs'."),
    Entry("tokenize", C.TokenizeConfig, "ettin_data.stages.tokenize:Tokenize",
          "Tokenize text MDS units with a Hugging Face tokenizers tokenizer.json (ids, len, domain).",
          "Text dataset folders written by 'ettin-data convert'."),
    Entry("chunk", C.ChunkConfig, "ettin_data.stages.chunk:Chunk",
          "Cut tokenized documents into [BOS] piece [EOS] chunks of at most --chunk-size tokens (--bos/--eos: "
          "other framing, e.g. for decoder tokenizers).",
          "Token dataset folders written by 'ettin-data tokenize', or by another tool (then pass --tokenizer)."),
    Entry("prepare", C.PrepareConfig, "ettin_data.stages.prepare:Prepare",
          "Raw text -> training chunks in one pass (convert + tokenize + chunk per unit; byte-identical chunks).",
          "Input files, folders, globs or Hugging Face datasets, as for 'ettin-data convert'."),
    Entry("sample split", C.SplitConfig, "ettin_data.stages.sample_split:Split",
          "Hold out whole documents as a validation split (OUTPUT/train, OUTPUT/validation).",
          "A chunked token dataset folder."),
    Entry("sample budget", C.BudgetConfig, "ettin_data.stages.sample_budget:Budget",
          "Choose whole units at random until --target-tokens (hard links; --upsample repeats units).",
          "A chunked token dataset folder."),
    Entry("sample context", C.ContextConfig, "ettin_data.stages.sample_context:Context",
          "Draw random chunks (of at least --min-length tokens) until --num-tokens, for context extension.",
          "A chunked token dataset folder."),
    Entry("sample mix", C.MixConfig, "ettin_data.stages.sample_mix:Mix",
          "Build a data mixture from a TOML file of sources with proportions or token counts.",
          "The mix TOML file (total_tokens and [sources.NAME] tables with path and proportion or tokens)."),
    Entry("finalize", C.FinalizeConfig, "ettin_data.stages.finalize:Finalize",
          "Combine split datasets into OUTPUT/train and OUTPUT/validation (raw .mds), write manifest.json, verify.",
          "'sample split' output folders (each with train/ and validation/)."),
    Entry("stats", C.StatsConfig, "ettin_data.stages.describe:Describe",
          "Summarise MDS folders: samples, shards, bytes, columns, tokens and length percentiles.",
          "MDS folders (any tool's)."),
    Entry("index", C.IndexConfig, "ettin_data.stages.index:Index",
          "Rebuild the root index.json over every MDS unit below a folder (after datasets were added or removed).",
          "Folders of MDS datasets (any tool's): each gets one root index over all units below it."),
    Entry("export", C.ExportConfig, "ettin_data.stages.export:Export",
          "Write MDS datasets (text, or token ids decoded) to one JSONL file (.gz/.zst by extension).",
          "MDS folders (text or token datasets)."),
)


def entry(name: str) -> Entry:
    for e in COMMANDS:
        if e.name == name:
            return e
    raise KeyError(name)


def command(name: str) -> Any:
    """The command (a :class:`~ettin_data.stage.Command`) called ``name``."""
    return entry(name).load()


def command_for(cfg: Any) -> Any:
    """The command whose options model ``cfg`` is (``type(cfg)`` exactly: prepare is not convert)."""
    for e in COMMANDS:
        if type(cfg) is e.Config:
            return e.load()
    raise TypeError(f"no ettin-data command takes {type(cfg).__name__}")
