"""Names and room names that look like another are refused, fold to its key, or share its
skeleton; runs of blanks in text collapse (issue 11: no one can pass for someone else). Pure,
no sockets."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from groupchat.errors import CommandError, InvalidNameError
from groupchat.lookalikes import PROTOTYPES, name_skeleton
from groupchat.protocol import (
    MAX_BLANK_RUN,
    MAX_MARKS_PER_LETTER,
    NAME_JOINERS,
    check_name,
    check_room,
    clean_text,
    decode_line,
    name_key,
    script_of,
)

# Each name the issue showed passing for "bob" (or for nobody), with the line that refuses it.
LOOKALIKES = [
    ("b\u043eb", "a name cannot mix Cyrillic and Latin letters"),  # a Cyrillic "о"
    ("bob\u034f", "a name cannot have invisible or control characters such as U+034F"),
    ("bob\ufe0f", "a name cannot have invisible or control characters such as U+FE0F"),
    ("bob\ufe00", "a name cannot have invisible or control characters such as U+FE00"),
    ("bob\u3164", "a name cannot have invisible or control characters such as U+3164"),
    ("bob\u1160", "a name cannot have invisible or control characters such as U+1160"),
    ("bob\u200b", "a name cannot have invisible or control characters such as U+200B"),
    ("b\u00adob", "a name cannot have invisible or control characters such as U+00AD"),
    ("\u3164", "a name cannot have invisible or control characters such as U+3164"),
    ("\u3164\u3164\u3164", "a name cannot have invisible or control characters such as U+3164"),
    ("\u0301\u0308", "a name must start with a letter or digit"),
    ("bob.", 'a name cannot end with "."'),
    ("bob_", 'a name cannot end with "_"'),
    ("bob>", 'a name can only have letters, digits, "-", "_" and "." (not ">")'),
    ("b\u2010ob", 'a name can only have letters, digits, "-", "_" and "." (not "\u2010")'),
    ("/bob", 'a name cannot start with "/"'),
    ("-bob", 'a name cannot start with "-"'),
    ("\uff0a\uff0a\uff0a", 'a name cannot start with "*"'),  # fullwidth asterisks
    ("1\u0336", "a name can only have accents and other marks on letters"),
    ("b" + "\u0300\u0301\u0302\u0303", f"a name can have at most {MAX_MARKS_PER_LETTER} marks on a letter"),
    ("\u02bcbob", "a name cannot mix Latin and Modifier letters"),
    ("bob\u0663", "a name cannot mix Arabic and Latin letters"),  # an Arabic-Indic 3
]


@pytest.mark.parametrize("name, reason", LOOKALIKES)
def test_lookalike_names_are_refused_with_one_line_saying_why(name, reason):
    with pytest.raises(InvalidNameError) as refused:
        check_name(name)
    assert str(refused.value) == reason


@pytest.mark.parametrize("name", ["alice", "Zoë", "Zoe\u0308", "боб", "李雷", "bob_2", "r2-d2", "a.b-c",
                                  "Nguyễn", "नमस्ते", "さくら李", "김민준", "محمد٣", "Ελένη", "x__y", "7up"])
def test_names_in_one_script_with_joiners_between_are_allowed(name):
    assert check_name(name) == name


@pytest.mark.parametrize("lookalike", ["BOB", "Bob", "\uff42\uff4f\uff42", "\uff22\uff2f\uff22",
                                       "\U0001d41b\U0001d428\U0001d41b", "bo\u24b7"])
def test_case_width_and_compatibility_forms_share_one_key(lookalike):
    """Fullwidth, mathematical bold and circled letters are ruled on and keyed as plain ones,
    so the registry finds "bob" taken."""
    assert check_name(lookalike) == lookalike
    assert name_key(lookalike) == name_key("bob") == "bob"


def test_ascii_keys_are_what_they_were_so_stored_history_matches():
    for name in ["Lobby", "DEV-ops", "r2_D2", "a.b"]:
        assert name_key(name) == name.casefold()


def test_keys_fold_precomposed_and_decomposed_letters_alike():
    assert name_key("Zoë") == name_key("ZOE\u0308") == name_key(unicodedata.normalize("NFD", "zoë"))


def test_reserved_names_are_reserved_in_any_width():
    with pytest.raises(InvalidNameError, match="reserved"):
        check_name("\uff53\uff45\uff52\uff56\uff45\uff52")


@pytest.mark.parametrize("room, reason", [
    ("#d\u0435v", "a room name cannot mix Cyrillic and Latin letters"),
    ("dev\u3164", "a room name cannot have invisible or control characters such as U+3164"),
    ("#dev.", 'a room name cannot end with "."'),
    ("#", "a room name cannot be empty"),
    ("#a b", "a room name cannot contain spaces"),
    ("#<x>", 'a room name cannot start with "<"'),
])
def test_lookalike_room_names_are_refused_like_names(room, reason):
    with pytest.raises(CommandError) as refused:
        check_room(room)
    assert str(refused.value) == reason


def test_room_names_fold_like_names():
    assert check_room("#\uff44\uff45\uff56") == "\uff44\uff45\uff56"
    assert name_key(check_room("#\uff24\uff25\uff36")) == name_key("dev")
    assert check_room("#разработка") == "разработка"


def test_script_of_groups_the_scripts_written_together():
    assert {script_of(ch) for ch in "漢字ひらがなカタカナー한글"} == {"Han"}
    assert {script_of(ch) for ch in "7_-.\u0301"} == {""}


@given(st.text(max_size=40))
def test_any_accepted_name_is_one_script_of_letters_digits_marks_and_joiners(text):
    try:
        name = check_name(text)
    except InvalidNameError:
        return
    folded = unicodedata.normalize("NFKC", name)
    assert unicodedata.category(folded[0])[0] in "LN" and folded[-1] not in NAME_JOINERS
    assert all(unicodedata.category(ch)[0] in "LNM" or ch in NAME_JOINERS for ch in folded)
    assert len({script_of(ch) for ch in folded} - {""}) <= 1


# -- skeletons: names in one script that look like another ---------------------------------

@pytest.mark.parametrize("name, lookalike", [
    ("ape", "\u0430\u0440\u0435"), ("cop", "\u0421\u041e\u0420"), ("ABO", "\u0391\u0392\u039f"),  # Cyrillic, Greek
    ("NOAH", "\u039d\u039f\u0391\u0397"), ("xena", "\u0445\u0435\u043f\u0430"), ("kyle", "\u03ba\u03c5\u0399\u03b5"),
    ("mike", "rnike"), ("will", "vvill"), ("dan", "clan"), ("lan", "Ian"), ("lan", "1an"), ("l0l", "IOI"),
    ("oscar", "0scar"), ("all", "alI"), ("m", "\u0433\u043f"),  # Cyrillic "гп" passes for "rn", so for "m"
])
def test_names_that_look_alike_share_a_skeleton(name, lookalike):
    assert check_name(lookalike) == lookalike, "the naming rules let it through"
    assert name_key(name) != name_key(lookalike)
    assert name_skeleton(name) == name_skeleton(lookalike)


@pytest.mark.parametrize("name, other", [("alice", "bob"), ("Zoë", "Zoe"), ("боб", "bob"), ("anna", "arma"),
                                         ("ivan", "iwan"), ("r2-d2", "r2_d2"), ("Ελένη", "eneh")])
def test_names_that_do_not_look_alike_keep_their_skeletons_apart(name, other):
    assert name_skeleton(name) != name_skeleton(other)


def test_every_prototype_is_a_small_latin_letter_and_no_letter_has_two():
    sources = "".join(PROTOTYPES.values())
    assert len(sources) == len(set(sources))
    assert all(len(letter) == 1 and "a" <= letter <= "z" and letter not in sources for letter in PROTOTYPES)
    assert all(name_key(source) == source for source in sources), "the table holds folded forms only"


@given(st.text(max_size=20))
def test_a_skeleton_is_the_same_for_a_name_its_key_and_any_case_of_it(text):
    """The cluster leases a name's skeleton from its key, and a person may show their name in
    any case: so the three must agree."""
    try:
        name = check_name(text)
    except InvalidNameError:
        return
    assert name_skeleton(name) == name_skeleton(name_key(name)) == name_skeleton(name.upper()) \
        == name_skeleton(name.swapcase())


# -- blank runs in text -------------------------------------------------------------------

@pytest.mark.parametrize("padding", [" " * 70, "\t" * 20, "\u3000" * 40, "\u3164" * 40, "\u2800" * 70,
                                     " \u200b" * 70, " \U000e0020" * 70, "\u00a0 " * 35])
def test_padding_of_any_blank_collapses_to_one_space(padding):
    assert clean_text(f"hi{padding}[14:03] <bob> psst") == "hi [14:03] <bob> psst"
    assert decode_line(f"hi{padding}x".encode()) == "hi x"


@pytest.mark.parametrize("text", ["a  b", "two  spaces", "\u3000\u3000", "\U0001f44d\ufe0f",
                                  "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"])
def test_short_runs_and_emoji_sequences_are_kept(text):
    assert MAX_BLANK_RUN == 2
    assert clean_text(text) == text


@given(st.text(alphabet=st.sampled_from(" \t\u3000\u3164\u200bab\ufe0f"), max_size=60))
def test_no_run_of_blanks_survives_cleaning(text):
    cleaned = clean_text(text)
    visible = "".join(ch for ch in cleaned if ch not in "\u200b\ufe0f")
    assert not re.search("[ \u3000\u3164]{3}", visible)
    assert clean_text(cleaned) == cleaned
