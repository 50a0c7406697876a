"""The provider's settings (lib/provider_config.py): defaults, every name's effect, one-line errors,
the config file, and docs/provider.md agreeing with the table."""
import os
import re

import pytest

from lib import log
from lib.provider_config import OPTIONS, ConfigError, load, read_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs", "provider.md")


def problems_of(environ):
    with pytest.raises(ConfigError) as caught:
        load(environ, "/base")
    return caught.value.problems


def test_defaults():
    config = load({}, "/base")
    assert (config.stash_url, config.stash_api_key, config.stash_timeout) == ("http://localhost:9999", "", 10.0)
    assert (config.plex_url, config.plex_token, config.plex_libraries, config.plex_roots) == ("", "", (), ())
    assert config.path_map.rules == [] and (config.host, config.port, config.public_url) == ("0.0.0.0", 8000, "")
    assert (config.threads, config.cache_seconds, config.gap_schedule) == (32, 300.0, "manual")
    assert (config.data_dir, config.log_level, config.gap_interval) == ("/base/data", "info", None)


def test_docs_table_lists_every_setting_with_its_default():
    with open(DOCS, encoding="utf-8") as f:
        docs = f.read()
    assert docs.startswith("## The Plex metadata provider\n")
    rows = dict(re.findall(r"^\| `(PLEXSYNC_[A-Z_]+)` \| ([^|]+) \|", docs, re.M))
    assert set(rows) == {o.name for o in OPTIONS}
    for option in OPTIONS:
        shown = rows[option.name].strip()
        assert shown == (f"`{option.default}`" if option.default else "(empty)"), option.name
        assert option.description in docs, option.name


CHANGES = {  # name -> (value, attribute, expected) : every setting changes the configuration
    "PLEXSYNC_STASH_URL": ("https://stash.lan:9999/", "stash_url", "https://stash.lan:9999"),
    "PLEXSYNC_STASH_API_KEY": ("key-1234", "stash_api_key", "key-1234"),
    "PLEXSYNC_STASH_TIMEOUT": ("2.5", "stash_timeout", 2.5),
    "PLEXSYNC_PLEX_URL": ("http://plex:32400", "plex_url", "http://plex:32400"),
    "PLEXSYNC_PLEX_TOKEN": ("tok-1234", "plex_token", "tok-1234"),
    "PLEXSYNC_PLEX_LIBRARIES": ("Movies, Stash ,", "plex_libraries", ("Movies", "Stash")),
    "PLEXSYNC_PLEX_ROOTS": ("/a; D:\\Media\n\\\\nas\\share;", "plex_roots", ("/a", "D:\\Media", "\\\\nas\\share")),
    "PLEXSYNC_HOST": ("127.0.0.1", "host", "127.0.0.1"),
    "PLEXSYNC_PORT": ("9100", "port", 9100),
    "PLEXSYNC_PUBLIC_URL": ("http://10.0.0.2:9100/p/", "public_url", "http://10.0.0.2:9100/p"),
    "PLEXSYNC_THREADS": ("64", "threads", 64),
    "PLEXSYNC_CACHE_SECONDS": ("0", "cache_seconds", 0.0),
    "PLEXSYNC_GAP_SCHEDULE": ("Weekly", "gap_schedule", "weekly"),
    "PLEXSYNC_DATA_DIR": ("/var/lib/plexsync", "data_dir", "/var/lib/plexsync"),
    "PLEXSYNC_LOG_LEVEL": ("DEBUG", "log_level", "debug"),
}
WITH_PLEX = {"PLEXSYNC_PLEX_URL": "http://plex:32400", "PLEXSYNC_PLEX_TOKEN": "tok-1234"}


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_every_setting_changes_the_configuration(name):
    value, attribute, expected = CHANGES[name]
    config = load(dict(WITH_PLEX, **{name: value}), "/base")
    assert getattr(config, attribute) == expected
    assert getattr(load(WITH_PLEX, "/base"), attribute) != expected or name in WITH_PLEX


def test_path_map_uses_the_plugins_syntax():
    config = load({"PLEXSYNC_PATH_MAP": "media: /stash/{rest} => /plex/{rest}; win (i): D:\\V\\{r} => /v/{r}"}, "/b")
    assert [r.name for r in config.path_map.rules] == ["media", "win"]
    assert config.path_map.to_stash("/plex/a/b.mp4").path == "/stash/a/b.mp4"


def test_with_plex_the_default_schedule_is_daily():
    assert load(WITH_PLEX, "/b").gap_schedule == "daily" and load(WITH_PLEX, "/b").gap_interval == 86400


