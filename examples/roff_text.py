"""man(7) roff source -> the plain text ``man`` shows, in Python (no groff), for examples/multilingual.py.

Covers what translated Debian manual pages use: the man macros (TH SH SS PP/LP/P TP/TQ IP HP RS/RE
B/I/SM and the alternating-font macros, nf/fi EX/EE, UR/UE MT/ME SY/OP/YS, pod2man's Vb/Ve/Sp), tbl tables
(``.TS``/``.TE``: cells joined by two spaces), ``.ds``/``.as`` strings, ``.tr``, ``.if``/``.ie``/``.el``
(nroff conditions: ``n`` true, ``t`` false, ``\\n(.g`` true), ``.de``/``.ig`` skipped, and the escapes:
glyphs ``\\(xx``/``\\[name]``/``\\[uXXXX]``/``\\N'n'``, accented letters, Greek, fonts and motions dropped.
Text is filled to 78 columns (no justification, no hyphenation), body indented 7 columns like man's; the
header and footer lines come from ``.TH``. Not a typesetter: it aims at the same words, punctuation and
line structure. mdoc pages and pages that only ``.so``-include another page give None.
"""

from __future__ import annotations

import re
import textwrap
import unicodedata

WIDTH, STEP = 78, 7
NBSP, JOIN = "\x02", "\x01"  # ``\ `` (a space that filling does not break), ``\c`` (join the next line)
_NAMES = (
    "em en hy bu co rg tm aq dq lq rq oq cq Fo Fc fo fc Bq bq ga ha ti rs sl ba br bv ul ru mu di +- "
    "<= >= != == -> <- <> de ct Eu eu Po ye sc ps dg dd lh rh at sh mi pl eq is if pd sd fm ss ae AE oe OE "
    "12 14 34 S1 S2 S3 r! r? ci sq ah OK la ra or lA rA sp ts")
_VALUES = (
    "— – ‐ • © ® ™ ' \" “ ” ‘ ’ « » ‹ › „ ‚ ` ^ ~ \\ / | │ | _ _ × ÷ ± ≤ ≥ ≠ ≡ → ← ↔ ° ¢ € € £ ¥ § ¶ † ‡ "
    "☜ ☞ @ # − + = ∫ ∞ ∂ ″ ′ ß æ Æ œ Œ ½ ¼ ¾ ¹ ² ³ ¡ ¿ ○ □ ˇ ✓ ⟨ ⟩ ∨ ⇐ ⇒ _ ς")
GLYPHS = dict(zip(_NAMES.split(), _VALUES.split(" "), strict=True)) | {"sp": " "}
ACCENTS = {"'": "\u0301", "`": "\u0300", ":": "\u0308", "^": "\u0302", "~": "\u0303", ",": "\u0327",
           "o": "\u030a", "v": "\u030c", "/": ""}
STROKE = {"/l": "ł", "/L": "Ł", "/o": "ø", "/O": "Ø"}
GREEK = dict(zip("abgdezyhiklmncoprstufxqw", "αβγδεζηθικλμνξοπρστυφχψω", strict=True))
SINGLE = {"-": "-", "e": "\\", "E": "\\", "\\": "\\", " ": NBSP, "~": NBSP, "0": NBSP, "t": "\t", "c": JOIN,
          ".": ".", "'": "´", "`": "`", "_": "_", "(": "", "!": "", "%": ""}
STRINGS = {"R": "®", "Tm": "™", "lq": "“", "rq": "”", "S": ""}
ESCAPE = re.compile(r"""\\(?:\((?P<g>..)|\[(?P<b>[^\]]*)\]|[CN]'(?P<q>[^']*)'
    |[fFmMgkn](?:\(..|\[[^\]]*\]|.)|s[-+]?(?:\(\d\d|\[[^\]]*\]|'[^']*'|\d)|\$\d
    |[hvwlLDXoSbxZRHAT]'[^']*'|(?P<c>.))""", re.X | re.S)
STRING_REF = re.compile(r"\\(?:\\|\*(?:\((..)|\[([^\]]*)\]|(.)))")
PARAGRAPHS, SPACES = {"PP", "LP", "P", "HP"}, {"sp", "Sp", "ns"}


