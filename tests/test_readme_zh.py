"""README.zh-CN.md stays in step with README.md.

The two are compared section by section (the title's preamble, then every ``##`` and ``###``
heading, paired by position and level; the Chinese headings are translations). In each pair:

- the same fenced code blocks, in the same order, with ``#`` comments stripped (comments may be
  translated; a comment-only line may be wrapped differently) and trailing whitespace ignored;
- the same inline code spans (commands, flags, file names, parameter names: they stay English);
- the same multiset of numbers in the prose outside code (``5,000`` counts as ``5000``).

``drift(en, zh)`` returns one line per difference; the tests below show it reports a change made
to one README alone.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EN = ROOT / "README.md"
ZH = ROOT / "README.zh-CN.md"

FENCE = re.compile(r"^ {0,3}(```+|~~~+)\s*([\w+-]*)")
HEADING = re.compile(r"^(#{1,3}) +(.+?) *#*$")
INLINE_CODE = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)", re.S)
LINK_TARGET = re.compile(r"\]\([^)]*\)")
NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?![\d.])|\d+(?:\.\d+)?(?:e-?\d+)?")
COMMENTED = {"bash", "sh", "shell", "console", "toml", "python", "py"}


@dataclass
class Section:
    level: int  # 1 for the title and what precedes the first ## heading
    title: str
    prose: list[str] = field(default_factory=list)
    blocks: list[tuple[str, str]] = field(default_factory=list)  # (language, code)

    def text(self) -> str:
        return "\n".join([self.title, *self.prose])


def sections(markdown: str) -> list[Section]:
    """The document cut at its #, ## and ### headings (outside code blocks)."""
    result = [Section(1, "")]
    fence = None  # (marker, language, lines) while inside a fenced block
    for line in markdown.splitlines():
        if fence:
            marker, language, lines = fence
            if line.strip().startswith(marker) and not line.strip().strip(marker[0]):
                result[-1].blocks.append((language, "\n".join(lines)))
                fence = None
            else:
                lines.append(line)
            continue
        if m := FENCE.match(line):
            fence = (m.group(1), m.group(2).lower(), [])
            continue
        if (m := HEADING.match(line)) and not (len(m.group(1)) == 1 and len(result) > 1):
            level = len(m.group(1))
            if level == 1 and not result[0].title and not result[0].blocks:
                result[0].title = m.group(2)
            else:
                result.append(Section(level, m.group(2)))
            continue
        result[-1].prose.append(line)
    if fence:
        result[-1].blocks.append((fence[1], "\n".join(fence[2])))
    return result


def strip_comment(line: str, language: str) -> str:
    """``line`` without its ``#`` comment: a ``#`` outside quotes (in shell, at a word's start)."""
    quote = None
    i = 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == "\\" and quote == '"':
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "\\" and language not in ("toml",):
            i += 1
        elif ch == "#":
            shell = language in ("bash", "sh", "shell", "console")
            if not shell or i == 0 or line[i - 1].isspace():
                return line[:i]
        i += 1
    return line


def comparable(language: str, code: str) -> str:
    """The code as compared: comments stripped where the language has ``#`` comments, trailing
    whitespace dropped, and lines that held only a comment left out."""
    lines = []
    for line in code.splitlines():
        stripped = strip_comment(line, language) if language in COMMENTED else line
        stripped = stripped.rstrip()
        if stripped or not line.strip():
            lines.append(stripped)
    return "\n".join(lines).strip("\n")


def inline_code(text: str) -> set[str]:
    return {" ".join(m.group(2).split()) for m in INLINE_CODE.finditer(text)}


def numbers(text: str) -> Counter:
    prose = LINK_TARGET.sub("]", INLINE_CODE.sub(" ", text))
    return Counter(n.replace(",", "") for n in NUMBER.findall(prose))


def _name(section: Section, index: int) -> str:
    return f"section {index} ({'#' * section.level} {section.title or '(preamble)'})"


