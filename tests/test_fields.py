"""Field mapping: sanitising, partial dates, and the one edit planned from desired vs current."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lib.fields import LIMITS, clean_line, clean_text, desired_state, plan_edit, plex_date  # noqa: E402
from lib.settings import DEFAULTS  # noqa: E402


def settings(**over):
    s = dict(DEFAULTS)
    s.update(over)
    return s


SCENE = {"title": "A\x00 B\x1f\nC", "details": "para one\r\n\r\n\r\npara\x07 two", "date": "2020-07",
         "studio": {"name": "Studio & Co"}, "performers": [{"name": "Ann"}, {"name": "ann"}, {"name": "Bo, Jr"}],
         "tags": [{"name": "t1"}, {"name": "t2"}], "files": [{"path": "/s/x.mp4", "basename": "x.mp4"}]}


def test_clean_line_drops_controls_and_folds_breaks():
    assert clean_line("A\x00 B\x1f\nC\x7f\u0085", 255) == "A B C"


def test_clean_text_keeps_paragraphs():
    assert clean_text("para one\r\n\r\n\r\npara\x07 two", 100) == "para one\n\npara two"


def test_long_values_are_capped_with_ellipsis():
    value = clean_line("x" * 1000, LIMITS["title"])
    assert len(value) == LIMITS["title"] and value.endswith("…")


def test_partial_dates_are_padded_and_year_kept():
    assert plex_date("2019") == ("2019-01-01", 2019)
    assert plex_date("2020-07") == ("2020-07-01", 2020)
    assert plex_date("2020-02-30") is None


def test_desired_state_dedups_performers_case_insensitively():
    assert desired_state(SCENE, settings())["actor"] == ["Ann", "Bo, Jr"]


def test_disabled_fields_are_absent():
    off = {k: False for k in DEFAULTS if k.startswith("sync_")}
    assert desired_state(SCENE, settings(**off)) == {}


def test_untitled_scene_gets_file_name_title():
    assert desired_state(dict(SCENE, title=""), settings())["title"] == "x"


def test_plan_replaces_tags_and_removes_extras_with_locks():
    current = {"genre": ["old", "t1"]}
    params, pushed = plan_edit({"genre": ["t1", "t2"]}, current, set(), {}, settings())
    assert params == {"genre[0].tag.tag": "t1", "genre[1].tag.tag": "t2", "genre[].tag.tag-": "old",
                      "genre.locked": 1}
    assert pushed == {"genre": ["t1", "t2"]}


def test_plan_is_empty_when_plex_already_matches_and_is_locked():
    desired = {"title": "T", "genre": ["a", "b"]}
    params, _ = plan_edit(desired, {"title": "T", "genre": ["b", "a"]}, {"title", "genre"}, {}, settings())
    assert params == {}


def test_plan_locks_an_unlocked_correct_field():
    params, _ = plan_edit({"title": "T"}, {"title": "T"}, set(), {}, settings())
    assert params == {"title.locked": 1}


def test_lock_fields_off_sends_no_locks():
    params, _ = plan_edit({"title": "T2"}, {"title": "T"}, set(), {}, settings(lock_fields=False))
    assert params == {"title.value": "T2"}


def test_removed_tag_with_comma_is_quoted_for_double_decoding():
    params, _ = plan_edit({"actor": []}, {"actor": ["Bo, Jr"]}, {"actor"}, {}, settings())
    assert params["actor[].tag.tag-"] == "Bo%2C%20Jr"


def test_preserve_keeps_plex_tags_and_adds_stash_ones():
    params, pushed = plan_edit({"genre": ["t1"]}, {"genre": ["mine"]}, {"genre"}, {}, settings(preserve_plex_edits=True))
    assert pushed["genre"] == ["mine", "t1"] and "genre[].tag.tag-" not in params


def test_preserve_leaves_a_field_edited_in_plex():
    params, _ = plan_edit({"title": "Stash"}, {"title": "Mine"}, {"title"}, {"title": "Old"},
                          settings(preserve_plex_edits=True))
    assert params == {}


def test_without_preserve_plex_edit_is_overwritten():
    params, _ = plan_edit({"title": "Stash"}, {"title": "Mine"}, {"title"}, {"title": "Old"}, settings())
    assert params == {"title.value": "Stash", "title.locked": 1}