def glyph(name: str) -> str:
    if name in GLYPHS:
        return GLYPHS[name]
    if m := re.fullmatch(r"u([0-9A-F]{4,6}(?:_[0-9A-F]{4,6})*)", name):
        return unicodedata.normalize("NFC", "".join(chr(int(c, 16)) for c in m.group(1).split("_")))
    if name.startswith("char") and name[4:].isdigit():
        return chr(int(name[4:]))
    if name in STROKE:
        return STROKE[name]
    if len(name) == 2 and name[0] in ACCENTS:
        return unicodedata.normalize("NFC", name[1] + ACCENTS[name[0]])
    if len(name) == 2 and name[0] == "*" and name[1].lower() in GREEK:
        g = GREEK[name[1].lower()]
        return g.upper() if name[1].isupper() else g
    return ""


def split_args(s: str) -> list[str]:
    """Macro arguments: blank-separated, double quotes group ("" is a quote), escapes kept whole."""
    args, cur, quoted, i, any_ = [], "", False, 0, False
    while i < len(s):
        ch = s[i]
        if ch == "\\" and i + 1 < len(s):
            cur, i, any_ = cur + s[i:i + 2], i + 2, True
            continue
        if quoted and ch == '"':
            if s[i + 1:i + 2] == '"':
                cur, i = cur + '"', i + 2
                continue
            quoted = False
        elif not quoted and ch == '"' and not cur:
            quoted = any_ = True
        elif not quoted and ch in " \t":
            if any_:
                args.append(cur)
            cur, any_ = "", False
        else:
            cur, any_ = cur + ch, True
        i += 1
    return args + [cur] if any_ else args


