"""Tests for lib/paths.py: the path_map rules between Stash and Plex paths."""
from __future__ import annotations

import re

import pytest

from lib.paths import Mapping, PathMapper, PathRule, PathRuleError, parse_path_map

PREFIX = "/data/videos/{rest} => /media/videos/{rest}"
BYYEAR = r"byyear: /stash/{studio}/{year:\d{4}}/{file} => /plex/{year}/{studio}/{file}"
WIN = r"win (i): D:\Videos\{rest} => /mnt/videos/{rest}"


def problems_of(text: str) -> list:
    with pytest.raises(PathRuleError) as info:
        parse_path_map(text)
    return info.value.problems


def only_problem(text: str) -> str:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    return problems[0]


# --- prefix swap ------------------------------------------------------------------------------

def test_prefix_rule_maps_stash_path_to_plex():
    assert parse_path_map(PREFIX).to_plex("/data/videos/A/b.mp4").path == "/media/videos/A/b.mp4"


def test_prefix_rule_maps_plex_path_to_stash():
    assert parse_path_map(PREFIX).to_stash("/media/videos/A/b.mp4").path == "/data/videos/A/b.mp4"


def test_mapping_names_the_rule_that_matched():
    mapper = parse_path_map(PREFIX)
    assert mapper.to_plex("/data/videos/x.mp4") == Mapping(
        "/media/videos/x.mp4", PathRule("rule 1", "/data/videos/{rest}", "/media/videos/{rest}", False))


def test_prefix_rule_does_not_match_a_sibling_folder_with_the_same_prefix():
    mapper = parse_path_map(PREFIX)
    assert mapper.to_plex("/data/videos2/x.mp4") == Mapping("/data/videos2/x.mp4", None)


# --- reordered segments -----------------------------------------------------------------------

def test_reordered_segments_map_stash_to_plex():
    mapped = parse_path_map(BYYEAR).to_plex("/stash/Brand X/2021/a.mp4")
    assert mapped.path == "/plex/2021/Brand X/a.mp4"
    assert mapped.rule.name == "byyear"


def test_reordered_segments_map_plex_to_stash():
    mapped = parse_path_map(BYYEAR).to_stash("/plex/2021/Brand X/a.mp4")
    assert mapped.path == "/stash/Brand X/2021/a.mp4"


def test_regex_given_on_stash_side_also_constrains_plex_side():
    mapper = parse_path_map(BYYEAR)
    assert mapper.to_stash("/plex/21/Brand/a.mp4") == Mapping("/plex/21/Brand/a.mp4", None)


def test_year_regex_rejects_a_non_year_folder():
    mapper = parse_path_map(BYYEAR)
    assert mapper.to_plex("/stash/Brand/extras/a.mp4") == Mapping("/stash/Brand/extras/a.mp4", None)


def test_last_placeholder_defaults_to_the_rest_of_the_path():
    mapped = parse_path_map(BYYEAR).to_plex("/stash/Brand/2021/sub/dir/a.mp4")
    assert mapped.path == "/plex/2021/Brand/sub/dir/a.mp4"


def test_explicit_dot_plus_regex_maps_deep_path_to_plex():
    mapper = parse_path_map("/s/{a}/{b} => /p/{b:.+}/{a}")
    assert mapper.to_plex("/s/A/x/y/z.mp4").path == "/p/x/y/z.mp4/A"


def test_explicit_dot_plus_regex_maps_deep_path_back_to_stash():
    mapper = parse_path_map("/s/{a}/{b} => /p/{b:.+}/{a}")
    assert mapper.to_stash("/p/x/y/z.mp4/A").path == "/s/A/x/y/z.mp4"


# --- Windows ----------------------------------------------------------------------------------

def test_windows_stash_path_with_nested_folders_maps_to_linux_plex():
    mapped = parse_path_map(WIN).to_plex("D:\\Videos\\Studio\\2021\\a b.mp4")
    assert mapped.path == "/mnt/videos/Studio/2021/a b.mp4"


def test_linux_plex_path_with_nested_folders_maps_to_windows_stash():
    mapped = parse_path_map(WIN).to_stash("/mnt/videos/Studio/2021/a b.mp4")
    assert mapped.path == "D:\\Videos\\Studio\\2021\\a b.mp4"


