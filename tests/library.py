"""A generated Stash + Plex library for tests, the sandbox and benchmarks.

``build_library(stash, plex, n)`` fills a :class:`fakestash.FakeStash` with studios,
performers, tags and ``n`` scenes, and a ``FakePlex`` (tests/fakeplex.py) with one
movie section holding the same files under the mapped root, in Plex's own default
state (title = file name without extension, no other metadata).

Deterministic for a given ``seed``. With ``hostile=True`` a bounded set of special
scenes (``Library.special``: label -> scene id) mixes in the inputs that break
naive sync code: many scripts, emoji ZWJ sequences, control characters, ``%``/``_``
in paths (SQLite LIKE wildcards, reference §10.2), paths differing only in case,
duplicate basenames, partial dates (§10.2 Values), 150 tags, huge fields, names with
commas. All other scenes are plain but unique, so 100,000 scenes build in seconds.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from fakestash import GENDERS, FakeStash

__all__ = ["Library", "build_library"]

SECTION_KEY = 1
SECTION_TITLE = "Stash Scenes"


@dataclass
class Library:
    scene_ids: List[str]
    in_plex: Dict[str, str]          # scene id -> Plex ratingKey
    missing: List[str]               # scene ids Plex has not indexed
    path_map: str                    # "media: /stash/media/{rest} => /plex/media/{rest}"
    stash_root: str
    plex_root: str
    stash: FakeStash = field(repr=False)
    special: Dict[str, str] = field(default_factory=dict)   # hostile label -> scene id
    studio_ids: List[str] = field(default_factory=list)
    performer_ids: List[str] = field(default_factory=list)
    tag_ids: List[str] = field(default_factory=list)

    def stash_paths(self, scene_id: str) -> List[str]:
        return [f["path"] for f in self.stash.scenes[str(scene_id)]["files"]]

    def stash_path(self, scene_id: str) -> str:
        """First (primary) file path of the scene as Stash reports it."""
        return self.stash_paths(scene_id)[0]

    def to_plex(self, stash_path: str) -> str:
        if not stash_path.startswith(self.stash_root + "/"):
            raise ValueError(f"{stash_path!r} is not under {self.stash_root!r}")
        return self.plex_root + stash_path[len(self.stash_root):]

    def plex_path(self, scene_id: str) -> str:
        """The primary file's path as Plex sees it (path_map applied)."""
        return self.to_plex(self.stash_path(scene_id))

    def plex_paths(self, scene_id: str) -> List[str]:
        return [self.to_plex(p) for p in self.stash_paths(scene_id)]


# --------------------------------------------------------------------------- word pools

_ADJ = ("Amber Bright Crimson Distant Electric Faded Golden Hidden Iron Jade Kind Lunar Midnight Neon Open "
        "Pale Quiet Rapid Silver Tender Urban Velvet Wild Young Zesty Blue Cold Dark Early Fresh").split()
_NOUN = ("Harbor Garden Signal Canyon River Summit Window Station Meadow Bridge Lantern Market Orchard Valley "
         "Tower Forest Island Desert Street Studio Echo Mirror Shadow Engine Circle Beacon Coast Field").split()
_FIRST = ("Alex Blair Casey Dana Eden Finley Gray Harper Indy Jules Kai Logan Morgan Noor Oakley Parker Quinn "
          "Reese Sage Taylor Uma Val Wren Xen Yael Zion").split()
_LAST = ("Adams Brooks Carter Diaz Ellis Fox Garcia Hughes Ito Jensen Kim Lopez Moreau Novak Ortiz Patel "
         "Quist Rossi Silva Tanaka Ueda Varga Weber Xu Young Zeller").split()
_DETAILS = tuple(
    f"A {a.lower()} story about the {b.lower()} and the {c.lower()}; part {k}."
    for k, (a, b, c) in enumerate(zip(_ADJ, _NOUN, reversed(_NOUN)))
)

_HOSTILE_STUDIOS = ("A&B Studios #1", "Ünïcödé Stüdio", "東京スタジオ", 'O\'Brien "Quoted" Films',
                    "Doe, Jane Productions", "100% Pure_Films")