class Page:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.words: list[str] = []
        self.strings, self.trans = dict(STRINGS), {}
        self.fill, self.margin, self.indent, self.last_ip = True, STEP, 0, STEP
        self.stack: list[tuple[int, int]] = []
        self.tag: str | None = None
        self.want: str | None = None  # what the next text line is: "tag" (of .TP), "SH" or "SS" (a heading)
        self.join = False
        self.url: list[str] = []
        self.foot, self.heading = "", -1

    def inline(self, s: str) -> str:
        for _ in range(4):  # strings may contain strings
            t = STRING_REF.sub(lambda m: m.group(0) if m.group(0) == "\\\\" else
                               self.strings.get(m.group(1) or m.group(2) or m.group(3), ""), s)
            if t == s:
                break
            s = t
        return ESCAPE.sub(self._escape, s)

    def _escape(self, m: re.Match) -> str:
        if m.group("g") is not None or m.group("b") is not None:
            return glyph(m.group("g") or m.group("b"))
        if (q := m.group("q")) is not None:
            return chr(int(q)) if m.group(0)[1] == "N" and q.isdigit() else glyph(q)
        c = m.group("c")
        return "" if c is None else SINGLE.get(c, "" if c in "{}|^&/,:aduprz@#" else c)

    def text(self, s: str) -> None:
        """A line of text (already through inline): a pending .TP tag, a nofill line, or words to fill."""
        if self.want == "tag":
            self.tag, self.want = s.replace(JOIN, ""), None
            return
        if self.want:
            self.flush(blank=True)
            self.heading = len(self.lines)
            self.lines.append(("   " if self.want == "SS" else "") + s.replace(JOIN, "").replace(NBSP, " ").strip())
            self.want = None
            return
        if not self.fill:
            self.lines.append(" " * (self.margin + self.indent) + s.replace(JOIN, "").replace(NBSP, " "))
            return
        joins = s.endswith(JOIN)
        s = s.replace(JOIN, "")
        if self.join and self.words:
            self.words[-1] += s
        elif s:
            self.words.append(s)
        self.join = joins

    def flush(self, blank: bool = False) -> None:
        pad, body = " " * self.margin, " " * (self.margin + self.indent)
        text = " ".join(self.words).strip()
        lines = textwrap.wrap(text, max(20, WIDTH - len(body)), break_long_words=False, break_on_hyphens=False)
        if self.tag is not None:
            if lines and len(self.tag) < self.indent:
                lines[0] = self.tag.ljust(self.indent) + lines[0]
                lines = [pad + lines[0]] + [body + line for line in lines[1:]]
            else:
                lines = [pad + self.tag] + [body + line for line in lines]
        else:
            lines = [body + line for line in lines]
        self.lines.extend(line.replace(NBSP, " ") for line in lines)
        self.words, self.tag, self.join = [], None, False
        if blank and self.lines and self.lines[-1] and self.heading != len(self.lines) - 1:
            self.lines.append("")

    def table(self, rows: list[str]) -> None:
        self.flush()
        opts = rows[0] if rows and rows[0].rstrip().endswith(";") else ""
        tab = m.group(1) if (m := re.search(r"tab\s*\((.)\)", opts)) else "\t"
        body, fmt, cell = rows[1:] if opts else rows, True, None
        out: list[list[str]] = []
        for row in body:
            if fmt:
                fmt = not row.rstrip().endswith(".")
            elif row.startswith(".T&"):
                fmt = True
            elif cell is not None and not row.startswith("T}"):  # inside a T{ ... T} block
                cell.append(self.inline(row).strip())
            elif cell is not None or (not row.startswith(".") and row.strip() not in ("_", "=", "")):
                if cell is not None:
                    out[-1][-1], cell, row = " ".join(c for c in cell if c), None, row[2:]
                    cells = row.split(tab)[1:]
                else:
                    out.append([])
                    cells = row.split(tab)
                out[-1] += [self.inline(c).strip() for c in cells]
                if cells and cells[-1].rstrip().endswith("T{"):
                    out[-1][-1], cell = "", []
        for cells in out:
            self.lines.append(" " * (self.margin + self.indent) + "  ".join(c for c in cells).replace(NBSP, " "))

    def request(self, name: str, args: list[str], rest: str) -> None:
        if name in ("SH", "SS"):
            self.flush(blank=True)
            self.margin, self.indent, self.stack, self.fill, self.want = STEP, 0, [], True, name
            if args:
                self.text(self.inline(" ".join(args)))
        elif name in PARAGRAPHS or name in SPACES:
            self.flush(blank=True)
            self.indent = 0 if name in PARAGRAPHS else self.indent
        elif name in ("TP", "IP", "Ip", "TQ"):
            self.flush(blank=name != "TQ")
            width = next((int(a.rstrip("nm")) for a in args[1 if name != "TP" else 0:][:1]
                          if re.fullmatch(r"\d+[nm]?", a)), self.last_ip)
            self.indent = self.last_ip = min(max(width, 2), 24)
            if name in ("TP", "TQ"):
                self.want = "tag"
            elif args:
                self.tag = self.inline(args[0]).replace(JOIN, "")
        elif name == "RS":
            self.flush()
            self.stack.append((self.margin, self.indent))
            self.margin += int(args[0].rstrip("nm")) if args and args[0].rstrip("nm").isdigit() else \
                (self.indent or STEP)
            self.indent = 0
        elif name == "RE":
            self.flush()
            if self.stack:
                self.margin, self.indent = self.stack.pop()
        elif name in ("br", "ti", "in", "YS", "bp", "ce"):
            self.flush()
        elif name in ("nf", "EX", "Vb", "fi", "EE", "Ve"):
            self.flush()
            self.fill = name in ("fi", "EE", "Ve")
        elif name in ("B", "I", "SM", "SB"):
            if args:
                self.text(self.inline(" ".join(args)))
        elif len(name) == 2 and set(name) <= set("BIR"):
            self.text(self.inline("".join(args)))
        elif name in ("UR", "MT"):
            self.url.append(self.inline(args[0]) if args else "")
        elif name in ("UE", "ME"):
            link = self.url.pop() if self.url else ""
            self.text(f"⟨{link}⟩" + self.inline("".join(args)))
        elif name == "SY":
            self.flush(blank=True)
            self.text(self.inline(" ".join(args)))
        elif name == "OP":
            self.text("[" + self.inline(" ".join(args)) + "]")
        elif name in ("ds", "as") and args:
            value = rest.split(None, 1)[1] if len(rest.split(None, 1)) > 1 else ""
            value = value[1:] if value.startswith('"') else value
            self.strings[args[0]] = (self.strings.get(args[0], "") if name == "as" else "") + value
        elif name == "tr" and args:
            chars = [self.inline(t) for t in re.findall(r"\\(?:\(..|\[[^\]]*\]|.)|.", args[0])]
            self.trans.update((a, b) for a, b in zip(chars[::2], chars[1::2], strict=False) if len(a) == 1)
        elif name == "TH":
            head = f"{args[0]}({args[1]})" if len(args) > 1 else (args[0] if args else "")
            manual = self.inline(args[4]) if len(args) > 4 else ""
            self.lines += [f"{head}   {manual}   {head}".replace("      ", "   "), ""]
            self.foot = "   ".join(self.inline(a) for a in args[3:1:-1] if a) + f"   {head}"


