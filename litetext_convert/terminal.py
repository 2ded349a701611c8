"""The one way user-controlled text (file, folder and tensor names, prompts, commit messages, notes
that quote them) reaches a terminal.

A name is data, never layout: a newline in it must not start a second `error:` line, an ESC must not
colour or move the cursor, a bidi override must not reorder what follows, a zero-width character
must not hide that two names differ, and `[bold]` in it must stay those seven characters under Rich.
`--json` output keeps the exact strings: only what people read goes through here.
"""

from __future__ import annotations

import unicodedata

# Characters that change how the rest of a line reads rather than adding a glyph of their own:
# bidi embeddings, overrides and isolates, directional marks, zero-width (non-)joiners and spaces,
# the word joiner and invisible operators, line/paragraph separators, the byte order mark.
_INVISIBLE = frozenset(
    [*range(0x200B, 0x2010), *range(0x2028, 0x202F), *range(0x2060, 0x2070), 0x061C, 0x180E, 0xFEFF]
)


def _needs_escape(char: str) -> bool:
    code = ord(char)
    if code < 0x20 or 0x7F <= code < 0xA0:  # C0 controls (ESC, newline, CR, NUL ...), DEL and C1
        return True
    if 0xD800 <= code < 0xE000:  # lone surrogates: bytes of a file name that are not UTF-8
        return True
    if code in _INVISIBLE:
        return True
    # Any other format character (Cf: e.g. U+E0001 tags, U+FFF9 annotations) is as invisible.
    return unicodedata.category(char) == "Cf"


def _escaped(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def shown(text: object) -> str:
    """`text` as one safe terminal line: every control, bidi, zero-width or format character (and
    every newline) written as a visible Python-style escape (`\\n`, `\\x1b`, `\\u202e`); a tab
    becomes a space. Ordinary Unicode (accents, CJK, emoji) stays as it is."""
    out = []
    for char in str(text):
        if char == "\t":
            out.append(" ")
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif _needs_escape(char):
            out.append(_escaped(char))
        else:
            out.append(char)
    return "".join(out)


def markup_safe(text: object) -> str:
    """`shown(text)` for a Rich string printed with markup on: `[...]` in a name stays literal."""
    from rich.markup import escape

    return escape(shown(text))


def literal(text: object, style: str = ""):
    """A Rich table cell (or printable) holding `shown(text)` literally, never parsed as markup."""
    from rich.text import Text

    return Text(shown(text), style=style)
