"""Path mapping between Stash and Plex: the ``path_map`` setting.

Stash and Plex often see the same media under different paths (another mount point, a Windows
drive on one side, a folder layout reorganised by year).  ``path_map`` lists rules; ONE rule serves
both directions, Stash -> Plex and Plex -> Stash, so that a path survives the round trip.

Syntax
------
Rules are separated by newlines or ``;`` (write a literal ``;`` inside a rule as ``\\;``).
Blank entries are ignored.  Each rule is::

    [NAME[ (OPTIONS)]:] STASH_TEMPLATE => PLEX_TEMPLATE

- NAME is ``[A-Za-z0-9_.-]+`` and counts as a name only when followed by ``:`` and whitespace (so
  ``C:\\Videos`` is not a name).  Unnamed rules are called ``rule 1``, ``rule 2``, ... by their
  position.  Whitespace around ``=>`` and at both ends is stripped.
- OPTIONS are comma-separated: ``i`` (also ``icase``, ``ignorecase``, ``ignore-case``) matches
  case-insensitively on both sides.  An unknown option is an error.
- A template is literal text plus placeholders ``{name}`` or ``{name:regex}``; ``{{`` and ``}}``
  are literal braces; the regex may contain balanced braces (``{year:\\d{4}}``).  Placeholder names
  are ``[A-Za-z_][A-Za-z0-9_]*``.
- Every placeholder appears exactly once on each side.  A regex given on one side applies to both;
  when both sides give one, they must be identical.
- Default regex, decided per side: ``.+`` when the placeholder is the last element of that side's
  template, otherwise one path segment (``[^/]+``; ``[^\\\\/]+`` on a Windows side).
- The whole path must match (full match).
- A side is a Windows side when its literal text starts with a drive letter (``X:``) or ``\\\\``
  (UNC), or contains a ``\\``.  There each literal ``\\`` or ``/`` matches either separator, captured
  values have ``\\`` turned into ``/``, and paths rendered into it use ``\\`` throughout (values and
  the template's own separators).  Linux sides are matched and rendered as written.
- The first rule (in written order) whose source side matches wins; when none matches the path is
  returned unchanged.  Every mapping is mapped back with the same rule and must give the original
  path (case-folded with ``i``, separators normalised on a Windows side), else
  :class:`PathRuleError`.

Examples
--------
Prefix swap::

    /data/videos/{rest} => /media/videos/{rest}

Reordered folders (``/stash/Brand/2021/a.mp4`` <-> ``/plex/2021/Brand/a.mp4``)::

    byyear: /stash/{studio}/{year:\\d{4}}/{file} => /plex/{year}/{studio}/{file}

Windows Stash, Linux Plex, case-insensitive (``D:\\Videos\\A\\b.mp4`` <-> ``/mnt/videos/A/b.mp4``)::

    win (i): D:\\Videos\\{rest} => /mnt/videos/{rest}
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

__all__ = ["PathRuleError", "PathRule", "Mapping", "PathMapper", "parse_path_map"]

_NAME_RE = re.compile(r"([A-Za-z0-9_.-]+)(?:\s*\(([^()]*)\))?:\s+(.*)", re.DOTALL)
_PLACEHOLDER_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DRIVE_RE = re.compile(r"[A-Za-z]:")
_BACKREF_RE = re.compile(r"(?<!\\)(?:\\\\)*\\[1-9]")  # \1 .. \9 not preceded by an escape
_IGNORE_CASE_OPTIONS = frozenset({"i", "icase", "ignorecase", "ignore-case"})
_HINT = "give the placeholder an explicit regex such as {rest:.+}"


class PathRuleError(ValueError):
    """A ``path_map`` rule is invalid, or a path does not survive a rule's round trip.

    ``problems`` is a list of one-line messages, each starting with ``path_map rule '<name>': ``;
    ``str(exc)`` is the problems joined with ``"; "``.
    """

    def __init__(self, problems: Union[str, Sequence[str]]) -> None:
        self.problems: List[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class PathRule:
    """One parsed rule: its name, the two templates as written, and the ``i`` option."""

    name: str
    stash: str
    plex: str
    ignore_case: bool = False


class Mapping(NamedTuple):
    """The result of mapping one path: ``rule`` is None when no rule matched (``path`` unchanged)."""

    path: str
    rule: Optional[PathRule]


def _prefix(name: str) -> str:
    return f"path_map rule '{name}': "


def _show(path: str) -> str:
    """Quote a path for a one-line message: control characters escaped, backslashes kept."""
    return "'" + "".join(c if c.isprintable() else repr(c)[1:-1] for c in path) + "'"


# --- templates -------------------------------------------------------------------------------

class _Placeholder(NamedTuple):
    name: str
    regex: Optional[str]  # None = default regex of the side


_Element = Union[str, _Placeholder]  # str = literal text (braces already unescaped)


def _parse_template(text: str, side: str) -> Tuple[List[_Element], List[str]]:
    """Split a template into literal strings and placeholders; return (elements, problems)."""
    elements: List[_Element] = []
    problems: List[str] = []
    literal: List[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("{{", i) or text.startswith("}}", i):
            literal.append(c)
            i += 2
        elif c == "}":
            problems.append(f"unbalanced brace: stray '}}' at position {i + 1} of the {side} side")
            i += 1
        elif c == "{":
            end = _closing_brace(text, i)
            if end < 0:
                problems.append(f"unbalanced brace: '{{' at position {i + 1} of the {side} side "
                                f"is never closed")
                break
            body = text[i + 1:end]
            name, colon, regex = body.partition(":")
            if not _PLACEHOLDER_NAME_RE.fullmatch(name):
                problems.append(f"bad placeholder name '{name}' in {{{body}}} on the {side} side "
                                f"(use letters, digits and _, not starting with a digit)")
            elif colon and not regex:
                problems.append(f"invalid regex for {{{name}}} on the {side} side: empty regex")
            else:
                if literal:
                    elements.append("".join(literal))
                    literal = []
                elements.append(_Placeholder(name, regex if colon else None))
            i = end + 1
        else:
            literal.append(c)
            i += 1
    if literal:
        elements.append("".join(literal))
    return elements, problems


def _closing_brace(text: str, start: int) -> int:
    """Index of the ``}`` closing the placeholder opened at ``start``, or -1.

    Braces nest (``{year:\\d{4}}``); a backslash escapes the next character (``\\{``).
    """
    depth, i, n = 0, start, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and depth > 0:
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _split_arrow(body: str) -> Tuple[List[int], Optional[int]]:
    """Positions of ``=>`` outside placeholders, and the position of an unclosed ``{`` (or None)."""
    arrows: List[int] = []
    i, n = 0, len(body)
    while i < n:
        if body.startswith("{{", i) or body.startswith("}}", i):
            i += 2
        elif body[i] == "{":
            end = _closing_brace(body, i)
            if end < 0:
                return arrows, i
            i = end + 1
        elif body.startswith("=>", i):
            arrows.append(i)
            i += 2
        else:
            i += 1
    return arrows, None


def _is_windows(elements: List[_Element]) -> bool:
    """A template is Windows when it starts with ``X:`` or ``\\\\``, or has a ``\\`` in its text."""
    first = elements[0] if elements else None
    if isinstance(first, str) and (_DRIVE_RE.match(first) or first.startswith("\\\\")):
        return True
    return any(isinstance(e, str) and "\\" in e for e in elements)


class _Side:
    """One compiled side of a rule: the full-match regex and the render plan."""

    __slots__ = ("windows", "regex", "plan")

    def __init__(self, windows: bool, regex: "re.Pattern[str]",
                 plan: Tuple[Tuple[bool, str], ...]) -> None:
        self.windows = windows
        self.regex = regex
        self.plan = plan  # (is_placeholder, literal text or placeholder name)

    def capture(self, path: str) -> Optional[Dict[str, str]]:
        """Canonical placeholder values if ``path`` fully matches this side, else None."""
        m = self.regex.fullmatch(path)
        if m is None:
            return None
        values = m.groupdict()
        if self.windows:
            return {k: v.replace("\\", "/") for k, v in values.items()}
        return values

    def render(self, values: Dict[str, str]) -> str:
        if self.windows:
            return "".join(values[t].replace("/", "\\") if ph else t for ph, t in self.plan)
        return "".join(values[t] if ph else t for ph, t in self.plan)


def _literal_regex(text: str, windows: bool) -> str:
    if not windows:
        return re.escape(text)
    return "".join(r"[\\/]" if c in "\\/" else re.escape(c) for c in text)


def _build_side(elements: List[_Element], regexes: Dict[str, str], windows: bool,
                flags: int) -> _Side:
    segment = r"[^\\/]+" if windows else r"[^/]+"
    parts: List[str] = []
    plan: List[Tuple[bool, str]] = []
    for index, element in enumerate(elements):
        if isinstance(element, str):
            parts.append(_literal_regex(element, windows))
            plan.append((False, element.replace("/", "\\") if windows else element))
        else:
            default = ".+" if index == len(elements) - 1 else segment
            parts.append(f"(?P<{element.name}>{regexes.get(element.name, default)})")
            plan.append((True, element.name))
    return _Side(windows, re.compile("".join(parts), flags), tuple(plan))


class _CompiledRule(NamedTuple):
    rule: PathRule
    stash: _Side
    plex: _Side


def _compile_rule(name: str, options: Optional[str], body: str) -> Tuple[Optional[_CompiledRule],
                                                                        List[str]]:
    """Compile one rule's body (after the name); return (compiled rule or None, problems)."""
    problems: List[str] = []
    ignore_case = False
    for option in (options or "").split(","):
        option = option.strip()
        if not option:
            continue
        if option.lower() in _IGNORE_CASE_OPTIONS:
            ignore_case = True
        else:
            problems.append(f"unknown option '{option}' (known: i, icase, ignorecase, ignore-case)")

    arrows, unclosed = _split_arrow(body)
    if unclosed is not None:
        problems.append(f"unbalanced brace: '{{' at position {unclosed + 1} is never closed")
        return None, problems
    if not arrows:
        problems.append("missing '=>' between the Stash and the Plex template")
        return None, problems
    if len(arrows) > 1:
        problems.append("more than one '=>' (write one rule per line or separate rules with ';')")
        return None, problems
    stash_text = body[:arrows[0]].strip()
    plex_text = body[arrows[0] + 2:].strip()
    for side, text in (("stash", stash_text), ("plex", plex_text)):
        if not text:
            problems.append(f"empty {side} side")
    if not stash_text or not plex_text:
        return None, problems

    stash_elements, stash_problems = _parse_template(stash_text, "stash")
    plex_elements, plex_problems = _parse_template(plex_text, "plex")
    problems += stash_problems + plex_problems
    if stash_problems or plex_problems:
        return None, problems

    # DOTALL: a file name may hold any character but "/", a newline included.
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    regexes: Dict[str, str] = {}
    seen: Dict[str, Dict[str, Optional[str]]] = {"stash": {}, "plex": {}}
    for side, elements in (("stash", stash_elements), ("plex", plex_elements)):
        for element in elements:
            if isinstance(element, str):
                continue
            if element.name in seen[side]:
                problems.append(f"placeholder {{{element.name}}} used twice on the {side} side")
                continue
            seen[side][element.name] = element.regex
    for side, other in (("stash", "plex"), ("plex", "stash")):
        for ph in seen[side]:
            if ph not in seen[other]:
                problems.append(f"placeholder {{{ph}}} is on the {side} side only "
                                f"(every placeholder must appear once on each side)")
    for ph in seen["stash"].keys() & seen["plex"].keys():
        a, b = seen["stash"][ph], seen["plex"][ph]
        if a is not None and b is not None and a != b:
            problems.append(f"conflicting regexes for {{{ph}}}: '{a}' on the stash side, "
                            f"'{b}' on the plex side")
            continue
        regex = a if a is not None else b
        if regex is None:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # 3.9 only warns about misplaced (?i)
                compiled = re.compile(regex, flags)
        except re.error as exc:
            problems.append(f"invalid regex '{regex}' for {{{ph}}}: {exc}")
            continue
        if compiled.flags & ~(flags | re.UNICODE):
            # A global (?i) would silently apply to the whole rule; 3.11 rejects it mid-pattern.
            problems.append(f"global inline flag in the regex of {{{ph}}} ('{regex}'); use the "
                            f"rule option (i) or a scoped group such as (?i:...)")
            continue
        if compiled.groupindex:
            problems.append(f"named group inside the regex of {{{ph}}} ('{regex}'); "
                            f"use (...) or (?:...) instead")
            continue
        if compiled.groups and _BACKREF_RE.search(regex):
            # Group numbers shift once the regex is embedded in the rule's pattern.
            problems.append(f"backreference inside the regex of {{{ph}}} ('{regex}') "
                            f"is not supported")
            continue
        regexes[ph] = regex
    if problems:
        return None, problems

    try:
        stash_side = _build_side(stash_elements, regexes, _is_windows(stash_elements), flags)
        plex_side = _build_side(plex_elements, regexes, _is_windows(plex_elements), flags)
    except re.error as exc:  # e.g. inline flags such as (?i) in the middle of the pattern
        problems.append(f"invalid regex: {exc}")
        return None, problems
    rule = PathRule(name=name, stash=stash_text, plex=plex_text, ignore_case=ignore_case)
    return _CompiledRule(rule, stash_side, plex_side), []


def _split_entries(text: str) -> List[str]:
    """Split on newlines and unescaped ``;``; ``\\;`` becomes ``;``."""
    entries: List[str] = []
    for line in text.splitlines():
        current: List[str] = []
        i, n = 0, len(line)
        while i < n:
            if line.startswith("\\;", i):
                current.append(";")
                i += 2
            elif line[i] == ";":
                entries.append("".join(current))
                current = []
                i += 1
            else:
                current.append(line[i])
                i += 1
        entries.append("".join(current))
    return entries


# --- mapper ----------------------------------------------------------------------------------

class PathMapper:
    """Maps paths between Stash and Plex with rules tried in written order; first match wins.

    Build one with :func:`parse_path_map`.  ``PathMapper()`` (no rules) is the identity.
    Instances are immutable and safe to share between threads.
    """

    def __init__(self, compiled: Sequence[_CompiledRule] = ()) -> None:
        self._compiled: Tuple[_CompiledRule, ...] = tuple(compiled)
        self._by_name: Dict[str, _CompiledRule] = {c.rule.name: c for c in self._compiled}
        self.rules: List[PathRule] = [c.rule for c in self._compiled]

    def __repr__(self) -> str:
        return f"PathMapper({[r.name for r in self.rules]!r})"

    def to_plex(self, stash_path: str) -> Mapping:
        """Map a Stash path to the path Plex sees.

        Returns ``Mapping(path, rule)``; ``Mapping(stash_path, None)`` when no rule matches.
        Raises :class:`PathRuleError` when the matching rule does not map the result back to
        ``stash_path``.
        """
        for c in self._compiled:
            values = c.stash.capture(stash_path)
            if values is not None:
                return Mapping(self._map(c, values, stash_path, c.stash, c.plex, "Stash"), c.rule)
        return Mapping(stash_path, None)

    def to_stash(self, plex_path: str) -> Mapping:
        """Map a Plex path to the path Stash sees; the mirror of :meth:`to_plex`.

        Returns ``Mapping(path, rule)``; ``Mapping(plex_path, None)`` when no rule matches.
        Raises :class:`PathRuleError` when the matching rule does not map the result back.
        """
        for c in self._compiled:
            values = c.plex.capture(plex_path)
            if values is not None:
                return Mapping(self._map(c, values, plex_path, c.plex, c.stash, "Plex"), c.rule)
        return Mapping(plex_path, None)

    @staticmethod
    def _map(c: _CompiledRule, values: Dict[str, str], path: str, source: _Side, target: _Side,
             source_label: str) -> str:
        result = target.render(values)
        back_values = target.capture(result)
        back = source.render(back_values) if back_values is not None else None
        if back is None or not _same(back, path, source.windows, c.rule.ignore_case):
            how = (f"which maps back to {_show(back)}" if back is not None
                   else "which the rule's other side does not match")
            raise PathRuleError(
                f"{_prefix(c.rule.name)}no round trip for {source_label} path {_show(path)}: "
                f"it maps to {_show(result)}, {how}; {_HINT}")
        return result

    def same_file(self, a: str, b: str, rule: Optional[PathRule]) -> bool:
        """True when ``a`` and ``b`` name the same file under ``rule``.

        Exact equality, or case-folded equality when ``rule.ignore_case``.
        """
        if a == b:
            return True
        return rule is not None and rule.ignore_case and a.casefold() == b.casefold()

    def check_round_trip(self, samples: Iterable[str], side: str = "plex") -> List[str]:
        """Check that sample paths of ``side`` ("plex" or "stash") survive a trip through the mapper.

        Each sample is mapped to the other side and back with the whole mapper (so a rule shadowed
        by an earlier one is caught too).  Returns one-line problems, each starting with
        ``path_map rule '<name>': ``; empty when every sample round-trips.  Raises ValueError for
        an unknown ``side``.
        """
        if side not in ("plex", "stash"):
            raise ValueError(f"side must be 'plex' or 'stash', not {side!r}")
        forward, backward = ((self.to_stash, self.to_plex) if side == "plex"
                             else (self.to_plex, self.to_stash))
        other = "stash" if side == "plex" else "plex"
        problems: List[str] = []
        for sample in samples:
            try:
                there = forward(sample)
                back = backward(there.path)
            except PathRuleError as exc:
                problems.extend(exc.problems)
                continue
            if there.rule is None and back.rule is None:
                continue
            rule = there.rule or back.rule
            compiled = self._by_name.get(rule.name) if rule is not None else None
            windows = compiled is not None and (compiled.plex if side == "plex"
                                                else compiled.stash).windows
            if _same(back.path, sample, windows, rule.ignore_case if rule else False):
                continue
            blamed = back.rule if back.rule is not None and back.rule != there.rule else rule
            via_there = f"rule '{there.rule.name}'" if there.rule else "no rule"
            via_back = f"rule '{back.rule.name}'" if back.rule else "no rule"
            problems.append(
                f"{_prefix(blamed.name)}no round trip for {side} path {_show(sample)}: "
                f"{via_there} maps it to {other} path {_show(there.path)}, which {via_back} maps to "
                f"{_show(back.path)} (check the rule order, or {_HINT})")
        return problems


def _same(a: str, b: str, windows: bool, ignore_case: bool) -> bool:
    if windows:
        a, b = a.replace("\\", "/"), b.replace("\\", "/")
    if ignore_case:
        a, b = a.casefold(), b.casefold()
    return a == b


def parse_path_map(text: Optional[str]) -> PathMapper:
    """Parse the ``path_map`` setting (syntax in the module docstring) into a :class:`PathMapper`.

    Empty or None text gives a mapper without rules (identity).  Raises :class:`PathRuleError`
    listing every problem of every rule in ``.problems`` when any rule is invalid.
    """
    compiled: List[_CompiledRule] = []
    problems: List[str] = []
    names: Dict[str, int] = {}
    position = 0
    for entry in _split_entries(text or ""):
        entry = entry.strip()
        if not entry:
            continue
        position += 1
        m = _NAME_RE.fullmatch(entry)
        if m:
            name, options, body = m.group(1), m.group(2), m.group(3).strip()
        else:
            name, options, body = f"rule {position}", None, entry
        if name in names:
            problems.append(f"{_prefix(name)}duplicate rule name (entries {names[name]} and "
                            f"{position} are both called '{name}')")
        else:
            names[name] = position
        rule, rule_problems = _compile_rule(name, options, body)
        problems.extend(_prefix(name) + p for p in rule_problems)
        if rule is not None:
            compiled.append(rule)
    if problems:
        raise PathRuleError(problems)
    return PathMapper(compiled)
