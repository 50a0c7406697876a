"""The Stash client's pure parts: bind address, image sniffing, timestamps in Stash's own offset."""
from datetime import datetime, timezone

import pytest

from fakestash import make_mp4, make_png
from lib.stash import base_url, image_type, time_ago


@pytest.mark.parametrize("host,url", [("0.0.0.0", "http://127.0.0.1:9999"), ("", "http://127.0.0.1:9999"),
                                      ("::", "http://[::1]:9999"), ("192.168.1.5", "http://192.168.1.5:9999"),
                                      ("fe80::1", "http://[fe80::1]:9999")])
def test_bind_host_becomes_a_reachable_address(host, url):
    assert base_url({"Scheme": "http", "Host": host, "Port": 9999}) == url


def test_images_are_recognised_by_their_bytes():
    assert image_type(make_png("x")) == "image/png"
    assert image_type(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert image_type(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"


def test_a_video_or_a_login_page_is_not_an_image():
    assert image_type(make_mp4("x")) is None
    assert image_type(b"<!DOCTYPE html><html>login</html>") is None
    assert image_type(b"") is None


def test_time_ago_is_written_in_stash_offset():
    now = datetime(2026, 11, 21, 8, 0, 0, tzinfo=timezone.utc)
    assert time_ago("2026-01-01T00:00:00+10:00", 24, now) == "2026-11-20T18:00:00+10:00"
    assert time_ago("2026-01-01T00:00:00-05:30", 1, now) == "2026-11-21T01:30:00-05:30"
    assert time_ago("2026-01-01T00:00:00Z", 0.5, now) == "2026-11-21T07:30:00Z"