def condition(page: Page, cond: str) -> bool:
    neg = cond.startswith("!")
    cond = cond[1:] if neg else cond
    if cond in ("n", "t", "o", "e", "v"):
        value = cond == "n"
    elif re.fullmatch(r"\\n(\(\.g|\[\.g\])", cond):
        value = True
    elif cond[:1] in "'\"" and cond.count(cond[0]) == 3:
        a, b = cond[1:-1].split(cond[0])
        value = page.inline(a) == page.inline(b)
    else:
        value = cond.isdigit() and int(cond) > 0
    return value != neg


def roff_to_text(src: str) -> str | None:
    """Render one man(7) page; None for mdoc pages and ``.so`` links."""
    if re.search(r"^\.(Dd|Dt|Sh)\b", src, re.M) or re.match(r"\s*(\.\\\".*\n\s*)*\.so\s", src):
        return None
    src = re.sub(r"(?<!\\)((?:\\\\)*)\\\n", r"\1", src)  # escaped newlines join lines
    pending, page, last_if = src.split("\n")[::-1], Page(), True
    while pending:
        line = re.sub(r'\\(\\|".*|#.*)', lambda m: m.group(0) if m.group(1) == "\\" else "", pending.pop())
        if line[:1] not in (".", "'"):
            if not line.strip():
                page.flush(blank=True)
            else:
                if line[:1] in " \t":
                    page.flush()
                page.text(page.inline(line))
            continue
        name, body = re.match(r"([^\s\\]*)\s*(.*)", line[1:].lstrip()).groups()
        if name in ("if", "ie", "el"):
            if name == "el":
                ok = not last_if
            else:
                cond = m.group(0) if (m := re.match(r"(!?)(['\"]).*?\2.*?\2|\S+", body)) else ""
                body, ok = body[len(cond):].lstrip(), condition(page, cond)
                last_if = ok if name == "ie" else last_if
            block = [body]
            depth = body.count("\\{") - body.count("\\}")
            while depth > 0 and pending:
                block.append(pending.pop())
                depth += block[-1].count("\\{") - block[-1].count("\\}")
            if ok:
                cleaned = [b.replace("\\{", "").replace("\\}", "") for b in block]
                pending.extend((cleaned if cleaned[0].strip() else cleaned[1:])[::-1])
        elif name in ("de", "de1", "am", "ig"):
            end = ".." if name == "ig" or len(body.split()) < 2 else "." + body.split()[1]
            while pending and pending.pop().strip() != end:
                pass
        elif name == "do":
            pending.append("." + body)
        elif name == "TS":
            rows = []
            while pending and not pending[-1].startswith(".TE"):
                rows.append(re.sub(r'\\".*', "", pending.pop()))
            pending and pending.pop()
            page.table(rows)
        else:
            page.request(name, split_args(body), body)
    page.flush()
    text = "\n".join(line.rstrip() for line in page.lines + ["", page.foot]).replace(JOIN, "").replace(NBSP, " ")
    text = re.sub(r"\n{3,}", "\n\n", text.translate(str.maketrans(page.trans)) if page.trans else text).strip("\n")
    return text + "\n"