def test_windows_side_accepts_forward_slashes():
    assert parse_path_map(WIN).to_plex("D:/Videos/A/b.mp4").path == "/mnt/videos/A/b.mp4"


def test_case_different_windows_path_matches_with_i_option():
    mapped = parse_path_map(WIN).to_plex("d:\\VIDEOS\\Studio\\b.mp4")
    assert mapped.path == "/mnt/videos/Studio/b.mp4"
    assert mapped.rule.ignore_case is True


def test_case_different_windows_path_is_unchanged_without_i_option():
    mapper = parse_path_map(r"D:\Videos\{rest} => /mnt/videos/{rest}")
    assert mapper.to_plex("d:\\VIDEOS\\Studio\\b.mp4") == Mapping("d:\\VIDEOS\\Studio\\b.mp4", None)


def test_case_different_plex_path_matches_with_i_option():
    assert parse_path_map(WIN).to_stash("/MNT/Videos/A/b.mp4").path == "D:\\Videos\\A\\b.mp4"


@pytest.mark.parametrize("option", ["i", "icase", "ignorecase", "ignore-case", "I"])
def test_every_ignore_case_alias_enables_ignore_case(option):
    mapper = parse_path_map(f"r ({option}): /Data/{{rest}} => /plex/{{rest}}")
    assert mapper.rules[0].ignore_case is True
    assert mapper.to_plex("/DATA/a.mp4").path == "/plex/a.mp4"


def test_windows_default_segment_stops_at_either_separator():
    mapper = parse_path_map(r"D:\{studio}\{rest} => /p/{studio}/x/{rest}")
    assert mapper.to_plex("D:\\Studio/sub\\a.mp4").path == "/p/Studio/x/sub/a.mp4"


def test_linux_stash_maps_to_windows_plex_with_backslashes():
    mapper = parse_path_map(r"/data/{rest} => P:\media\{rest}")
    assert mapper.to_plex("/data/a/b c.mp4").path == "P:\\media\\a\\b c.mp4"


def test_windows_plex_path_maps_to_linux_stash():
    mapper = parse_path_map(r"/data/{rest} => P:\media\{rest}")
    assert mapper.to_stash("P:\\media\\a\\b c.mp4").path == "/data/a/b c.mp4"


def test_unc_side_is_a_windows_side():
    mapper = parse_path_map(r"\\nas\media\{rest} => /media/{rest}")
    assert mapper.to_stash("/media/a/b.mp4").path == "\\\\nas\\media\\a\\b.mp4"
    assert mapper.to_plex("\\\\nas\\media\\a\\b.mp4").path == "/media/a/b.mp4"


def test_drive_letter_with_forward_slashes_is_a_windows_side():
    mapper = parse_path_map("E:/lib/{rest} => /lib/{rest}")
    assert mapper.to_stash("/lib/a/b.mp4").path == "E:\\lib\\a\\b.mp4"


def test_mixed_separators_in_windows_template_render_as_backslashes():
    mapper = parse_path_map(r"D:\Videos/{rest} => /v/{rest}")
    assert mapper.to_stash("/v/a/b.mp4").path == "D:\\Videos\\a\\b.mp4"


def test_drive_letter_is_not_taken_for_a_rule_name():
    mapper = parse_path_map(r"C:\Videos\{rest} => /v/{rest}")
    assert mapper.rules[0].name == "rule 1"
    assert mapper.rules[0].stash == r"C:\Videos\{rest}"
    assert mapper.to_plex("C:\\Videos\\a.mp4").path == "/v/a.mp4"


def test_windows_sample_round_trip_check_ignores_separator_style():
    mapper = parse_path_map(WIN)
    assert mapper.check_round_trip(["D:/Videos/A/b.mp4"], side="stash") == []


# --- priority and identity --------------------------------------------------------------------

SPECIAL_FIRST = ("special: /data/special/{rest} => /plex/sp/{rest}\n"
                 "all: /data/{rest} => /plex/all/{rest}")


