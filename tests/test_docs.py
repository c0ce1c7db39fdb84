"""The README and docs/ stay true: every relative link resolves, and every command line they show parses.

- Links: every `[text](target)` and `![alt](image)` outside code in README.md and docs/*.md (http(s) and mailto
  aside) names a file or folder that exists, relative to the page; a `#anchor` into a Markdown page names one of
  its headings (GitHub's slugs).
- Commands: every `python -m gan_lightning <subcommand> ...` line, in code blocks (backslash continuations joined,
  `# comments` dropped) and in inline code, is run in-process without doing any work:
  - `fit`, `validate`, `test`, `predict` with `--print_config` appended: LightningCLI parses the config files and
    every override, type-checks them and exits before building anything;
  - `evaluate`, `sample`, `compare`, `submit` with `--help` (the subcommand exists), and then with their own
    arguments through argparse, stopped right after parsing (a misspelt option fails); `submit`'s options after
    `--` are parsed as `fit` options.
  A line followed in its code block by the error it shows (`gan_lightning: config error: ...`) must fail with
  that message.
- `sbatch slurm/<script> <config> [options]` lines: the script and the config exist and the options parse as `fit`.

Skipped, because they are synopses rather than commands: lines with `<placeholders>`, `...`, `[optional]` parts or
shell variables (`$VAR`). Placeholder values of the non-Lightning commands (`CKPT`, `HEX`) are fine: those are only
parsed. The commands run in a scratch folder holding `configs/` and `slurm/`, so checkpoints the docs name (under
`runs/`) are never read.
"""
import argparse
import contextlib
import io
import re
import shlex
import sys
from pathlib import Path
from unittest import mock

import pytest

from gan_lightning.cli import main

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LIGHTNING = {"fit", "validate", "test", "predict"}
OWN = {"evaluate", "sample", "export", "compare", "submit"}

FENCE = re.compile(r"^ {0,3}(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_LINK = re.compile(r"^ {0,3}\[[^\]^]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
IMG_TAG = re.compile(r"<img[^>]*\ssrc=\"([^\"]+)\"", re.IGNORECASE)
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)
COMMAND = re.compile(r"python -m gan_lightning\s")


def split_code(text: str) -> tuple[str, list[list[str]]]:
    """The page's prose (fenced and indented code blanked out) and its code blocks as lists of lines."""
    prose, blocks, block, fence, previous_blank = [], [], None, None, True
    for line in text.splitlines():
        if fence is None and FENCE.match(line):
            fence, block = FENCE.match(line).group(1), []
            prose.append("")
        elif fence is not None:
            if line.strip().startswith(fence):
                blocks.append(block)
                fence = None
            else:
                block.append(line)
            prose.append("")
        elif line.startswith("    ") and previous_blank and not line.lstrip().startswith(("-", "*", "|")):
            blocks.append([line[4:]])  # an indented code line (list continuations start after text, not a blank)
            prose.append("")
        else:
            prose.append(line)
            previous_blank = not line.strip()
            continue
        previous_blank = False
    return "\n".join(prose), blocks


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: inline markup and punctuation dropped, lower case, spaces to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    prose, _ = split_code(page.read_text())
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(prose):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(page: Path) -> list[str]:
    prose, _ = split_code(page.read_text())
    prose = INLINE_CODE.sub("", prose)
    targets = LINK.findall(prose) + REF_LINK.findall(prose) + IMG_TAG.findall(prose)
    return [t for t in targets if not re.match(r"(https?|mailto|ftp):", t)]


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with that anchor in {file.name}")
    return broken


def command_lines(page: Path) -> list[tuple[str, str | None]]:
    """(command line, the error line the page shows for it or None) for every gan_lightning or sbatch line."""
    prose, blocks = split_code(page.read_text())
    found = []
    for block in blocks:
        joined, pending = [], ""
        for line in block:
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            joined.append(pending + line)
            pending = ""
        for i, line in enumerate(joined):
            line = line.strip().removeprefix("$ ")
            error = joined[i + 1].strip() if i + 1 < len(joined) else ""
            error = error if error.startswith("gan_lightning: ") else None
            if COMMAND.search(line) or re.match(r"(\w+=(\"[^\"]*\"|\S+)\s+)*sbatch\s", line):
                found.append((line, error))
    for _, code in INLINE_CODE.findall(prose):
        code = " ".join(code.split())
        if COMMAND.search(code):
            found.append((code, None))
    return found


def is_synopsis(line: str) -> bool:
    return bool(re.search(r"<[^>]*>|\.\.\.|\$|\[--|\[\s*-", line))


