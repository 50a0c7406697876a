"""Settings: one table (lib/settings.py) agrees with plexsync.yml and README.md; validation; queries."""
import os
import re

import graphql
import pytest

from fakestash import REAL_SCHEMA_DIR, load_schema
from harness import ROOT
from lib import stash
from lib.settings import DEFAULTS, SETTINGS, SettingsError, load


def read(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


def yml_settings():
    text = read("plexsync.yml")
    block = text[text.index("\nsettings:\n"):]
    return re.findall(r"^  ([a-z_]+):\n    displayName: \"(.*)\"\n    description: .*\n    type: (\w+)$", block, re.M)


def test_manifest_declares_exactly_the_settings_table():
    assert yml_settings() == [(s.name, s.display, s.type) for s in SETTINGS]


def test_manifest_uses_only_keys_stash_accepts():
    # Stash decodes the yml strictly: an unknown top-level key hides the plugin (§1)
    keys = re.findall(r"^([a-zA-Z_]+):", read("plexsync.yml"), re.M)
    assert set(keys) <= {"name", "description", "version", "url", "exec", "interface", "errLog", "tasks",
                         "hooks", "settings", "ui"}


def test_readme_documents_every_setting_with_its_default():
    readme = read("README.md")
    for s in SETTINGS:
        default = str(s.default).lower() if isinstance(s.default, bool) else str(s.default)
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{s.name}` |")), None)
        assert row is not None, s.name
        assert (f"`{default}`" in row) if default else "(empty)" in row


def test_every_setting_name_is_read_by_the_code():
    code = "".join(read(os.path.join("lib", f)) for f in os.listdir(os.path.join(ROOT, "lib")) if f.endswith(".py"))
    code = code.replace(read(os.path.join("lib", "settings.py")), "")  # the table itself does not count
    for s in SETTINGS:
        assert f'"{s.name}"' in code or s.name in ("plex_libraries", "path_map", "recovery_rates"), s.name


def test_unset_settings_take_their_defaults():
    settings = load({"plex_url": "http://plex:32400/", "plex_token": "t"})
    assert {k: settings[k] for k in DEFAULTS if k not in ("plex_url", "plex_token")} == \
        {k: v for k, v in DEFAULTS.items() if k not in ("plex_url", "plex_token")}
    assert settings["plex_url"] == "http://plex:32400"


def test_values_are_coerced_from_stash_json_types():
    settings = load({"plex_url": "http://p", "plex_token": "t", "max_retries": 3.0, "lock_fields": "false",
                     "plex_read_timeout": "12.5", "plex_libraries": " A , B ,"})
    assert (settings["max_retries"], settings["lock_fields"], settings["plex_read_timeout"]) == (3, False, 12.5)
    assert settings.libraries == ["A", "B"]


def test_every_problem_is_one_line_naming_its_setting():
    with pytest.raises(SettingsError) as err:
        load({"plex_url": "plex", "max_retries": True, "sync_title": "maybe", "path_map": "x: /a/{y} => /b"})
    problems = err.value.problems
    assert len(problems) == 5 and all("\n" not in p for p in problems)
    for needle in ("plex_url", "plex_token", "max_retries", "sync_title", "path_map rule 'x'"):
        assert any(needle in p for p in problems), needle


@pytest.mark.parametrize("source", ["real", "minimal"])
def test_every_query_the_plugin_sends_validates_against_the_schema(source):
    if source == "real" and not REAL_SCHEMA_DIR.is_dir():
        pytest.skip(f"no real Stash schema at {REAL_SCHEMA_DIR}")
    schema, _ = load_schema(source)
    for query in stash.QUERIES:
        assert graphql.validate(schema, graphql.parse(query)) == [], query
