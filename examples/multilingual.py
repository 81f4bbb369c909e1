"""Build a real multilingual text corpus offline, from Debian packages (for the tokenizer-engine proofs and bench).

    python examples/multilingual.py --out DIR [--cache DEBS] [--min-chars N] [--sample PATH]

Downloads the fixed list ``PACKAGES`` with ``apt-get download`` into ``--cache`` (default ``DIR/debs``; a
``.deb`` already there is reused, so a second build is offline), reads each ``.deb`` in Python (ar + tar, no
dpkg-deb) and writes ``DIR/multilingual.jsonl``: one ``{"id", "text", "lang", "source"}`` per line.
  man      one translated manual page = one document (``usr/share/man/<lang>/``), its roff rendered here,
           in Python (``roff_text``), the way ``man`` shows it: indented, filled to 78 columns, tables and
           examples kept as lines, real punctuation (groff glyphs and strings resolved). Pages that are only
           ``.so`` links and mdoc (BSD macro) pages are skipped and counted. lang = the folder (``pt_BR``).
  gettext  a package's ``.mo`` catalogues for one locale, read here (``mo_strings``, no msgunfmt): translated
           strings in catalogue order (plural forms included; strings equal to their msgid, repeats and the
           generated ``en@quot``/``en@boldquot`` locales left out), one per line, cut into ~4 KB documents,
           of which ``GETTEXT_DOCS`` (4), evenly spread, are kept: every locale, without big catalogues dominating.
  emoji    unicode-data's ``emoji-test.txt`` (every RGI sequence: ZWJ, skin tones, flags, keycaps, tags) and
           ``emoji-variation-sequences.txt``, put into English running text with seeded templates.
  mixed    deterministic mixes (seeded) of 3-6 pieces of documents in different languages, joined by
           newlines, spaces, nothing or an emoji: scripts meeting mid-line. lang = ``mul``.
Documents shorter than ``--min-chars`` (default 64) and repeated texts are dropped and counted.
``DIR/manifest.json``: package versions and sha256, documents and characters per source and per language,
characters per script, what was skipped, and the sha256 of the jsonl. Same package versions -> the same
bytes (sorted walks, seeded mixing, no set order). ``--sample PATH`` also writes the test sample
(``select_sample``: every language x source, every script's richest documents, all emoji documents, a
share of the mixed ones, then seeded filler up to ``SAMPLE_BYTES``) as zstd-compressed JSONL.
Licences: the texts keep their packages' licences (GPL/LGPL, GFDL, BSD/MIT-style, the Unicode licence; see
each package's ``usr/share/doc/PKG/copyright``, recorded per package in the manifest by name and version).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import lzma
import random
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import unicodedata
from collections import Counter, defaultdict
from functools import cache
from pathlib import Path
from urllib.parse import unquote

from roff_text import roff_to_text

MAN_PAGES = "cs da de el es fi fr hu id it ja mk nb nl pl pt-br ro ru sr sv tr uk vi zh"  # manpages-XX
MAN_PAGES_DEV = "cs da de es fr it ja nl pl pt-br ru uk"  # manpages-XX-dev
OTHERS = """adduser apt apt-listchanges apt-utils aptitude-common base-passwd debconf debconf-doc debconf-i18n
    debhelper debianutils debsums devscripts dctrl-tools dpkg dpkg-dev fakeroot libsemanage-common locales login
    man-db mc-data net-tools passwd po4a procps psmisc sensible-utils vim-common vim-runtime xxd xz-utils
    at-spi2-common bash coreutils diffutils e2fsprogs-l10n findutils gcc-12-locales gnupg-l10n grep
    gsettings-desktop-schemas iso-codes libgdk-pixbuf2.0-common libglib2.0-data libgtk-3-common libgtk2.0-common
    libpam-runtime sed shared-mime-info tar util-linux-locales vlc-l10n wget xdg-user-dirs xkb-data unicode-data"""
PACKAGES = tuple(sorted([f"manpages-{x}" for x in MAN_PAGES.split()] + [f"manpages-{x}-dev" for x in
                                                                         MAN_PAGES_DEV.split()] + OTHERS.split()))
SEED = 20261206
DOC_CHARS = 4000            # target size of gettext and emoji documents
GETTEXT_DOCS = 4            # documents kept per catalogue and locale (evenly spread over it)
MIXED_DOCS = 2000
SAMPLE_BYTES = 10_000_000   # UTF-8 text in the test sample (~3 MB once zstd-compressed)
SKIP_LOCALES = {"en@quot", "en@boldquot"}


def fail(msg: str) -> None:
    sys.exit(f"multilingual.py: {msg}")


def fetch(packages: tuple[str, ...], cache_dir: Path) -> dict[str, Path]:
    """The .deb of every package, downloaded with apt-get into cache_dir unless one is already there."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    found = {p: sorted(cache_dir.glob(f"{p}_*.deb")) for p in packages}
    if any(len(f) > 1 for f in found.values()):
        fail(f"several versions of {[p for p, f in found.items() if len(f) > 1]} in {cache_dir}: remove the old ones")
    missing = [p for p, f in found.items() if not f]
    if missing:
        if shutil.which("apt-get") is None:
            fail(f"apt-get not found: it downloads the Debian packages; on another system put their .deb files "
                 f"into {cache_dir} ({len(missing)} missing, e.g. {missing[0]})")
        run = subprocess.run(["apt-get", "download", *missing], cwd=cache_dir, capture_output=True, text=True)
        errors = [line for line in run.stderr.splitlines() if line.startswith("E:")]
        if run.returncode or errors:
            fail(f"apt-get download failed: {(errors or run.stderr.splitlines() or ['?'])[-1]} "
                 "(run 'apt-get update' first; the package list is PACKAGES in this script)")
        return fetch(packages, cache_dir)
    return {p: f[0] for p, f in found.items()}