def drift(en: str, zh: str) -> list[str]:
    """Every way in which ``zh`` (README.zh-CN.md) is out of step with ``en`` (README.md)."""
    en_sections, zh_sections = sections(en), sections(zh)
    problems = []
    en_levels = [s.level for s in en_sections]
    zh_levels = [s.level for s in zh_sections]
    if en_levels != zh_levels:
        for level in (2, 3):
            if en_levels.count(level) != zh_levels.count(level):
                problems.append(
                    f"headings: README.md has {en_levels.count(level)} at level {level}, "
                    f"README.zh-CN.md {zh_levels.count(level)}"
                )
        first = next(
            (i for i, (a, b) in enumerate(zip(en_levels, zh_levels, strict=False)) if a != b),
            min(len(en_levels), len(zh_levels)),
        )
        problems.append(f"headings: the order differs from section {first} on")
        # Compare what still pairs: the sections before the first difference.
        en_sections, zh_sections = en_sections[:first], zh_sections[:first]
    for index, (e, z) in enumerate(zip(en_sections, zh_sections, strict=True)):
        where = f"{_name(e, index)} / {_name(z, index)}"
        if len(e.blocks) != len(z.blocks):
            problems.append(
                f"{where}: code blocks: {len(e.blocks)} in README.md, {len(z.blocks)} in "
                "README.zh-CN.md"
            )
        for n, ((el, ec), (zl, zc)) in enumerate(zip(e.blocks, z.blocks, strict=False)):
            if el != zl or comparable(el, ec) != comparable(zl, zc):
                problems.append(f"{where}: code block {n + 1} differs")
        e_code, z_code = inline_code(e.text()), inline_code(z.text())
        for span in sorted(e_code - z_code):
            problems.append(f"{where}: inline code `{span}` only in README.md")
        for span in sorted(z_code - e_code):
            problems.append(f"{where}: inline code `{span}` only in README.zh-CN.md")
        e_num, z_num = numbers(e.text()), numbers(z.text())
        if e_num != z_num:
            only_en = ", ".join(sorted((e_num - z_num).elements()))
            only_zh = ", ".join(sorted((z_num - e_num).elements()))
            problems.append(
                f"{where}: numbers in the prose differ (README.md only: {only_en or '-'}; "
                f"README.zh-CN.md only: {only_zh or '-'})"
            )
    return problems


# The real files.


def test_the_chinese_readme_is_in_step_with_the_english_one():
    problems = drift(EN.read_text(encoding="utf-8"), ZH.read_text(encoding="utf-8"))
    assert not problems, "README.zh-CN.md is out of step with README.md:\n" + "\n".join(problems)


def test_the_chinese_readme_has_every_code_block_in_the_same_order():
    def blocks(path: Path) -> list[str]:
        return [
            comparable(*b) for s in sections(path.read_text(encoding="utf-8")) for b in s.blocks
        ]

    assert blocks(ZH) == blocks(EN)
    assert blocks(EN), "README.md has code blocks to compare"


@pytest.mark.parametrize(
    ("path", "link"), [(EN, "[中文说明](README.zh-CN.md)"), (ZH, "[English](README.md)")]
)
def test_each_readme_links_to_the_other_right_under_its_title(path, link):
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert lines[0].startswith("# ")
    assert lines[1] == link


def test_both_readmes_have_the_same_sections_at_each_level():
    en, zh = sections(EN.read_text(encoding="utf-8")), sections(ZH.read_text(encoding="utf-8"))
    assert [s.level for s in zh] == [s.level for s in en]
    assert len([s for s in en if s.level == 2]) >= 5


# The comparison reports a change made to one README alone.


def _first_code_block_line(text: str, predicate) -> int:
    inside = False
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if FENCE.match(line):
            inside = not inside
            continue
        if inside and predicate(line):
            return i
    raise AssertionError("no such line in a code block")


def _replace_line(text: str, i: int, new: str) -> str:
    lines = text.splitlines()
    lines[i] = new
    return "\n".join(lines) + "\n"


def add_a_code_block(text: str) -> str:
    return text.rstrip("\n") + "\n\n```bash\npython -m hpo.search --trials 7\n```\n"


def change_a_flag_in_a_code_block(text: str) -> str:
    i = _first_code_block_line(text, lambda line: re.search(r" --\w", line))
    return _replace_line(text, i, re.sub(r" --(\w)", r" --no-\1", text.splitlines()[i], count=1))