def test_first_matching_rule_wins():
    mapped = parse_path_map(SPECIAL_FIRST).to_plex("/data/special/x.mp4")
    assert mapped.path == "/plex/sp/x.mp4"
    assert mapped.rule.name == "special"


def test_later_rule_applies_when_earlier_rule_does_not_match():
    mapped = parse_path_map(SPECIAL_FIRST).to_plex("/data/other/x.mp4")
    assert mapped.path == "/plex/all/other/x.mp4"
    assert mapped.rule.name == "all"


def test_written_order_decides_between_overlapping_rules():
    text = "all: /data/{rest} => /plex/all/{rest}; special: /data/special/{rest} => /plex/sp/{rest}"
    assert parse_path_map(text).to_plex("/data/special/x.mp4").path == "/plex/all/special/x.mp4"


def test_rules_keep_written_order_and_names():
    mapper = parse_path_map(SPECIAL_FIRST + "\n" + PREFIX)
    assert [r.name for r in mapper.rules] == ["special", "all", "rule 3"]


def test_unmatched_stash_path_is_returned_unchanged_without_rule():
    assert parse_path_map(PREFIX).to_plex("/elsewhere/x.mp4") == Mapping("/elsewhere/x.mp4", None)


def test_unmatched_plex_path_is_returned_unchanged_without_rule():
    assert parse_path_map(PREFIX).to_stash("/elsewhere/x.mp4") == Mapping("/elsewhere/x.mp4", None)


@pytest.mark.parametrize("text", [None, "", "   ", "\n ; \n;;"])
def test_empty_setting_gives_identity_mapper(text):
    mapper = parse_path_map(text)
    assert mapper.rules == []
    assert mapper.to_plex("/a/b.mp4") == Mapping("/a/b.mp4", None)
    assert mapper.to_stash("/a/b.mp4") == Mapping("/a/b.mp4", None)


def test_mapper_without_rules_is_identity():
    assert PathMapper().to_plex("/x/y.mp4") == Mapping("/x/y.mp4", None)


# --- unusual characters -----------------------------------------------------------------------

ODD_NAMES = [
    "ünïcödé 日本語.mp4",
    "emoji 🎬🔥.mp4",
    "100% done.mp4",
    "a_b__c.mp4",
    "Tom & Jerry.mp4",
    "#1 hit.mp4",
    "it's \"quoted\".mp4",
    "  spaced  name .mp4",
    "a+b (1) [2] $x^y.mp4",
    "{braces}.mp4",
]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_unusual_characters_survive_prefix_rule_to_plex(name):
    assert parse_path_map(PREFIX).to_plex(f"/data/videos/d ir/{name}").path == \
        f"/media/videos/d ir/{name}"


@pytest.mark.parametrize("name", ODD_NAMES)
def test_unusual_characters_survive_windows_rule_to_stash(name):
    assert parse_path_map(WIN).to_stash(f"/mnt/videos/d ir/{name}").path == \
        f"D:\\Videos\\d ir\\{name}"


def test_unusual_characters_in_template_literals_match_literally():
    mapper = parse_path_map("/s/a+b (1) 100%/{rest} => /p/{rest}")
    assert mapper.to_plex("/s/a+b (1) 100%/x.mp4").path == "/p/x.mp4"
    assert mapper.to_plex("/s/aab (1) 100%/x.mp4") == Mapping("/s/aab (1) 100%/x.mp4", None)


def test_double_braces_are_literal_braces():
    mapper = parse_path_map("/data/{{x}}/{rest} => /p/{rest}")
    assert mapper.to_plex("/data/{x}/a.mp4").path == "/p/a.mp4"
    assert mapper.to_stash("/p/a.mp4").path == "/data/{x}/a.mp4"


def test_placeholder_inside_a_file_name():
    mapper = parse_path_map("/s/{dir}/{name}.mp4 => /p/{name} ({dir}).mp4")
    assert mapper.to_plex("/s/D/a b.mp4").path == "/p/a b (D).mp4"
    assert mapper.to_stash("/p/a b (D).mp4").path == "/s/D/a b.mp4"


# --- rule syntax ------------------------------------------------------------------------------

