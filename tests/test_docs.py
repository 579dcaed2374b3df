"""The documentation stays true to the code: the README is short, every relative link and anchor in the
docs resolves, and every ``vitc`` command line the docs show names a real command and real options."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from vitc.cli import cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


def command_lines(path: Path) -> list[str]:
    """Each ``vitc ...`` command in the file: inline code, and fenced blocks with continuation lines joined, comments cut."""
    text = re.sub(r"<!--.*?-->", "", path.read_text(), flags=re.S)  # notes for work in progress
    lines: list[str] = re.findall(r"(?<!`)`(vitc [^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if " -m vitc " in line:
                line = "vitc " + line.split(" -m vitc ", 1)[1]
            if line.startswith("vitc "):
                lines.append(line)
    return lines


def test_the_readme_is_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


def test_the_readme_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text()
    for page in DOCS[1:]:
        assert f"]({page.relative_to(ROOT)}" in readme, page


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(path: Path) -> None:
    for target in LINK.findall(path.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        assert dest.exists(), f"{path.name}: {target}"
        if anchor:
            assert anchor in anchors(dest), f"{path.name}: {target} (anchors: {sorted(anchors(dest))})"


def resolve(words: list[str]) -> tuple[click.Command, list[str]]:
    """The (sub)command the words name, and the words after it."""
    ctx = click.Context(cli)
    command: click.Command = cli
    rest = words[1:]
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        if rest[0].isupper():  # a placeholder (`vitc COMMAND --help`)
            return command, []
        sub = command.get_command(ctx, rest[0])
        assert sub is not None, f"no command {' '.join(words[: len(words) - len(rest) + 1])}"
        command, rest = sub, rest[1:]
    return command, rest


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_documented_commands_exist_with_their_options(path: Path) -> None:
    for line in command_lines(path):
        words = shlex.split(line.replace("[", "").replace("]", "").replace("|", " "))
        command, rest = resolve(words)
        options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help", "-h"}
        for word in rest:
            flag = word.split("=", 1)[0]
            if flag.startswith("-") and not re.fullmatch(r"-\d.*", flag):
                assert flag in options, f"{path.name}: `{line}`: {command.name} has no option {flag}"


def test_the_api_example_runs(tmp_path: Path) -> None:
    """docs/api.md's example, as written, in a fresh process (the API is what `import vitc` gives)."""
    import subprocess
    import sys

    from conftest import subprocess_env

    (code,) = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(), flags=re.S)
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=subprocess_env(),
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "top-1" in run.stdout and "INT8:" in run.stdout and "paired (IQR)" in run.stdout
    assert (tmp_path / "nano.onnx").is_file() and (tmp_path / "nano.int8.onnx").is_file()


def test_import_vitc_is_light_and_names_the_api() -> None:
    import subprocess
    import sys

    code = ("import sys, vitc; assert 'torch' not in sys.modules; "
            "assert callable(vitc.bench) and callable(vitc.verify) and 'torch' not in sys.modules; print(sorted(vitc.API))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
