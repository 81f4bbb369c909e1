"""The multilingual test sample (tests/helpers_multilingual.py) and the builder's own readers
(examples/multilingual.py: roff rendering, gettext .mo parsing), on small inputs; no download."""

from __future__ import annotations

import hashlib
import re
import struct
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers_multilingual import SAMPLE_DOCUMENTS, SAMPLE_SHA256, multilingual_sample, sample_bytes

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# Scripts the sample claims, each as a Unicode block (a letter of the block must occur in some document).
SCRIPTS = {
    "Latin": "a-zA-ZÀ-ɏ", "Greek": "Ͱ-Ͽ", "Cyrillic": "Ѐ-ӿ", "Armenian": "԰-֏", "Hebrew": "֐-׿",
    "Arabic": "؀-ۿ", "Thaana": "ހ-޿", "Devanagari": "ऀ-ॿ", "Bengali": "ঀ-৿", "Gurmukhi": "਀-੿",
    "Gujarati": "઀-૿", "Oriya": "଀-୿", "Tamil": "஀-௿", "Telugu": "ఀ-౿", "Kannada": "ಀ-೿",
    "Malayalam": "ഀ-ൿ", "Sinhala": "඀-෿", "Thai": "฀-๿", "Lao": "຀-໿", "Tibetan": "ༀ-࿿",
    "Myanmar": "က-႟", "Georgian": "Ⴀ-ჿ", "Hangul": "가-힣", "Ethiopic": "ሀ-፿", "Cherokee": "Ꭰ-᏿",
    "Canadian Syllabics": "᐀-ᙿ", "Khmer": "ក-៿", "Hiragana": "぀-ゟ", "Katakana": "゠-ヿ", "Han": "一-鿿",
    "Shavian": "\U00010450-\U0001047f",
}


def test_sample_loads_with_the_documented_count():
    docs = multilingual_sample()
    assert hashlib.sha256(sample_bytes()).hexdigest() == SAMPLE_SHA256
    assert len(docs) == SAMPLE_DOCUMENTS
    assert all(list(d) == ["id", "text", "lang", "source"] and d["text"].strip() for d in docs)
    assert len({d["id"] for d in docs}) == len(docs)


def test_sample_covers_languages_sources_and_scripts():
    docs = multilingual_sample()
    sources = Counter(d["source"] for d in docs)
    assert set(sources) == {"man", "gettext", "emoji", "mixed"}
    langs = {d["lang"] for d in docs}
    assert len(langs) >= 180 and {"de", "ja", "zh_CN", "ru", "ar", "he", "hi", "th", "ko", "am"} <= langs
    text = "\n".join(d["text"] for d in docs)
    missing = [name for name, block in SCRIPTS.items() if not re.search(f"[{block}]", text)]
    assert not missing
    mixed = [d["text"] for d in docs if d["source"] == "mixed"]
    assert sum(len([b for b in SCRIPTS.values() if re.search(f"[{b}]", t)]) >= 2 for t in mixed) > len(mixed) / 2


def test_sample_has_every_kind_of_emoji_sequence():
    text = "\n".join(d["text"] for d in multilingual_sample() if d["source"] == "emoji")
    for kind, pattern in {"ZWJ": "\U0001F468\u200d", "skin tone": "[\U0001F3FB-\U0001F3FF]",
                          "flag": "[\U0001F1E6-\U0001F1FF]{2}", "keycap": "\ufe0f\u20e3",
                          "tag sequence": "\U000E0067\U000E0062", "text style": "\ufe0e"}.items():
        assert re.search(pattern, text), kind