def tokens(line: str) -> list[str]:
    return shlex.split(line, comments=True)


COMMANDS: dict[str, tuple[str, str | None]] = {}
SBATCH: dict[str, str] = {}
SKIPPED: list[str] = []
for _page in PAGES:
    for _line, _error in command_lines(_page):
        _where = f"{_page.relative_to(REPO)}: {_line}"
        _words = tokens(_line)  # comments dropped: they may show placeholders
        if is_synopsis(" ".join(_words)):
            SKIPPED.append(_where)
            continue
        if "sbatch" in _words and "gan_lightning" not in _words:
            SBATCH.setdefault(" ".join(_words[_words.index("sbatch"):]), _where)
        else:
            _words = _words[_words.index("gan_lightning") + 1:]
            COMMANDS.setdefault(shlex.join(_words), (_where, _error))


def with_print_config(words: list[str]) -> list[str]:
    return words if "--print_config" in words else [*words, "--print_config"]


def run_cli(args: list[str]) -> tuple[int, str]:
    """`python -m gan_lightning ARGS` in this process: (exit status, what it printed to stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err), \
            mock.patch.object(sys, "argv", ["gan_lightning"]):  # pytest's own arguments are not the command's
        try:
            main(args)
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            if not isinstance(exit_.code, (int, type(None))):
                err.write(str(exit_.code))
    return code, err.getvalue()


class Parsed(Exception):
    """Raised once argparse has accepted a command's arguments, before the command does anything."""


def parse_only(args: list[str], monkeypatch) -> tuple[int, str]:
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, *a, **k):
        original(self, *a, **k)
        raise Parsed

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
        try:
            return run_cli(args)
        except Parsed:
            return 0, ""


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A folder with the repository's configs/ and slurm/, where relative paths of the docs resolve."""
    for name in ("configs", "slurm"):
        (tmp_path / name).symlink_to(REPO / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_image_resolves(page):
    assert not broken_links(page), f"{page.relative_to(REPO)}: broken links:\n" + "\n".join(broken_links(page))


def test_the_pages_have_links_and_commands_to_check():
    """The extraction itself works: a parser that found nothing would pass every test above and below."""
    assert sum(len(links(p)) for p in PAGES) > 50
    assert len(COMMANDS) > 30 and len(SBATCH) >= 3
    assert {c.split()[0] for c in COMMANDS} >= LIGHTNING - {"predict"} | OWN


@pytest.mark.parametrize("command", sorted(COMMANDS), ids=lambda c: c[:90])
def test_every_command_line_in_the_docs_parses(command, scratch, monkeypatch):
    where, error = COMMANDS[command]
    words = shlex.split(command)
    subcommand = words[0]
    if error is not None:  # the page shows this line failing: it must fail, with that message
        code, stderr = run_cli(with_print_config(words) if subcommand in LIGHTNING else words)
        shown = error.split("...")[0].rstrip()
        assert code != 0 and shown in stderr, f"{where}\nexpected {shown!r}, got exit {code}:\n{stderr}"
        return
    if subcommand in LIGHTNING:
        code, stderr = run_cli(with_print_config(words))
        assert code == 0, f"{where}\n{stderr}"
        return
    assert subcommand in OWN, f"{where}: unknown subcommand {subcommand!r}"
    code, stderr = run_cli([subcommand, "--help"])
    assert code == 0, f"{where}\n{stderr}"
    code, stderr = parse_only(words, monkeypatch)
    assert code == 0, f"{where}\n{stderr}"
    if subcommand == "submit" and "--" in words:  # the rest goes to fit
        config = words[words.index("--config") + 1]
        code, stderr = run_cli(with_print_config(["fit", "--config", config, *words[words.index("--") + 1:]]))
        assert code == 0, f"{where}\n{stderr}"


@pytest.mark.parametrize("command", sorted(SBATCH), ids=lambda c: c[:90])
def test_every_sbatch_line_names_a_script_and_a_config_that_parse(command, scratch):
    where = SBATCH[command]
    words = shlex.split(command)[1:]
    while words and words[0].startswith("-"):  # sbatch's own options
        words.pop(0)
    script, rest = words[0], words[1:]
    assert (scratch / script).is_file(), f"{where}: no script {script}"
    if rest and rest[0].endswith(".yaml"):
        code, stderr = run_cli(with_print_config(["fit", "--config", rest[0], *rest[1:]]))
        assert code == 0, f"{where}\n{stderr}"


def test_skipped_synopses_are_few():
    """Synopses stand for a command; the docs otherwise show commands that run as written."""
    assert len(SKIPPED) <= 8, "\n".join(SKIPPED)