def deb_files(path: Path):
    """(path, bytes) of the regular files in a .deb, in archive order: ar members, then data.tar.*."""
    data = path.read_bytes()
    if data[:8] != b"!<arch>\n":
        fail(f"{path} is not a .deb: delete it and rerun")
    pos = 8
    while pos + 60 <= len(data):
        name, size = data[pos:pos + 16].decode().strip().rstrip("/"), int(data[pos + 48:pos + 58])
        body, pos = data[pos + 60:pos + 60 + size], pos + 60 + size + (size & 1)
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                import zstandard
                body = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)).read()
            with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
                for member in tar:
                    if member.isfile():
                        yield member.name.removeprefix("./"), tar.extractfile(member).read()


def mo_strings(data: bytes) -> list[tuple[str, str]]:
    """(msgid, msgstr) of a gettext .mo file in catalogue order; plural forms stay joined by NUL."""
    order = {b"\xde\x12\x04\x95": "<", b"\x95\x04\x12\xde": ">"}.get(data[:4])
    if order is None:
        raise ValueError("not a .mo file")
    count, ids, strs = struct.unpack(order + "3I", data[8:20])
    raw = []
    for i in range(count):
        (il, io_), (sl, so) = (struct.unpack_from(order + "2I", data, at + 8 * i) for at in (ids, strs))
        raw.append((data[io_:io_ + il], data[so:so + sl]))
    header = dict(raw).get(b"", b"").decode("ascii", "replace")
    charset = m.group(1) if (m := re.search(r"charset=([\w.-]+)", header)) else "utf-8"
    try:
        "".encode(charset)
    except LookupError:
        charset = "utf-8"
    return [(a.decode(charset, "replace"), b.decode(charset, "replace")) for a, b in raw if a]