@pytest.fixture
def builder(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import multilingual

    return multilingual


def test_roff_renders_like_man(builder):
    from roff_text import roff_to_text

    src = "\n".join([
        r'.\" comment', '.TH LS 1 "2022-09-01" "GNU coreutils 9.1" "Benutzerbefehle"', r".ds Aq \(aq",
        '.ie n .ds Q ""', ".el .ds Q ``", ".de XX", ".B never", "..", ".SH BEZEICHNUNG",
        r"ls \- Verzeichnisinhalte auflisten", ".SH BESCHREIBUNG", ".PP",
        r"Caf\('e \fBfett\fR \[u00FC]ber \*(Aqx\*(Aq \*Qzitat\*Q \(em Ende\ und",
        r"Fortsetzung \(:a\(,c \(*a\(*W.", ".TP", r"\fB\-a\fR, \fB\-\-all\fR", r"mit \(Fo.\(Fc", ".TP",
        r'.BR \-l " (lang)"', "lange Liste", ".RS", ".nf", "  a  b", ".fi", ".RE", ".SS Tabelle", ".TS",
        "tab(;);", "l l.", "x;y", "T{", "langer", "Text", "T};z", ".TE", ".UR https://example.org", "Seite",
        ".UE ."])
    assert roff_to_text(src) == (
        "LS(1)   Benutzerbefehle   LS(1)\n\nBEZEICHNUNG\n       ls - Verzeichnisinhalte auflisten\n\n"
        "BESCHREIBUNG\n       Café fett über 'x' \"zitat\" — Ende und Fortsetzung äç αΩ.\n\n"
        "       -a, --all\n              mit «.»\n\n       -l (lang)\n              lange Liste\n"
        "                a  b\n\n   Tabelle\n       x  y\n       langer Text  z\n"
        "       Seite ⟨https://example.org⟩.\n\nGNU coreutils 9.1   2022-09-01   LS(1)\n")
    assert roff_to_text(".so man1/ls.1\n") is None
    assert roff_to_text(".Dd May 1, 2020\n.Dt LS 1\n.Sh NAME\n") is None


def _mo(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A little-endian gettext .mo file (what msgfmt writes: entries sorted by msgid)."""
    entries, data, tables = sorted(entries), b"", ([], [])
    start = 28 + 16 * len(entries)
    for column in (0, 1):
        for entry in entries:
            tables[column].append(struct.pack("<2I", len(entry[column]), start + len(data)))
            data += entry[column] + b"\0"
    head = struct.pack("<7I", 0x950412DE, 0, len(entries), 28, 28 + 8 * len(entries), 0, 0)
    return head + b"".join(tables[0]) + b"".join(tables[1]) + data


def test_mo_catalogues_become_documents(builder):
    mo = _mo([(b"", b"Content-Type: text/plain; charset=UTF-8\n"), (b"Hello", "Привет".encode()),
              (b"menu\x04Open", "Öffnen".encode()), (b"OK", b"OK"),
              (b"%d file\x00%d files", "%d файл\x00%d файла\x00%d файлов".encode())])
    assert builder.mo_strings(mo)[1] == ("Hello", "Привет")
    latin1 = _mo([(b"", b"Content-Type: text/plain; charset=ISO-8859-1\n"), (b"Yes", "Sí".encode("latin-1"))])
    assert builder.mo_strings(latin1) == [("Yes", "Sí")]
    skipped = Counter()
    docs = list(builder.gettext_documents({"ru": [mo, mo], "xx": [b"junk"]}, "pkg", skipped))
    assert docs == [{"id": "gettext/pkg/ru/0000", "text": "%d файл\n%d файла\n%d файлов\nПривет\nÖffnen",
                     "lang": "ru", "source": "gettext"}]  # msgid order; "OK" = its msgid; repeats dropped
    assert skipped == {"gettext: unreadable .mo": 1}


def test_builder_errors_are_one_line(builder, tmp_path, monkeypatch):
    monkeypatch.setattr(builder.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match=r"apt-get not found: .* put their \.deb files into"):
        builder.fetch(("iso-codes",), tmp_path)
    (tmp_path / "iso-codes_4.15.0-1_all.deb").write_bytes(b"not a deb")
    assert builder.fetch(("iso-codes",), tmp_path) == {"iso-codes": tmp_path / "iso-codes_4.15.0-1_all.deb"}
    with pytest.raises(SystemExit, match="is not a .deb: delete it and rerun"):
        list(builder.deb_files(tmp_path / "iso-codes_4.15.0-1_all.deb"))
    monkeypatch.setattr(builder.shutil, "which", lambda name: "/usr/bin/apt-get")
    monkeypatch.setattr(builder.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        a, 100, "", "W: a warning\nE: Unable to locate package nope\n"))
    with pytest.raises(SystemExit, match="apt-get download failed: E: Unable to locate package nope"):
        builder.fetch(("nope",), tmp_path)
