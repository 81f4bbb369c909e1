"""The chunking kernel: one document's token ids -> ``[BOS] + piece + [EOS]`` chunks, plus exact counts.

Pure numpy, no I/O. The rules (issue 3, the seed's ``split_dataset_into_chunks_individual.py`` made exact):

1. Content = the ids without the leading BOS and trailing EOS (when the tokenizer added them: ``strip_head``
   / ``strip_tail``, default the framing ids); with ``add_eos`` the EOS is kept as the last content token
   (appended when the ids carry none).
2. Content is cut into pieces of ``P = chunk_size - F`` tokens, F the framing tokens (2 for ``[BOS] ... [EOS]``;
   1 or 0 when ``bos_id``/``eos_id`` is None: decoder tokenizers); only the last piece can be shorter.
   With a word-start table, each cut between two pieces moves back to the nearest token that begins a
   word, looking back at most ``window(P) = min(32, P // 4)`` tokens and never making the piece shorter
   than ``max(min_chunk_size, always_skip_size, 1)``; with no word start in reach the cut stays at P.
   So every piece but the last is ``>= max(min, always_skip)`` and ``<= P``.
3. A piece shorter than ``always_skip_size`` is dropped (counted as skipped), except a document's first
   piece, which is kept unless ``enforce_zeroth``.
4. A later piece shorter than ``min_chunk_size``: with backfill and no duplicates, ``r`` tokens move from
   the end of the previous piece to its front, ``r`` uniform in ``[0, min(P - len, len(previous)))``
   drawn from a stable hash of (seed, document id); with backfill alone, the previous piece's last
   ``P - len`` tokens are prepended (duplicates, counted); without backfill it is dropped (counted).
5. Every chunk is ``[BOS] + piece + [EOS]`` (without the one that is None), at most ``chunk_size`` long.

Accounting, checked by :func:`chunk_document` callers: ``content = written + skipped - duplicated``.
"""

from __future__ import annotations

import hashlib
import marshal
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

__all__ = ["ChunkParams", "DocCounts", "Chunked", "chunk_batch", "chunk_document", "content_tokens", "piece_bounds",
           "window", "word_start_table", "cached_word_start_table", "backfill_draw", "MAX_WINDOW"]

MAX_WINDOW = 32
# byte-level BPE markers of a leading space, newline, tab and carriage return; SentencePiece's space marker
_WORD_MARKS = ("\u0120", "\u010a", "\u0109", "\u010d", "\u2581")


@dataclass(frozen=True, eq=False)
class ChunkParams:
    chunk_size: int
    bos_id: int | None  # framing: the first token of every chunk (None: none)
    eos_id: int | None  # framing: the last token of every chunk (None: none)
    min_chunk_size: int = 0
    always_skip_size: int = 0
    backfill: bool = False
    backfill_no_duplicates: bool = False
    enforce_zeroth: bool = False
    add_eos: bool = False
    strip_special: bool = True
    seed: int = 42
    word_start: np.ndarray | None = field(default=None, repr=False)
    strip_head: tuple[int, ...] | None = None  # ids dropped from a document's start (default: (bos_id,))
    strip_tail: tuple[int, ...] | None = None  # ids dropped from its end (default: (eos_id,))

    def __post_init__(self) -> None:
        p = self.piece_size
        if p < 1:
            raise ValueError(f"chunk_size must be >= 3, got {self.chunk_size}")
        if not 0 <= self.min_chunk_size <= p or not 0 <= self.always_skip_size <= p:
            raise ValueError(f"min_chunk_size and always_skip_size must be in [0, piece size {p}]")
        if self.backfill_no_duplicates and not self.backfill:
            raise ValueError("backfill_no_duplicates needs backfill")
        if self.add_eos and self.eos_id is None:
            raise ValueError("add_eos needs an eos_id")

    @property
    def framing(self) -> int:
        """Tokens added to every piece (BOS and/or EOS)."""
        return (self.bos_id is not None) + (self.eos_id is not None)

    @property
    def piece_size(self) -> int:
        return self.chunk_size - self.framing

    @cached_property
    def heads(self) -> frozenset[int]:
        ids = self.strip_head if self.strip_head is not None else (self.bos_id,)
        return frozenset(i for i in ids if i is not None)

    @cached_property
    def tails(self) -> frozenset[int]:
        ids = self.strip_tail if self.strip_tail is not None else (self.eos_id,)
        return frozenset(i for i in ids if i is not None)

    @cached_property
    def word_start_bytes(self) -> bytes | None:
        """The word-start table as bytes: indexing bytes from Python is ~3x faster than numpy per cut."""
        return None if self.word_start is None else np.asarray(self.word_start, bool).tobytes()