def test_semicolon_separates_rules():
    mapper = parse_path_map("/a/{r} => /b/{r}; /c/{r} => /d/{r}")
    assert [(r.stash, r.plex) for r in mapper.rules] == [("/a/{r}", "/b/{r}"), ("/c/{r}", "/d/{r}")]


def test_escaped_semicolon_is_a_literal_semicolon():
    mapper = parse_path_map(r"/a\;b/{rest} => /p;q/{rest}".replace("p;q", r"p\;q"))
    assert len(mapper.rules) == 1
    assert mapper.to_plex("/a;b/x.mp4").path == "/p;q/x.mp4"


def test_unnamed_rules_are_numbered_by_position():
    mapper = parse_path_map("/a/{r} => /b/{r}\nnamed: /c/{r} => /d/{r}\n/e/{r} => /f/{r}")
    assert [r.name for r in mapper.rules] == ["rule 1", "named", "rule 3"]


def test_whitespace_around_arrow_and_at_both_ends_is_stripped():
    mapper = parse_path_map("   x.y-z_1 :  /a/{r}   =>   /b/{r}   ".replace(" :", ":"))
    assert mapper.rules == [PathRule("x.y-z_1", "/a/{r}", "/b/{r}", False)]


def test_rule_name_needs_whitespace_after_colon():
    mapper = parse_path_map("n:/a/{r} => /b/{r}")
    assert mapper.rules[0].name == "rule 1"
    assert mapper.rules[0].stash == "n:/a/{r}"


def test_placeholder_regex_with_colon_and_braces():
    mapper = parse_path_map(r"/s/{t:\d{2}:\d{2}}/{rest} => /p/{t}/{rest}")
    assert mapper.to_plex("/s/12:30/a.mp4").path == "/p/12:30/a.mp4"
    assert mapper.to_plex("/s/1230/a.mp4") == Mapping("/s/1230/a.mp4", None)


# --- errors -----------------------------------------------------------------------------------

def test_path_rule_error_is_a_value_error():
    assert issubclass(PathRuleError, ValueError)


def test_missing_arrow_is_reported_with_rule_name():
    assert only_problem("m: /a/{r} -> /b/{r}") == \
        "path_map rule 'm': missing '=>' between the Stash and the Plex template"


def test_second_arrow_is_reported():
    assert only_problem("m: /a/{r} => /b/{r} => /c/{r}").startswith(
        "path_map rule 'm': more than one '=>'")


def test_empty_stash_side_is_reported():
    assert only_problem("m: => /b") == "path_map rule 'm': empty stash side"


def test_empty_plex_side_is_reported():
    assert only_problem("/a/b =>") == "path_map rule 'rule 1': empty plex side"


def test_unclosed_brace_is_reported():
    assert only_problem("m: /a/{r => /b/{r}") == \
        "path_map rule 'm': unbalanced brace: '{' at position 4 is never closed"


def test_stray_closing_brace_is_reported():
    assert only_problem("m: /a/{r} => /b}/{r}") == \
        "path_map rule 'm': unbalanced brace: stray '}' at position 3 of the plex side"


def test_bad_placeholder_name_is_reported():
    assert only_problem("m: /a/{1st} => /b/{r}").startswith(
        "path_map rule 'm': bad placeholder name '1st' in {1st} on the stash side")


def test_empty_placeholder_is_a_bad_placeholder_name():
    assert only_problem("m: /a/{} => /b/{r}").startswith(
        "path_map rule 'm': bad placeholder name '' in {} on the stash side")


def test_invalid_regex_is_reported_with_re_message():
    problem = only_problem("m: /a/{r:[a-} => /b/{r}")
    try:
        re.compile("[a-")
    except re.error as exc:
        expected = str(exc)
    assert problem == f"path_map rule 'm': invalid regex '[a-' for {{r}}: {expected}"


def test_global_inline_flag_in_placeholder_regex_is_reported():
    assert only_problem("m: /a/{r:(?i)x} => /b/{r}") == (
        "path_map rule 'm': global inline flag in the regex of {r} ('(?i)x'); use the rule "
        "option (i) or a scoped group such as (?i:...)")


