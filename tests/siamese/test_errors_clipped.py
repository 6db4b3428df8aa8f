"""Another program's error quoted in one of ours is cut at a word, not mid-word."""

from __future__ import annotations

from siamese.errors import clipped


def test_a_long_message_is_cut_at_a_word_with_a_mark() -> None:
    text = "HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded with url: /api"
    for limit in range(text.index(" ") + 5, len(text)):
        cut = clipped(text, limit)
        kept = cut.removesuffix(" ...")
        assert len(cut) <= limit and cut.endswith(" ...") and text.startswith(kept)
        assert text[len(kept)] in " ,;:([", f"cut inside a word at {limit}: {cut!r}"


def test_one_long_word_is_cut_where_it_must_be() -> None:
    assert clipped("x" * 100, 20) == "x" * 16 + " ..."


def test_a_short_message_is_kept_on_one_line() -> None:
    assert clipped("no such\n  table", 60) == "no such table"