@pytest.mark.parametrize("environ, name", [
    ({"PLEXSYNC_STASH_URL": "stash:9999"}, "PLEXSYNC_STASH_URL"),
    ({"PLEXSYNC_STASH_URL": "http://stash:9999/graphql"}, "PLEXSYNC_STASH_URL"),
    ({"PLEXSYNC_STASH_URL": "http://user:pw@stash:9999"}, "PLEXSYNC_STASH_URL"),
    ({"PLEXSYNC_STASH_URL": "http://stash:99999"}, "PLEXSYNC_STASH_URL"),
    ({"PLEXSYNC_STASH_TIMEOUT": "0"}, "PLEXSYNC_STASH_TIMEOUT"),
    ({"PLEXSYNC_STASH_TIMEOUT": "nan"}, "PLEXSYNC_STASH_TIMEOUT"),
    ({"PLEXSYNC_PLEX_URL": "http://plex:32400"}, "PLEXSYNC_PLEX_TOKEN"),
    ({"PLEXSYNC_PLEX_TOKEN": "t"}, "PLEXSYNC_PLEX_TOKEN"),
    ({"PLEXSYNC_PLEX_LIBRARIES": "Movies"}, "PLEXSYNC_PLEX_LIBRARIES"),
    ({"PLEXSYNC_PLEX_ROOTS": "relative/folder"}, "PLEXSYNC_PLEX_ROOTS"),
    ({"PLEXSYNC_PATH_MAP": "x: /a/{p} => /b/"}, "PLEXSYNC_PATH_MAP"),
    ({"PLEXSYNC_PORT": "0"}, "PLEXSYNC_PORT"),
    ({"PLEXSYNC_PORT": "80.5"}, "PLEXSYNC_PORT"),
    ({"PLEXSYNC_PUBLIC_URL": "192.168.1.2:8000"}, "PLEXSYNC_PUBLIC_URL"),
    ({"PLEXSYNC_THREADS": "0"}, "PLEXSYNC_THREADS"),
    ({"PLEXSYNC_CACHE_SECONDS": "-1"}, "PLEXSYNC_CACHE_SECONDS"),
    ({"PLEXSYNC_GAP_SCHEDULE": "monthly"}, "PLEXSYNC_GAP_SCHEDULE"),
    ({"PLEXSYNC_GAP_SCHEDULE": "daily"}, "PLEXSYNC_GAP_SCHEDULE"),
    ({"PLEXSYNC_LOG_LEVEL": "loud"}, "PLEXSYNC_LOG_LEVEL"),
    ({"PLEXSYNC_TYPO": "1"}, "PLEXSYNC_TYPO"),
])
def test_a_bad_value_is_one_line_naming_its_setting(environ, name):
    problems = problems_of(environ)
    assert len(problems) == 1 and problems[0].startswith(name + ": ") and "\n" not in problems[0], problems


def test_every_problem_is_reported_at_once():
    problems = problems_of({"PLEXSYNC_PORT": "x", "PLEXSYNC_THREADS": "x", "PLEXSYNC_LOG_LEVEL": "x"})
    assert sorted(p.split(":")[0] for p in problems) == ["PLEXSYNC_LOG_LEVEL", "PLEXSYNC_PORT", "PLEXSYNC_THREADS"]


def test_secrets_are_registered_and_never_echoed():
    problems = problems_of({"PLEXSYNC_STASH_API_KEY": "sekrit-4711", "PLEXSYNC_STASH_URL": "ftp://sekrit-4711"})
    assert "sekrit-4711" not in " ".join(problems)
    assert log.redact("key sekrit-4711") == "key ***"


def test_the_config_file_sets_names_and_the_environment_wins(tmp_path):
    path = tmp_path / "provider.env"
    path.write_text("# comment\n\nPLEXSYNC_PORT = 9200\nPLEXSYNC_THREADS=8\nPLEXSYNC_PATH_MAP=a: /x/{r} => /y/{r}\n",
                    encoding="utf-8")
    config = load({"PLEXSYNC_CONFIG": str(path), "PLEXSYNC_THREADS": "4"}, "/b")
    assert (config.port, config.threads, config.path_map.rules[0].name) == (9200, 4, "a")


def test_a_broken_config_file_is_one_line(tmp_path):
    path = tmp_path / "provider.env"
    path.write_text("PLEXSYNC_PORT=1\njust words\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        read_file(str(path))
    assert caught.value.problems == [f"PLEXSYNC_CONFIG: line 2 of {path} is not NAME=value"]
    problems = problems_of({"PLEXSYNC_CONFIG": str(tmp_path / "missing.env")})
    assert problems[0].startswith("PLEXSYNC_CONFIG: cannot read")
    path.write_text("PLEXSYNC_PROT=1\n", encoding="utf-8")
    assert problems_of({"PLEXSYNC_CONFIG": str(path)})[0].startswith("PLEXSYNC_PROT: unknown setting")