_HOSTILE_PERFORMERS = (("Doe, Jane", "FEMALE"), ("Smith, John Jr.", "MALE"), ("Zoë Ångström", "FEMALE"),
                       ("Ἀφροδίτη Παπαδοπούλου", "FEMALE"), ("Наталья Иванова", "FEMALE"), ("محمد علي", "MALE"),
                       ("יעל כהן", "FEMALE"), ("अनन्या शर्मा", "FEMALE"), ("สมศรี ใจดี", "FEMALE"), ("王芳", "FEMALE"),
                       ("김지수", "NON_BINARY"), ('O\'Neil "Nelly" Back\\slash', "TRANSGENDER_FEMALE"),
                       ("👩‍🎤 Star", None), ("100%_Real", "INTERSEX"))
_HOSTILE_TAGS = ("Drama, Romance", "100% Natural", "under_score", "R&B", "#hashtag", "Back\\slash",
                 "Ünïcödé", "日本語", "Emoji 🎬", 'Quote "q"', "it's")

_CONTROL = "".join(chr(c) for c in range(32)) + "\x7f"
_LONG_TITLE = ("Long title ünïcödé 你好 🎬 " * 60)[:1000]
_LONG_DETAILS = ("Lorem ipsum dolor sit amet, ünïcödé 你好 🎬 — \"quoted\" & 'single' % _ \\ . " * 800)[:50000]


def _clamp(v: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, v))