def test_misplaced_inline_flag_in_placeholder_regex_is_reported():
    assert only_problem("m: /a/{r:x(?i)} => /b/{r}").startswith("path_map rule 'm': ")


def test_scoped_inline_flag_in_placeholder_regex_is_allowed():
    mapper = parse_path_map("m: /a/{r:(?i:x)y} => /b/{r}")
    assert mapper.to_plex("/a/Xy").path == "/b/Xy"
    assert mapper.to_plex("/a/XY") == Mapping("/a/XY", None)


def test_named_group_inside_placeholder_regex_is_reported():
    assert only_problem("m: /a/{r:(?P<x>.+)} => /b/{r}").startswith(
        "path_map rule 'm': named group inside the regex of {r} ('(?P<x>.+)')")


def test_backreference_inside_placeholder_regex_is_reported():
    assert only_problem(r"m: /a/{r:(a)\1} => /b/{r}").startswith(
        "path_map rule 'm': backreference inside the regex of {r}")


def test_unnamed_group_inside_placeholder_regex_is_allowed():
    mapper = parse_path_map("m: /a/{r:(x|y)z} => /b/{r}")
    assert mapper.to_plex("/a/yz").path == "/b/yz"


def test_placeholder_on_one_side_only_is_reported():
    assert only_problem("m: /a/{r}/{x} => /b/{r}") == (
        "path_map rule 'm': placeholder {x} is on the stash side only "
        "(every placeholder must appear once on each side)")


def test_placeholder_used_twice_on_a_side_is_reported():
    assert only_problem("m: /a/{r} => /b/{r}/{r}") == \
        "path_map rule 'm': placeholder {r} used twice on the plex side"


def test_conflicting_regexes_are_reported():
    assert only_problem(r"m: /a/{y:\d{4}} => /b/{y:\d+}") == (
        r"path_map rule 'm': conflicting regexes for {y}: '\d{4}' on the stash side, "
        r"'\d+' on the plex side")


def test_identical_regexes_on_both_sides_are_accepted():
    mapper = parse_path_map(r"m: /a/{y:\d{4}} => /b/{y:\d{4}}")
    assert mapper.to_plex("/a/2021").path == "/b/2021"


def test_unknown_option_is_reported():
    assert only_problem("m (i, fast): /a/{r} => /b/{r}") == (
        "path_map rule 'm': unknown option 'fast' (known: i, icase, ignorecase, ignore-case)")


def test_duplicate_rule_name_is_reported():
    assert only_problem("m: /a/{r} => /b/{r}\nm: /c/{r} => /d/{r}") == \
        "path_map rule 'm': duplicate rule name (entries 1 and 2 are both called 'm')"


def test_parse_collects_problems_of_every_rule():
    text = ("a: /x/{r => /y\n"
            "b (zz): /a/{r} => /b/{r}/{r}\n"
            "/ok/{r} => /fine/{r}\n"
            "no arrow here")
    with pytest.raises(PathRuleError) as info:
        parse_path_map(text)
    problems = info.value.problems
    assert [p.split(":")[0] for p in problems] == [
        "path_map rule 'a'", "path_map rule 'b'", "path_map rule 'b'", "path_map rule 'rule 4'"]
    assert str(info.value) == "; ".join(problems)


def test_every_problem_is_one_line_starting_with_rule_name():
    text = ("a: /x/{r => /y\nb (zz): /a/{r} => /b/{q}\nc: /a/{r:(} => /b/{r}\n"
            "d: => \ne: /a/{1} => /b\n")
    for problem in problems_of(text):
        assert "\n" not in problem
        assert re.match(r"path_map rule '[a-e]': \S", problem), problem


# --- round trip -------------------------------------------------------------------------------

def test_default_regexes_without_round_trip_raise_at_mapping_time():
    mapper = parse_path_map("swap: /s/{a}/{b} => /p/{b}/{a}")
    with pytest.raises(PathRuleError) as info:
        mapper.to_plex("/s/A/x/y.mp4")
    assert str(info.value) == (
        "path_map rule 'swap': no round trip for Stash path '/s/A/x/y.mp4': it maps to "
        "'/p/x/y.mp4/A', which maps back to '/s/y.mp4/A/x'; give the placeholder an explicit "
        "regex such as {rest:.+}")


