"""Names that look alike: a name's skeleton, after Unicode TR39, from a short table of confusables.

:func:`groupchat.protocol.check_name` refuses names that mix scripts or hide characters, but a
name written wholly in one script can still look like another: all-Cyrillic "аре" is Latin
"ape", all-Greek "ΑΒΟ" is "ABO", and in any script "rn" passes for "m", "1" and "I" for "l",
"0" for "O".  Two names with one skeleton look too much alike to be in the chat at once; the
skeleton is only for that question (history and lookups compare :func:`~groupchat.protocol.name_key`).

Names are equal ignoring case, and their owners choose the case they are shown in (``/nick``
"ali" to "alI" is a change of case only), so the skeleton is made from the key: a letter maps
to what its small *or* capital form looks like ("i" to "l", because "I" is "l"; Greek "ν" to
"n", because "Ν" is "N").  Where the two forms look like different Latin letters, the capital,
which is the same glyph, wins.  The table is the confusables that matter for names, not all of
Unicode's ``confusables.txt``: the Cyrillic and Greek letters that look Latin, a few Latin
and Armenian ones, and the digits and letter pairs above.  Marks stay marks ("é" is not "e").
"""

from __future__ import annotations

import unicodedata

from groupchat.protocol import name_key

# Each Latin prototype and the letters (and digits) that pass for it; capitals are folded to
# these small forms first (Cyrillic "В" is "в", Greek "Η" is "η").
PROTOTYPES = {
    "a": "\u0430\u03b1\u0251",  # Cyrillic а, Greek α, Latin ɑ
    "b": "\u0432\u044c\u03b2",  # Cyrillic в (В), ь (Ь), Greek β (Β)
    "c": "\u0441",  # Cyrillic с
    "d": "\u0501",  # Cyrillic ԁ
    "e": "\u0435\u0454\u03b5",  # Cyrillic е, є, Greek ε (Ε)
    "g": "\u0261",  # Latin script ɡ
    "h": "\u04bb\u043d\u03b7",  # Cyrillic һ, н (Н), Greek η (Η)
    "j": "\u0458\u03f3",  # Cyrillic ј, Greek ϳ
    "k": "\u043a\u03ba",  # Cyrillic к (К), Greek κ (Κ)
    "l": "i1\u0131\u0456\u04cf\u03b9\u01c0",  # i (I), 1, dotless ı, Cyrillic і, ӏ, Greek ι (Ι), ǀ
    "m": "\u043c\u03bc",  # Cyrillic м (М), Greek μ (Μ)
    "n": "\u043f\u03bd",  # Cyrillic п, Greek ν (Ν)
    "o": "0\u043e\u03bf\u0585",  # zero, Cyrillic о, Greek ο, Armenian օ
    "p": "\u0440\u03c1",  # Cyrillic р (Р), Greek ρ (Ρ)
    "q": "\u051b",  # Cyrillic ԛ
    "r": "\u0433",  # Cyrillic г
    "s": "\u0455",  # Cyrillic ѕ
    "t": "\u0442\u03c4",  # Cyrillic т (Т), Greek τ (Τ)
    "u": "\u057d",  # Armenian ս
    "v": "\u0475",  # Cyrillic ѵ
    "w": "\u051d\u03c9",  # Cyrillic ԝ, Greek ω
    "x": "\u0445\u03c7",  # Cyrillic х (Х), Greek χ (Χ)
    "y": "\u0443\u04af\u03c5\u03b3",  # Cyrillic у (У), ү, Greek υ (Υ), γ
    "z": "\u03b6",  # Greek ζ (Ζ)
}
# Letter pairs that pass for one letter, replaced after the letters above are.
SEQUENCES = (("rn", "m"), ("vv", "w"), ("cl", "d"))

_TABLE = str.maketrans({source: prototype for prototype, sources in PROTOTYPES.items() for source in sources})


def name_skeleton(name: str) -> str:
    """The form ``name`` is compared in to tell whether it looks like another: two names with
    one skeleton look alike.  Not for showing (it mixes forms freely), and the same for a
    name and its :func:`~groupchat.protocol.name_key`.

    >>> name_skeleton("\u0430\u0440\u0435") == name_skeleton("ape") == name_skeleton("APE")  # Cyrillic аре
    True
    >>> name_skeleton("\u0391\u0392\u039f"), name_skeleton("c0rnet"), name_skeleton("Ian"), name_skeleton("vvill")
    ('abo', 'comet', 'lan', 'wlll')
    >>> name_skeleton("Zoë") == name_skeleton("zoe")  # an accent is not nothing
    False
    """
    skeleton = unicodedata.normalize("NFD", name_key(name)).translate(_TABLE)
    for pair, letter in SEQUENCES:
        skeleton = skeleton.replace(pair, letter)
    return skeleton


def render_lookalike(name: str, other: str, what: str = "who is here") -> str:
    """Why ``name`` is refused: it looks like ``other``, which is in use.

    >>> render_lookalike("\u0430\u0440\u0435", "ape")
    '"аре" looks too much like "ape", who is here'
    """
    return f'"{name}" looks too much like "{other}", {what}'