def _special_specs(root: str, studios: List[str], hostile_studios: List[str], performers: List[str],
                   hostile_perf: Dict[str, str], tags: List[str], hostile_tags: Dict[str, str],
                   bulk_tags: List[str]) -> List[Tuple[str, Dict[str, Any]]]:
    """(label, add_scene kwargs) for every hostile special scene, in priority order."""
    sp = root + "/special"
    hs = hostile_studios
    child = next((s for s in studios[4:]), studios[0])

    def f(name: str, folder: Optional[str] = None) -> List[str]:
        return [f"{sp}/{folder or 'misc'}/{name}"]

    return [
        ("latin", dict(files=f("Café Crème.mp4", "latin"), title="Café Crème: Ünïcödé façade – naïve résumé",
                       details="Ça va? Øre, Straße, ﬁ ligature, Ångström, Ærø.", studio_id=hs[1],
                       performer_ids=[hostile_perf["Zoë Ångström"]], tag_ids=[hostile_tags["Ünïcödé"]],
                       date="2021-03-04")),
        ("greek", dict(files=f("greek.mp4", "scripts"), title="Καλημέρα κόσμε — Ελληνικά",
                       details="Ελληνικό κείμενο με τόνους: ά έ ή ί ό ύ ώ ΐ ΰ.",
                       performer_ids=[hostile_perf["Ἀφροδίτη Παπαδοπούλου"]], date="2018-05-06")),
        ("cyrillic", dict(files=f("Привет мир.mp4", "scripts"), title="Привет, мир! Ёжик в тумане",
                          details="Съешь же ещё этих мягких французских булок, да выпей чаю.",
                          performer_ids=[hostile_perf["Наталья Иванова"]], date="2017-01-02")),
        ("arabic", dict(files=f("arabic.mp4", "scripts"), title="مرحبا بالعالم",
                        details="English مع العربية 123 mixed RTL/LTR.", performer_ids=[hostile_perf["محمد علي"]])),
        ("hebrew", dict(files=f("hebrew.mp4", "scripts"), title="שלום עולם",
                        details="טקסט בעברית (RTL) עם English.", performer_ids=[hostile_perf["יעל כהן"]])),
        ("devanagari", dict(files=f("devanagari.mp4", "scripts"), title="नमस्ते दुनिया",
                            details="हिन्दी में विवरण।", performer_ids=[hostile_perf["अनन्या शर्मा"]])),
        ("thai", dict(files=f("thai.mp4", "scripts"), title="สวัสดีชาวโลก", details="ภาษาไทยไม่มีช่องว่างระหว่างคำ",
                      performer_ids=[hostile_perf["สมศรี ใจดี"]])),
        ("cjk", dict(files=f("日本語 ファイル.mp4", "scripts"), title="你好，世界 — こんにちは世界 — 日本語タイトル",
                     details="中文描述。日本語の説明。", studio_id=hs[2], performer_ids=[hostile_perf["王芳"]],
                     tag_ids=[hostile_tags["日本語"]])),
        ("hangul", dict(files=f("한국어.mp4", "scripts"), title="안녕하세요 세계", details="한국어 설명입니다.",
                        performer_ids=[hostile_perf["김지수"]])),
        ("emoji", dict(files=f("emoji 🎬.mp4", "emoji"), title="Family 👨‍👩‍👧‍👦 Pride 🏳️‍🌈 Coder 🧑🏽‍💻 🎬🔥",
                       details="Flags 🇯🇵🇫🇷, skin tones 👍🏿, keycap 1️⃣, ZWJ 👩‍❤️‍💋‍👨.",
                       performer_ids=[hostile_perf["👩‍🎤 Star"]], tag_ids=[hostile_tags["Emoji 🎬"]])),
        ("percent_underscore", dict(files=f("100% real_deal.mp4", "wild"), title="100% Real_Deal",
                                    details="50% off_sale, 100%_pure", studio_id=hs[5],
                                    performer_ids=[hostile_perf["100%_Real"]],
                                    tag_ids=[hostile_tags["100% Natural"], hostile_tags["under_score"]])),
        # clip_1.mp4 LIKE-matches clipX1.mp4: path EQUALS returns both (§10.2)
        ("like_twin_a", dict(files=f("clip_1.mp4", "wild"), title="LIKE twin A (underscore)")),
        ("like_twin_b", dict(files=f("clipX1.mp4", "wild"), title="LIKE twin B")),
        ("amp_hash", dict(files=f("Tom & Jerry #1.mp4", "wild"), title="Tom & Jerry #1 <b>bold</b> &amp;",
                          details="R&B <i>html</i> &lt;not a tag&gt; #hashtag", studio_id=hs[0],
                          tag_ids=[hostile_tags["R&B"], hostile_tags["#hashtag"]])),
        ("quotes", dict(files=f("it's \"quoted\".mp4", "wild"), title='He said "hi" & it\'s \'fine\'',
                        details='"double" \'single\' `back` “curly” ‘curly’ «guillemets»', studio_id=hs[3],
                        performer_ids=[hostile_perf['O\'Neil "Nelly" Back\\slash']],
                        tag_ids=[hostile_tags['Quote "q"'], hostile_tags["it's"]])),
        ("backslash", dict(files=f("back\\slash.mp4", "wild"), title="C:\\new\\table \\\\server\\share \\n",
                           details="\\x00 is not a NUL; \\u0041; trailing backslash \\",
                           tag_ids=[hostile_tags["Back\\slash"]])),
        ("control", dict(files=f("control.mp4", "wild"),
                         title="Tab\there|NUL\x00|BEL\x07|ESC\x1b[31m|DEL\x7f|CR\r|LF\nend",
                         details="controls:" + _CONTROL + ":end")),
        ("long", dict(files=f("long.mp4", "big"), title=_LONG_TITLE, details=_LONG_DETAILS)),
        ("many_tags", dict(files=f("many tags.mp4", "big"), title="Scene with 150 tags", tag_ids=bulk_tags[:150],
                           performer_ids=performers[:12])),
        ("comma_names", dict(files=f("comma names.mp4", "wild"), title="Names, with, commas",
                             studio_id=hs[4],
                             performer_ids=[hostile_perf["Doe, Jane"], hostile_perf["Smith, John Jr."]],
                             tag_ids=[hostile_tags["Drama, Romance"]])),
        ("dup_basename_a", dict(files=[f"{sp}/dup/a/Same Name.mp4"], title="Duplicate basename A")),
        ("dup_basename_b", dict(files=[f"{sp}/dup/b/Same Name.mp4"], title="Duplicate basename B")),
        ("case_a", dict(files=[f"{sp}/Mixed/Case Test.mp4"], title="Case A")),
        ("case_b", dict(files=[f"{sp}/mixed/case test.mp4"], title="Case B")),
        ("year_only", dict(files=f("year only.mp4", "dates"), title="Year-only date", date="2019")),
        ("year_month", dict(files=f("year month.mp4", "dates"), title="Year-month date", date="2020-07")),
        ("empty_title", dict(files=f("empty title.mp4", "misc"), title="", details="The title is empty.",
                             studio_id=studios[0], tag_ids=tags[:2])),
        ("bare", dict(files=f("bare.mp4", "misc"))),
        ("two_files", dict(files=[f"{sp}/multi/two files.mp4", f"{sp}/multi/two files (alt).mkv"],
                           title="Two files", studio_id=child)),
        ("no_cover", dict(files=f("no cover.mp4", "misc"), title="No cover image", has_cover=False)),
        ("whitespace", dict(files=f("  spaced  .mp4", "misc"), title="  leading and trailing  ",
                            details="\n\n  \t")),
        ("sub_studio", dict(files=f("sub studio.mp4", "misc"), title="Child studio scene", studio_id=child,
                            date="2015-12-31")),
        ("slash_title", dict(files=f("acdc.mp4", "misc"), title="AC/DC: Live / Unplugged")),
        ("nfd", dict(files=f("Cafe\u0301 NFD.mp4", "latin"), title="Cafe\u0301 (NFD) vs Café (NFC)")),
        ("rating_urls", dict(files=f("urls.mp4", "misc"), title="Max rating, many URLs", rating100=100,
                             urls=["https://example.com/a?x=1&y=2", "https://例え.jp/パス", "http://x.test/%20"],
                             code="CODE-123_%")),
    ]