def test_round_trip_failure_is_raised_in_to_stash_direction_too():
    mapper = parse_path_map("swap: /s/{a}/{b} => /p/{b}/{a}")
    with pytest.raises(PathRuleError, match=r"^path_map rule 'swap': no round trip for Plex path"):
        mapper.to_stash("/p/x/y.mp4/A")


def test_single_segment_paths_round_trip_with_default_regexes():
    mapper = parse_path_map("swap: /s/{a}/{b} => /p/{b}/{a}")
    assert mapper.to_plex("/s/A/y.mp4").path == "/p/y.mp4/A"


def test_round_trip_failure_is_one_line_even_for_a_path_with_newline():
    mapper = parse_path_map("swap: /s/{a}/{b} => /p/{b}/{a}")
    with pytest.raises(PathRuleError) as info:
        mapper.to_plex("/s/A/x\n/y.mp4")
    assert "\n" not in str(info.value)
    assert "'/s/A/x\\n/y.mp4'" in str(info.value)


def test_check_round_trip_reports_failing_plex_sample():
    mapper = parse_path_map("swap: /s/{a}/{b} => /p/{b}/{a}")
    problems = mapper.check_round_trip(["/p/y.mp4/A", "/p/x/y.mp4/A"])
    assert len(problems) == 1
    assert problems[0].startswith(
        "path_map rule 'swap': no round trip for Plex path '/p/x/y.mp4/A'")


def test_check_round_trip_returns_no_problems_for_good_samples():
    mapper = parse_path_map(BYYEAR + "\n" + WIN)
    samples = ["/plex/2021/B/a.mp4", "/mnt/videos/A/b.mp4", "/unmapped/x.mp4"]
    assert mapper.check_round_trip(samples, side="plex") == []


def test_check_round_trip_reports_failing_stash_sample():
    mapper = parse_path_map("swap: /s/{a}/{b} => /p/{b}/{a}")
    problems = mapper.check_round_trip(["/s/A/x/y.mp4"], side="stash")
    assert problems == [
        "path_map rule 'swap': no round trip for Stash path '/s/A/x/y.mp4': it maps to "
        "'/p/x/y.mp4/A', which maps back to '/s/y.mp4/A/x'; give the placeholder an explicit "
        "regex such as {rest:.+}"]


def test_check_round_trip_reports_a_rule_shadowed_by_an_earlier_one():
    mapper = parse_path_map("a: /stash/{rest} => /plex/{rest}\n"
                            "b: /stash2/{rest} => /plex/b/{rest}")
    problems = mapper.check_round_trip(["/stash2/x.mp4"], side="stash")
    assert problems == [
        "path_map rule 'a': no round trip for stash path '/stash2/x.mp4': rule 'b' maps it to "
        "plex path '/plex/b/x.mp4', which rule 'a' maps to '/stash/b/x.mp4' (check the rule "
        "order, or give the placeholder an explicit regex such as {rest:.+})"]


def test_check_round_trip_reports_unmapped_sample_that_maps_on_the_way_back():
    mapper = parse_path_map("a: /data/{rest} => /plex/{rest}")
    problems = mapper.check_round_trip(["/data/x.mp4"], side="plex")
    assert len(problems) == 1
    assert problems[0].startswith(
        "path_map rule 'a': no round trip for plex path '/data/x.mp4': no rule maps it to stash "
        "path '/data/x.mp4', which rule 'a' maps to '/plex/x.mp4'")


def test_check_round_trip_rejects_unknown_side():
    with pytest.raises(ValueError):
        parse_path_map(PREFIX).check_round_trip(["/x"], side="both")


# --- same_file --------------------------------------------------------------------------------

def test_same_file_is_true_for_equal_paths_without_rule():
    assert PathMapper().same_file("/a/B.mp4", "/a/B.mp4", None) is True


def test_same_file_is_false_for_case_difference_without_rule():
    assert PathMapper().same_file("/a/B.mp4", "/a/b.mp4", None) is False