def add_a_section(text: str) -> str:
    return text.rstrip("\n") + "\n\n## Extra\n\nOne more section.\n"


def add_a_subsection(text: str) -> str:
    return text.rstrip("\n") + "\n\n### Extra\n\nOne more subsection.\n"


def rename_an_inline_flag(text: str) -> str:
    return re.sub(r"`--(\w[\w-]*)", r"`--renamed-\1", text, count=1)


def change_a_number_in_the_prose(text: str) -> str:
    lines = text.splitlines()
    inside = False
    for i, line in enumerate(lines):
        if FENCE.match(line):
            inside = not inside
            continue
        if inside or line.startswith("#"):
            continue
        parts = line.split("`")
        for j in range(0, len(parts), 2):  # outside inline code
            if m := re.search(r"(?<![\w.,])(\d+)(?![\w.,])", parts[j]):
                number = str(int(m.group(1)) + 1)
                parts[j] = parts[j][: m.start()] + number + parts[j][m.end() :]
                return _replace_line(text, i, "`".join(parts))
    raise AssertionError("no number in the prose")


MUTATIONS = [
    (add_a_code_block, "code blocks: "),
    (change_a_flag_in_a_code_block, "code block 1 differs"),
    (add_a_section, "headings"),
    (add_a_subsection, "headings"),
    (rename_an_inline_flag, "inline code `--renamed-"),
    (change_a_number_in_the_prose, "numbers in the prose differ"),
]


@pytest.mark.parametrize(("mutate", "reported"), MUTATIONS, ids=[m.__name__ for m, _ in MUTATIONS])
@pytest.mark.parametrize("changed", ["README.md", "README.zh-CN.md"])
def test_a_change_to_one_readme_alone_is_reported(mutate, reported, changed):
    en, zh = EN.read_text(encoding="utf-8"), ZH.read_text(encoding="utf-8")
    if changed == "README.md":
        en = mutate(en)
    else:
        zh = mutate(zh)
    problems = drift(en, zh)
    assert any(reported in p for p in problems), problems


@pytest.mark.parametrize(
    "mutate", [add_a_code_block, change_a_flag_in_a_code_block, add_a_section, add_a_subsection]
)
def test_the_same_change_to_both_readmes_is_not_drift(mutate):
    en, zh = EN.read_text(encoding="utf-8"), ZH.read_text(encoding="utf-8")
    assert drift(mutate(en), mutate(zh)) == []


def test_a_changed_comment_in_a_code_block_is_not_drift():
    en = EN.read_text(encoding="utf-8")
    i = _first_code_block_line(en, lambda line: "  # " in line)
    line = en.splitlines()[i]
    changed = _replace_line(en, i, line[: line.index("  # ")] + "  # 注释已翻译")
    assert changed != en
    assert drift(en, changed) == []


@pytest.mark.parametrize(
    ("language", "line", "code"),
    [
        (
            "bash",
            "python -m hpo.search --trials 9   # the study",
            "python -m hpo.search --trials 9   ",
        ),
        (
            "bash",
            """pip install ".[a]#x" && echo '# no'  # yes""",
            """pip install ".[a]#x" && echo '# no'  """,
        ),
        ("bash", "echo a#b", "echo a#b"),
        ("bash", "# a whole-line comment", ""),
        ("python", 'x = "#"  # a comment', 'x = "#"  '),
        ("python", "f(a)# tight", "f(a)"),
        ("toml", 'choices = ["#", "b"]  # c', 'choices = ["#", "b"]  '),
        ("toml", "low = 0.5", "low = 0.5"),
    ],
)
def test_comments_are_stripped_only_outside_quotes(language, line, code):
    assert strip_comment(line, language) == code


def test_a_comment_only_line_may_be_wrapped_differently_in_the_translation():
    en = "x = 1  # one comment that is long\ny = 2"
    zh = "x = 1  # 较长的\n       # 一条注释\ny = 2"
    assert comparable("python", en) == comparable("python", zh) == "x = 1\ny = 2"