def build_library(stash: FakeStash, plex: Any, n: int, seed: int = 1, stash_root: str = "/stash/media",
                  plex_root: str = "/plex/media", missing_from_plex: float = 0.05, hostile: bool = True,
                  missing_unscanned: bool = True) -> Library:
    """Fill ``stash`` and ``plex`` (may be None) with ``n`` scenes; see the module docstring.

    Scenes missing from Plex are registered with ``plex.add_unscanned`` when
    ``missing_unscanned`` and FakePlex offers it (the file is on disk but not indexed
    yet: a partial scan finds it); otherwise Plex does not know them at all.
    Timestamps: created/updated in the past, three scenes per second (like a bulk
    scan), so several scenes share one ``updated_at`` second (§10.2 watermark hazard).
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    stash_root = stash_root.rstrip("/")
    plex_root = plex_root.rstrip("/")
    rng = random.Random(seed)
    off = rng.randrange(10_000)

    if plex is not None:
        plex.add_section(SECTION_KEY, SECTION_TITLE, [plex_root], type="movie")

    # ---- studios, performers, tags
    n_studios = _clamp(n // 100, 8, 300)
    studio_ids: List[str] = []
    for k in range(n_studios):
        name = f"{_ADJ[(k + off) % len(_ADJ)]} {_NOUN[(k * 7 + off) % len(_NOUN)]} Studios {k + 1}"
        parent = studio_ids[k % 4] if k >= 4 and k % 3 == 0 else None
        studio_ids.append(stash.add_studio(name, parent_id=parent, has_image=k % 5 != 4))
    hostile_studios = [stash.add_studio(nm, parent_id=studio_ids[0] if i == 1 else None)
                       for i, nm in enumerate(_HOSTILE_STUDIOS)] if hostile else []

    n_perf = _clamp(n // 10, 20, 5000)
    performer_ids: List[str] = []
    gcycle = GENDERS + (None,)
    for k in range(n_perf):
        name = f"{_FIRST[(k + off) % len(_FIRST)]} {_LAST[(k * 11 + off) % len(_LAST)]} {k + 1}"
        performer_ids.append(stash.add_performer(name, gender=gcycle[k % len(gcycle)], has_image=k % 6 != 5))
    hostile_perf = {nm: stash.add_performer(nm, gender=g, has_image=i % 2 == 0)
                    for i, (nm, g) in enumerate(_HOSTILE_PERFORMERS)} if hostile else {}

    n_tags = _clamp(n // 50, 30, 2000)
    tag_ids = [stash.add_tag(f"{_ADJ[(k * 3 + off) % len(_ADJ)]} {_NOUN[(k + off) % len(_NOUN)]} {k + 1}")
               for k in range(n_tags)]
    hostile_tags = {nm: stash.add_tag(nm) for nm in _HOSTILE_TAGS} if hostile else {}
    bulk_tags = [stash.add_tag(f"Bulk tag {k:03d}") for k in range(1, 151)] if hostile else []

    # ---- special scenes: placed at deterministic positions among the n
    specs = _special_specs(stash_root, studio_ids, hostile_studios, performer_ids, hostile_perf, tag_ids,
                           hostile_tags, bulk_tags) if hostile else []
    specs = specs[:n]
    positions = sorted(rng.sample(range(n), len(specs))) if specs else []
    special_at = dict(zip(positions, specs))

    # ---- scenes
    base_ts = int(time.time()) - n // 3 - 3600
    scene_ids: List[str] = []
    in_plex: Dict[str, str] = {}
    missing: List[str] = []
    special: Dict[str, str] = {}
    insert = stash._insert_scene
    add_item = plex.add_item if plex is not None else None
    add_unscanned = getattr(plex, "add_unscanned", None) if (plex is not None and missing_unscanned) else None
    rand = rng.random
    n_adj, n_noun, n_det = len(_ADJ), len(_NOUN), len(_DETAILS)
    cut = len(stash_root)

    with stash._lock:
        for i in range(n):
            ts = base_ts + i // 3
            spec = special_at.get(i)
            if spec is not None:
                label, kw = spec
                kw = dict(kw)
                files = kw.pop("files")
                sid = insert(files, kw.get("title", ""), kw.get("details", ""), kw.get("date"), kw.get("studio_id"),
                             kw.get("performer_ids", ()), kw.get("tag_ids", ()), kw.get("code", ""),
                             kw.get("urls", ()), kw.get("rating100"), kw.get("has_cover", True), False, ts)
                special[label] = sid
            else:
                k = i + off
                num = i + 1
                adj = _ADJ[k % n_adj]
                noun = _NOUN[(k * 7) % n_noun]
                folder = f"{stash_root}/set{i // 1000:03d}"
                files = [f"{folder}/Scene {num:06d} {adj} {noun}.mp4"]
                if i % 997 == 996:
                    files.append(f"{folder}/Scene {num:06d} {adj} {noun} (alt).mkv")
                np_ = i % 4
                nt = i % 6
                sid = insert(
                    files,
                    f"{adj} {noun} {num}",
                    _DETAILS[k % n_det] if i % 9 else "",
                    None if i % 17 == 0 else f"{2005 + k % 20}-{1 + k % 12:02d}-{1 + k % 28:02d}",
                    None if i % 11 == 0 else studio_ids[(k * 7) % n_studios],
                    [performer_ids[(k * 13 + j * 101) % n_perf] for j in range(np_)],
                    [tag_ids[(k * 17 + j * 37) % n_tags] for j in range(nt)],
                    f"SC-{num:06d}" if i % 2 == 0 else "",
                    (f"https://example.com/scenes/{num}",) if i % 3 == 0 else (),
                    (k * 37 % 100) + 1 if i % 5 else None,
                    i % 23 != 22,
                    i % 13 == 0,
                    ts,
                )
            scene_ids.append(sid)
            if rand() < missing_from_plex:
                missing.append(sid)
                if add_unscanned is not None:
                    add_unscanned(SECTION_KEY, [plex_root + f["path"][cut:] for f in stash.scenes[sid]["files"]])
            elif add_item is not None:
                item = add_item(SECTION_KEY, [plex_root + f["path"][cut:] for f in stash.scenes[sid]["files"]])
                in_plex[sid] = item.rating_key
            else:
                in_plex[sid] = ""

    return Library(
        scene_ids=scene_ids, in_plex=in_plex, missing=missing,
        path_map=f"media: {stash_root}/{{rest}} => {plex_root}/{{rest}}",
        stash_root=stash_root, plex_root=plex_root, stash=stash, special=special,
        studio_ids=studio_ids + hostile_studios,
        performer_ids=performer_ids + list(hostile_perf.values()),
        tag_ids=tag_ids + list(hostile_tags.values()) + bulk_tags,
    )
