"""Another program's error quoted in one of ours stays one line: cut at a word near the
limit, else inside a long word such as a path."""

from __future__ import annotations

from siamese.errors import clipped

HTTP = "HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded with url: /api"


def test_a_long_message_is_cut_at_a_word_with_a_mark() -> None:
    cut = clipped(HTTP, 60)
    kept = cut.removesuffix(" ...")
    assert len(cut) <= 60 and cut.endswith(" ...") and HTTP.startswith(kept)
    assert HTTP[len(kept)] in " ,;:([" and kept.endswith(": Max")


def test_a_long_path_is_kept_rather_than_dropped_to_the_last_space() -> None:
    text = "Error: " + "/x" * 150
    cut = clipped(text, 200)
    assert len(cut) <= 200 and cut.endswith(" ...") and text.startswith(cut[:-4])
    assert len(cut) >= 190  # not "Error ..."


def test_one_long_word_is_cut_where_it_must_be() -> None:
    assert clipped("x" * 100, 20) == "x" * 16 + " ..."


def test_a_short_message_is_kept_on_one_line() -> None:
    assert clipped("no such\n  table", 60) == "no such table"