def test_same_file_ignores_case_for_an_ignore_case_rule():
    mapper = parse_path_map(WIN)
    assert mapper.same_file("/mnt/videos/B.mp4", "/MNT/videos/b.mp4", mapper.rules[0]) is True


def test_same_file_respects_case_for_a_case_sensitive_rule():
    mapper = parse_path_map(PREFIX)
    assert mapper.same_file("/a/B.mp4", "/a/b.mp4", mapper.rules[0]) is False


# --- peer lessons (Stash2Plex path_mapper table, in our syntax) -------------------------------

def test_peer_prefix_capture_round_trips():
    mapper = parse_path_map("/stash/media/{rest} => /plex/media/{rest}")
    assert mapper.to_stash("/plex/media/a/b.mp4").path == "/stash/media/a/b.mp4"
    assert mapper.to_plex("/stash/media/a/b.mp4").path == "/plex/media/a/b.mp4"


def test_peer_swapped_captures_map_plex_to_stash():
    mapper = parse_path_map("/s/{rest}/{x} => /p/{x}/{rest}")
    assert mapper.to_stash("/p/X/y.mp4").path == "/s/y.mp4/X"


def test_peer_swapped_captures_map_back_to_the_original_plex_path():
    mapper = parse_path_map("/s/{rest}/{x} => /p/{x}/{rest}")
    assert mapper.to_plex("/s/y.mp4/X").path == "/p/X/y.mp4"


def test_peer_disk_pattern_with_digit_escape_maps_both_ways():
    mapper = parse_path_map(r"/mnt/{disk:disk\d+}/media/{rest} => /plex/{disk}/{rest}")
    assert mapper.to_plex("/mnt/disk3/media/a/b.mp4").path == "/plex/disk3/a/b.mp4"
    assert mapper.to_stash("/plex/disk12/a/b.mp4").path == "/mnt/disk12/media/a/b.mp4"


def test_peer_disk_pattern_does_not_match_other_folders():
    mapper = parse_path_map(r"/mnt/{disk:disk\d+}/media/{rest} => /plex/{disk}/{rest}")
    assert mapper.to_stash("/plex/cache/a.mp4") == Mapping("/plex/cache/a.mp4", None)


def test_peer_dropping_a_captured_part_is_rejected():
    assert only_problem(r"/mnt/{disk:disk\d+}/media/{rest} => /stash/{rest}").startswith(
        "path_map rule 'rule 1': placeholder {disk} is on the stash side only")


def test_peer_named_group_pattern_is_rejected():
    assert only_problem("/s/{rest} => /p/{rest:(?P<rest>.*)}").startswith(
        "path_map rule 'rule 1': named group inside the regex of {rest}")


def test_peer_dotted_name_with_literal_extension_round_trips():
    mapper = parse_path_map("/s/{name:.+}.mkv => /p/{name}.mkv")
    assert mapper.to_stash("/p/d/a.b.mkv").path == "/s/d/a.b.mkv"
    assert mapper.to_plex("/s/d/a.b.mkv").path == "/p/d/a.b.mkv"


def test_peer_literal_dot_does_not_match_any_character():
    mapper = parse_path_map("/s/{name:.+}.mkv => /p/{name}.mkv")
    assert mapper.to_stash("/p/d/a.bXmkv") == Mapping("/p/d/a.bXmkv", None)


def test_peer_replacement_syntax_in_template_is_plain_literal_text():
    mapper = parse_path_map("/s/$1 <1>/{rest} => /p/{rest}")
    assert mapper.to_stash("/p/a.mp4").path == "/s/$1 <1>/a.mp4"


# --- cost -------------------------------------------------------------------------------------

def test_mapping_does_not_compile_regexes(monkeypatch):
    mapper = parse_path_map(BYYEAR + "\n" + WIN + "\n" + PREFIX)

    def no_compile(*args, **kwargs):
        raise AssertionError("regex compiled while mapping")

    monkeypatch.setattr(re, "compile", no_compile)
    monkeypatch.setattr(re, "_compile", no_compile)
    assert mapper.to_plex("/data/videos/a.mp4").path == "/media/videos/a.mp4"
    assert mapper.to_stash("/mnt/videos/a.mp4").path == "D:\\Videos\\a.mp4"