@dataclass
class DocCounts:
    content: int = 0        # content tokens in (step 1)
    written: int = 0        # content tokens written (chunk lengths minus BOS/EOS)
    skipped: int = 0        # content tokens in dropped pieces
    duplicated: int = 0     # tokens written twice by backfill with duplicates
    pieces_skipped: int = 0
    backfilled: int = 0     # pieces that received backfill tokens (r > 0)
    cuts_moved: int = 0     # cuts moved back to a word start

    def closes(self) -> bool:
        return self.content == self.written + self.skipped - self.duplicated


def window(piece_size: int) -> int:
    """How far back (tokens) a cut may move to reach a word start."""
    return min(MAX_WINDOW, piece_size // 4)


def content_tokens(ids: np.ndarray, p: ChunkParams) -> np.ndarray:
    """Step 1: the document's content tokens (a view when nothing is appended)."""
    a, b = 0, len(ids)
    if p.strip_special:
        if b and int(ids[0]) in p.heads:
            a = 1
        if b > a and int(ids[b - 1]) in p.tails:
            b -= 1
    core = ids[a:b]
    if p.add_eos and len(core):
        out = np.empty(len(core) + 1, ids.dtype)
        out[:-1] = core
        out[-1] = p.eos_id
        return out
    return core


def piece_bounds(content: np.ndarray, p: ChunkParams) -> tuple[list[int], int]:
    """Step 2: cut positions ``[0, c1, ..., n]`` and how many cuts moved to a word start."""
    n, size = len(content), p.piece_size
    if p.word_start is None:
        cuts = list(range(0, n, size))
        cuts.append(n)
        return cuts, 0
    back = window(size)
    floor = max(p.min_chunk_size, p.always_skip_size, 1)
    table = p.word_start_bytes
    cuts, moved, s = [0], 0, 0
    while n - s > size:
        e = s + size
        lo = max(s + floor, e - back)
        cut = e
        if lo <= e:
            reach = content[lo:e + 1].tolist()
            for k in range(len(reach) - 1, -1, -1):  # the last word start in reach (usually the first looked at)
                if table[reach[k]]:
                    cut = lo + k
                    break
            moved += cut != e
        cuts.append(cut)
        s = cut
    cuts.append(n)
    return cuts, moved


def backfill_draw(seed: int, doc_id: str, k: int, high: int) -> int:
    """A uniform integer in ``[0, high)`` from a stable hash of (seed, document id, draw number)."""
    if high <= 1:
        return 0
    key = (seed % (1 << 64)).to_bytes(8, "little")
    h = hashlib.blake2b(f"{k}\0{doc_id}".encode("utf-8", "surrogatepass"), digest_size=16, key=key).digest()
    return int.from_bytes(h, "little") % high


def chunk_document(ids: np.ndarray, p: ChunkParams, doc_id: str = "") -> tuple[list[np.ndarray], DocCounts]:
    """Chunk one document (steps 1-5). Returns the chunks (arrays of ``ids.dtype``) and the counts."""
    content = content_tokens(ids, p)
    n = len(content)
    c = DocCounts(content=n)
    if not n:
        return [], c
    size = p.piece_size
    cuts, c.cuts_moved = piece_bounds(content, p)
    kept: list[list[int]] = []  # [start, end) ranges into content; only the last piece can be short
    draws = 0
    for i in range(len(cuts) - 1):
        a, b = cuts[i], cuts[i + 1]
        length = b - a
        if length < p.always_skip_size and (i != 0 or p.enforce_zeroth):
            c.skipped += length
            c.pieces_skipped += 1
            continue
        if length < p.min_chunk_size and i != 0:
            if not (p.backfill and kept):
                c.skipped += length
                c.pieces_skipped += 1
                continue
            prev = kept[-1]
            prev_len = prev[1] - prev[0]
            if p.backfill_no_duplicates:
                r = backfill_draw(p.seed, doc_id, draws, min(size - length, prev_len))
                draws += 1
                prev[1] -= r
                a -= r
            else:
                r = min(size - length, prev_len)
                c.duplicated += r
                a -= r
            c.backfilled += r > 0
        kept.append([a, b])
    chunks = []
    lead = int(p.bos_id is not None)
    for a, b in kept:
        out = np.empty(b - a + p.framing, ids.dtype)
        if lead:
            out[0] = p.bos_id
        out[lead:lead + b - a] = content[a:b]
        if p.eos_id is not None:
            out[-1] = p.eos_id
        chunks.append(out)
        c.written += b - a
    return chunks, c


@dataclass
class Chunked:
    """The chunks of many documents (:func:`chunk_batch`): chunk ``k`` is ``[BOS] + content[start[k]:end[k]]
    + [EOS]`` (without a framing id that is None), of document ``doc[k]``; ``counts`` sums :class:`DocCounts`
    over the documents (plus ``documents`` and ``documents_empty``)."""

    content: np.ndarray
    doc: np.ndarray
    start: np.ndarray
    end: np.ndarray
    counts: dict[str, int]
    bos: int | None
    eos: int | None

    def chunk(self, k: int) -> np.ndarray:
        lead, n = int(self.bos is not None), int(self.end[k] - self.start[k])
        out = np.empty(n + lead + (self.eos is not None), self.content.dtype)
        if lead:
            out[0] = self.bos
        out[lead:lead + n] = self.content[self.start[k]:self.end[k]]
        if self.eos is not None:
            out[-1] = self.eos
        return out


def chunk_batch(ids: np.ndarray, lengths: np.ndarray, doc_ids: list[str], p: ChunkParams) -> Chunked:
    """:func:`chunk_document` of every document at once: document ``i`` is ``ids[sum(lengths[:i]):][:lengths[i]]``.
    The same chunks and counts (tested against it), with numpy over all documents instead of Python per
    document: every cut of one round of all documents at once (each round moves every long document one piece
    on), and the rules of steps 3-4 only where they can apply, each document's last piece (every other piece
    is at least ``max(min_chunk_size, always_skip_size)`` long)."""
    lengths = np.asarray(lengths, np.int64)
    n_docs = len(lengths)
    lo = np.zeros(n_docs, np.int64)
    np.cumsum(lengths[:-1], out=lo[1:])
    a, b = lo.copy(), lo + lengths
    if p.strip_special and n_docs and len(ids):
        first = ids[np.minimum(a, len(ids) - 1)]
        a += (lengths > 0) & np.isin(first, list(p.heads))
        last = ids[np.maximum(b - 1, 0)]
        b -= (b > a) & np.isin(last, list(p.tails))
    content = ids
    if p.add_eos:
        grow = b > a
        content = np.insert(ids, b[grow], np.asarray(p.eos_id, ids.dtype))
        shift = np.cumsum(grow) - grow  # insertions before each document
        a, b = a + shift, b + shift + grow
    m = b - a
    size = p.piece_size
    # step 2: cuts (document, position relative to its content), every round of every document at once
    cut_doc, cut_pos, moved = [np.flatnonzero(m > 0)], [np.zeros(int(np.count_nonzero(m > 0)), np.int64)], 0
    docs = np.flatnonzero(m > size)
    s = np.zeros(len(docs), np.int64)
    back = window(size)
    floor = max(p.min_chunk_size, p.always_skip_size, 1)
    table = None if p.word_start is None else np.asarray(p.word_start, bool)
    steps = np.arange(back + 1)
    while len(docs):
        e = s + size
        cut = e
        if table is not None:
            low = np.maximum(s + floor, e - back)
            pos = e[:, None] - steps[None, :]  # e, e-1, ..., e-back: the last word start in reach wins
            ok = pos >= low[:, None]
            hit = ok & table[content[a[docs][:, None] + np.where(ok, pos, e[:, None])]]
            found = hit.any(axis=1)
            cut = np.where(found, e - np.argmax(hit, axis=1), e)
            moved += int(np.count_nonzero(cut != e))
        cut_doc.append(docs)
        cut_pos.append(cut)
        keep = m[docs] - cut > size
        docs, s = docs[keep], cut[keep]
    cd, cp = np.concatenate(cut_doc), np.concatenate(cut_pos)
    order = np.lexsort((cp, cd))
    cd, cp = cd[order], cp[order]
    ends = np.append(cp[1:], 0)[:len(cp)]
    last = np.append(cd[1:] != cd[:-1], True)[:len(cd)]  # each document's last piece
    ends[last] = m[cd[last]]
    start, end = a[cd] + cp, a[cd] + ends
    # steps 3-4 on each document's last piece
    counts = {"documents": n_docs, "documents_empty": int(np.count_nonzero(m == 0)), "content": int(m.sum()),
              "skipped": 0, "duplicated": 0, "pieces_skipped": 0, "backfilled": 0, "cuts_moved": moved}
    keep = np.ones(len(cd), bool)
    li = np.flatnonzero(last)
    length = end[li] - start[li]
    only = ~np.append(False, cd[1:] == cd[:-1])[:len(cd)][li]  # the last piece is also the document's first
    skip = (length < p.always_skip_size) & (~only | p.enforce_zeroth)
    short = ~skip & ~only & (length < p.min_chunk_size)
    if not p.backfill:
        skip |= short
        short[:] = False
    keep[li[skip]] = False
    counts["skipped"] = int(length[skip].sum())
    counts["pieces_skipped"] = int(np.count_nonzero(skip))
    for k in li[short].tolist():  # backfill: from the previous piece (kept: it is long enough)
        prev_len = int(end[k - 1] - start[k - 1])
        room = min(size - int(end[k] - start[k]), prev_len)
        if p.backfill_no_duplicates:
            r = backfill_draw(p.seed, doc_ids[int(cd[k])], 0, room)
            end[k - 1] -= r
        else:
            r = room
            counts["duplicated"] += r
        start[k] -= r
        counts["backfilled"] += r > 0
    start, end, cd = start[keep], end[keep], cd[keep]
    counts["written"] = int((end - start).sum())
    return Chunked(content, cd, start, end, counts, p.bos_id, p.eos_id)


def word_start_table(tokenizer_json: str, vocab_size: int | None = None) -> np.ndarray:
    """``table[id]`` is True when token ``id`` begins a word (from a ``tokenizer.json`` string).

    WordPiece: the token does not start with the continuing-subword prefix (``##``). Other models
    (byte-level BPE, SentencePiece/Unigram): the token starts with a space/newline marker
    (``Ġ``, ``Ċ``, ``ĉ``, ``č``, ``▁``) or a whitespace character. Added/special tokens are never word starts.
    The vocabulary is read from the JSON itself (~4x faster than building a ``tokenizers.Tokenizer``:
    every worker process builds this table once); other layouts fall back to ``tokenizers``.
    """
    import json

    spec = json.loads(tokenizer_json)
    model = spec.get("model") or {}
    vocab = model.get("vocab")
    if isinstance(vocab, list):  # Unigram: [[piece, score], ...], id = position
        vocab = {item[0]: i for i, item in enumerate(vocab)}
    if not isinstance(vocab, dict):
        from tokenizers import Tokenizer

        vocab = Tokenizer.from_str(tokenizer_json).get_vocab(with_added_tokens=False)
    added = spec.get("added_tokens") or []
    size = max([vocab_size or 0, *(i + 1 for i in vocab.values()), *(t["id"] + 1 for t in added)])
    table = np.zeros(size, bool)
    if model.get("type") == "WordPiece":
        prefix = model.get("continuing_subword_prefix") or "##"
        for s, i in vocab.items():
            table[i] = not s.startswith(prefix)
    elif model.get("type") == "WordLevel":
        table[:] = True
    else:
        starts = [i for s, i in vocab.items() if s.startswith(_WORD_MARKS) or s[:1].isspace()]
        table[starts] = True
    for t in added:
        table[t["id"]] = not t.get("special") and t.get("content", "")[:1].isspace()
    return table


def cached_word_start_table(raw: bytes, vocab_size: int | None = None) -> np.ndarray:
    """:func:`word_start_table` of the tokenizer.json bytes ``raw``, kept in the user cache (``cache.py``):
    building it parses the whole json (~0.05 s), and every chunk worker of every run needs it. The entry
    is named by a hash of the json, ``vocab_size`` and this function's code and markers."""
    from .cache import cache_dir, store

    folder = cache_dir()
    if folder is None:
        return word_start_table(raw.decode("utf-8"), vocab_size)
    h = hashlib.sha256(raw)
    h.update(repr((vocab_size, _WORD_MARKS)).encode("utf-8"))
    h.update(_TABLE_CODE)
    entry = folder / f"wordstart-{h.hexdigest()[:40]}.npy"
    try:
        table = np.load(entry, allow_pickle=False)
        if table.dtype == np.bool_ and table.ndim == 1:
            return table
    except (OSError, ValueError, EOFError):  # absent or unreadable: built again
        pass
    table = word_start_table(raw.decode("utf-8"), vocab_size)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, table, allow_pickle=False)

    store(entry, write)
    return table


_TABLE_CODE = marshal.dumps(word_start_table.__code__)  # part of the cache key: a changed function is rebuilt