def gettext_documents(catalogues: dict[str, list[bytes]], pkg: str, skipped: Counter):
    """Documents of ~DOC_CHARS from one package's catalogues of each locale, strings in catalogue order."""
    for locale in sorted(catalogues):
        seen, lines = set(), []
        for data in catalogues[locale]:
            try:
                pairs = mo_strings(data)
            except (ValueError, struct.error):
                skipped["gettext: unreadable .mo"] += 1
                continue
            for msgid, msgstr in pairs:
                sources = set(msgid.split("\x04")[-1].split("\0"))
                for form in msgstr.split("\0"):
                    if form.strip() and form not in sources and form not in seen:
                        seen.add(form)
                        lines.append(form)
        docs, doc = [], []
        for i, line in enumerate(lines):
            doc.append(line)
            if sum(map(len, doc)) >= DOC_CHARS or i == len(lines) - 1:
                docs.append("\n".join(doc))
                doc = []
        keep = sorted({j * (len(docs) - 1) // max(1, GETTEXT_DOCS - 1) for j in range(GETTEXT_DOCS)}) \
            if len(docs) > GETTEXT_DOCS else range(len(docs))
        for n in keep:
            yield {"id": f"gettext/{pkg}/{locale}/{n:04d}", "text": docs[n], "lang": locale, "source": "gettext"}


def man_documents(path: str, body: bytes, pkg: str, skipped: Counter):
    m = re.match(r"usr/share/man/([^/]+)/man[^/]*/(.+?)(\.gz|\.xz)?$", path)
    if not m or m.group(1).startswith("man"):
        return
    raw = gzip.decompress(body) if m.group(3) == ".gz" else lzma.decompress(body) if m.group(3) else body
    try:
        src = raw.decode("utf-8")
    except UnicodeDecodeError:
        src = raw.decode("latin-1")
        skipped["man: read as latin-1"] += 1
    text = roff_to_text(src)
    if text is None:
        skipped["man: mdoc or .so link page"] += 1
        return
    lang = m.group(1).split(".")[0]
    yield {"id": f"man/{pkg}/{lang}/{m.group(2)}", "text": text, "lang": lang, "source": "man"}


TEMPLATES = ("{e} {n}.", "{n}: {e}", "{e}{e}{e}", "I got {e} ({n}) today!", "«{e}»", "{e}, {f} and {g}",
             "#{w} {e}", "{e}\u00a0{n}", "{n} {e}{f}", '"{e}"', "{e}!!", "{e}\n", "{n}{e}", "({e}{f})", "{e}\t{n}")


def emoji_documents(files: dict[str, bytes]):
    """Running English text around every sequence of emoji-test.txt, and text/emoji variation pairs."""
    groups, group, where = defaultdict(list), "", ""
    for line in files["emoji-test.txt"].decode().splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            where = f"{group} / {line.split(':', 1)[1].strip()}"
        elif line and not line.startswith("#"):
            codes, rest = line.split(";", 1)
            name = rest.split("#", 1)[1].split(" ", 3)[-1].strip()
            groups[where].append(("".join(chr(int(c, 16)) for c in codes.split()), name))
    for v in files["emoji-variation-sequences.txt"].decode().splitlines():
        if v and not v.startswith("#"):
            codes, _, name = (f.strip() for f in v.split(";", 2))
            groups["Variation sequences"].append(("".join(chr(int(c, 16)) for c in codes.split()),
                                                  name.split("#")[-1].split(")", 1)[-1].strip().lower()))
    for where, entries in groups.items():
        rng, parts, n = random.Random(f"{SEED}:emoji:{where}"), [f"{where}\n"], 0
        for e, name in entries:
            f, g = rng.choice(entries)[0], rng.choice(entries)[0]
            parts.append(rng.choice(TEMPLATES).format(e=e, n=name, f=f, g=g, w=re.sub(r"\W+", "", name.title())))
            if sum(map(len, parts)) >= DOC_CHARS or (e, name) == entries[-1]:
                yield {"id": f"emoji/{where.replace(' / ', '/')}/{n:03d}", "text": " ".join(parts).strip(),
                       "lang": "en", "source": "emoji"}
                parts, n = [], n + 1


def mixed_documents(docs: list[dict], emojis: list[str]):
    """Seeded mixes of line-aligned pieces of documents in 3-6 different languages."""
    by_lang = defaultdict(list)
    for d in docs:
        by_lang[d["lang"]].append(d["text"])
    langs, rng = sorted(by_lang), random.Random(f"{SEED}:mixed")
    seps = ("\n\n", "\n", " ", "", " — ", ": ", " / ", "\t", ", ")
    for i in range(MIXED_DOCS):
        text = ""
        for j, lang in enumerate(rng.sample(langs, rng.randint(3, 6))):
            lines = rng.choice(by_lang[lang]).split("\n")
            start, want, piece = rng.randrange(len(lines)), rng.randint(80, 1200), []
            for line in lines[start:]:
                piece.append(line)
                if sum(map(len, piece)) >= want:
                    break
            sep = f" {rng.choice(emojis)} " if rng.random() < 0.2 else rng.choice(seps)
            text += ("" if j == 0 else sep) + "\n".join(piece).strip()
        yield {"id": f"mixed/{i:05d}", "text": text, "lang": "mul", "source": "mixed"}


@cache
def script(ch: str) -> str | None:
    """Unicode script of a letter or mark, from its name (no script property in the stdlib); None otherwise."""
    if unicodedata.category(ch)[0] not in "LM":
        return None
    words = unicodedata.name(ch, "UNKNOWN").split()
    word = words[1] if words[0] in ("FULLWIDTH", "HALFWIDTH") else words[0]
    if word in NOT_SCRIPTS:
        return NOT_SCRIPTS[word] or "COMMON"
    return " ".join(words[:2]) if word in ("OL", "CANADIAN", "NEW", "OLD", "TAI") else word


_COMMON = """MODIFIER KATAKANA-HIRAGANA MICRO CARON INFORMATION MATHEMATICAL SUPERSCRIPT SUBSCRIPT SCRIPT
    DOUBLE-STRUCK BLACK-LETTER PLANCK ANGSTROM KELVIN OHM TURNED ZERO"""  # first words of letters of no script
NOT_SCRIPTS = {"CJK": "HAN", "IDEOGRAPHIC": "HAN", "COMBINING": "INHERITED", "VARIATION": "INHERITED",
               "MASCULINE": "LATIN", "FEMININE": "LATIN", **dict.fromkeys(_COMMON.split(), "")}


def scripts_of(text: str) -> Counter:
    out = Counter()
    for ch, n in Counter(text).items():
        if (s := script(ch)) is not None:
            out[s] += n
    return out


def build(out: Path, cache_dir: Path, min_chars: int) -> tuple[list[dict], dict]:
    debs, skipped, docs, emoji_files = fetch(PACKAGES, cache_dir), Counter(), [], {}
    licences = {}
    for pkg in PACKAGES:
        catalogues = defaultdict(list)
        try:
            files = sorted(deb_files(debs[pkg]))
        except (OSError, EOFError, tarfile.TarError, lzma.LZMAError, ValueError) as e:
            fail(f"{debs[pkg]}: unreadable ({e}): delete it and rerun")
        for path, body in files:
            if path == f"usr/share/doc/{pkg}/copyright":
                licences[pkg] = sorted(set(re.findall(r"^License:\s*(.+?)\s*$", body.decode("utf-8", "replace"),
                                                      re.M)))
            elif path.startswith("usr/share/man/"):
                docs.extend(man_documents(path, body, pkg, skipped))
            elif (m := re.match(r"usr/share/locale/([^/]+)/LC_MESSAGES/[^/]+\.mo$", path)) and \
                    m.group(1) not in SKIP_LOCALES:
                catalogues[m.group(1)].append(body)
            elif path.startswith("usr/share/unicode/emoji/"):
                emoji_files[path.rsplit("/", 1)[1]] = body
        docs.extend(gettext_documents(catalogues, pkg, skipped))
    if "emoji-test.txt" not in emoji_files:
        fail("unicode-data has no usr/share/unicode/emoji/emoji-test.txt")
    emoji = list(emoji_documents(emoji_files))
    docs, emoji = dedupe(docs, min_chars, skipped), dedupe(emoji, min_chars, skipped)
    emojis = [e for d in emoji for e in re.findall(r"[^\w\s\"'«»(),.:!#-]+", d["text"]) if len(e) < 20]
    mixed = list(mixed_documents(docs, emojis))  # pieces of the man and gettext documents
    docs += emoji + mixed
    manifest = {"packages": {p: {"version": unquote(debs[p].name).split("_")[1], "file": debs[p].name,
                                 "sha256": hashlib.sha256(debs[p].read_bytes()).hexdigest(),
                                 "licences": licences.get(p) or f"see usr/share/doc/{p}/copyright"}
                             for p in PACKAGES},
                "seed": SEED, "min_chars": min_chars, "skipped": dict(sorted(skipped.items()))}
    return docs, manifest


def dedupe(docs: list[dict], min_chars: int, skipped: Counter) -> list[dict]:
    seen, kept = set(), []
    for d in docs:
        digest = hashlib.sha256(d["text"].encode()).digest()
        if len(d["text"]) < min_chars:
            skipped[f"{d['source']}: shorter than --min-chars"] += 1
        elif digest in seen:
            skipped[f"{d['source']}: repeated text"] += 1
        else:
            seen.add(digest)
            kept.append(d)
    return kept


def summarize(docs: list[dict]) -> dict:
    by_source, by_lang, scripts = defaultdict(Counter), defaultdict(Counter), Counter()
    for d in docs:
        for table, key in ((by_source, d["source"]), (by_lang, d["lang"])):
            table[key]["documents"] += 1
            table[key]["characters"] += len(d["text"])
        scripts.update(scripts_of(d["text"]))
    return {"documents": len(docs), "characters": sum(len(d["text"]) for d in docs), "languages": len(by_lang),
            "by_source": {k: dict(v) for k, v in sorted(by_source.items())},
            "by_lang": {k: dict(v) for k, v in sorted(by_lang.items())}, "scripts": dict(scripts.most_common())}


def jsonl(docs: list[dict]) -> bytes:
    return "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode()


def write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    tmp.replace(path)


def select_sample(docs: list[dict]) -> list[dict]:
    """One document per (language, source) pair, the 3 documents richest in each script, every emoji document,
    1 mixed document in 10, then documents in seeded order up to SAMPLE_BYTES of text; kept in corpus order.
    Documents over 20k characters are only taken for a pair that has no shorter one."""
    rank = {d["id"]: hashlib.sha256(f"{SEED}:{d['id']}".encode()).digest() for d in docs}
    small = [d for d in docs if len(d["text"]) <= 20_000]
    chosen = {}
    for d in sorted(docs, key=lambda d: (len(d["text"]) > 20_000, rank[d["id"]])):  # a short one if any
        chosen.setdefault((d["lang"], d["source"]), d["id"])
    picked = set(chosen.values())
    per_script = defaultdict(list)
    for d in small:
        for s, n in scripts_of(d["text"]).items():
            per_script[s].append((-n, rank[d["id"]], d["id"]))
    for entries in per_script.values():
        picked.update(i for _, _, i in sorted(entries)[:3])
    picked.update(d["id"] for d in docs if d["source"] == "emoji")
    picked.update(d["id"] for d in docs if d["source"] == "mixed" and int(d["id"][-5:]) % 10 == 0)
    size = sum(len(d["text"].encode()) for d in docs if d["id"] in picked)
    for d in sorted(small, key=lambda d: rank[d["id"]]):
        if size >= SAMPLE_BYTES:
            break
        if d["id"] not in picked:
            picked.add(d["id"])
            size += len(d["text"].encode())
    return [d for d in docs if d["id"] in picked]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--cache", type=Path, help="where the .deb files are kept (default OUT/debs)")
    ap.add_argument("--min-chars", type=int, default=64, help="drop documents shorter than this")
    ap.add_argument("--sample", type=Path, help="also write the test sample here (.jsonl.zst)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    docs, manifest = build(args.out, args.cache or args.out / "debs", args.min_chars)
    data = jsonl(docs)
    write(args.out / "multilingual.jsonl", data)
    manifest |= summarize(docs) | {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    if args.sample:
        import zstandard
        sample = select_sample(docs)
        raw = jsonl(sample)
        write(args.sample, zstandard.ZstdCompressor(level=19).compress(raw))
        manifest["sample"] = {"path": args.sample.name, "documents": len(sample), "bytes": len(raw),
                              "sha256": hashlib.sha256(raw).hexdigest(), "languages": len({d["lang"] for d in sample})}
    write(args.out / "manifest.json", json.dumps(manifest, indent=1, ensure_ascii=False).encode())
    print(f"{args.out / 'multilingual.jsonl'}: {manifest['documents']:,} documents, {manifest['characters']:,} "
          f"characters, {manifest['languages']} language tags, "
          f"{len(set(manifest['scripts']) - {'COMMON', 'INHERITED'})} scripts")


if __name__ == "__main__":
    main()
