"""The fenced code blocks of a Markdown file, and how the README and docs tests run each kind.

Convention (documented in docs/development.md): every fenced block names its
language. `python`, `sql` and `bash` blocks are code and run in `test_readme.py`; `text` blocks
are diagrams or sample output and are not code. An HTML comment on the line before a code
block changes how it runs: `<!-- setup: reason -->` runs it first in the shell of every other
shell block (activating the environment), `<!-- slow: reason -->` runs it only in the slow
test (it takes more than a few seconds), `<!-- not run: reason -->` never runs it (it serves
until Ctrl-C, or runs the whole suite). The reason is required.
"""

import ast
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

CODE_LANGUAGES = ("python", "sql", "bash")
LANGUAGES = (*CODE_LANGUAGES, "text")
FENCE = re.compile(r"^```(\S*)\s*$")
MARKER = re.compile(r"^<!--\s*(setup|slow|not run):\s*(.*?)\s*-->$")


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, its code, where it starts, and its marker, if any."""

    language: str
    code: str
    line: int
    marker: str = ""
    reason: str = ""
    source: str = "README.md"
    """The Markdown file the block is in, relative to the repository."""

    @property
    def name(self) -> str:
        return f"{self.source}:L{self.line}-{self.language}"


def fenced_blocks(markdown: str, source: str = "README.md") -> list[Block]:
    """Every fenced block of `markdown` (the text of the file `source`), with the marker
    comment just above it."""
    lines = markdown.splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        end = next((i for i in range(index + 1, len(lines)) if lines[i].strip() == "```"), None)
        if end is None:
            raise ValueError(f"line {index + 1}: a fenced block is never closed")
        marker = MARKER.match(lines[index - 1].strip()) if index else None
        blocks.append(
            Block(
                language=opening.group(1),
                code="\n".join(lines[index + 1 : end]) + "\n",
                line=index + 1,
                marker=marker.group(1) if marker else "",
                reason=marker.group(2) if marker else "",
                source=source,
            )
        )
        index = end + 1
    return blocks


def row_count(value: object) -> int | None:
    """Rows of a query result (Polars frame or DuckDB relation), None for anything else."""
    if isinstance(value, pl.LazyFrame):
        value = value.collect()
    if isinstance(value, pl.DataFrame):
        return value.height
    if isinstance(value, duckdb.DuckDBPyRelation):
        return len(value.fetchall())
    return None


def run_python(block: Block) -> None:
    """Run `block` statement by statement, as typed into a REPL; a statement that is an
    expression giving a query result must give at least one row (an empty result means the
    example's filter or path no longer matches the lake)."""
    namespace: dict[str, object] = {}
    for statement in ast.parse(block.code).body:
        where = f"{block.source} line {block.line + statement.lineno}"
        if isinstance(statement, ast.Expr):
            code = compile(ast.Expression(statement.value), where, "eval")
            value = eval(code, namespace)
            assert row_count(value) != 0, f"{where}: the query returns no rows"
        else:
            exec(compile(ast.Module([statement], []), where, "exec"), namespace)


def run_sql(block: Block) -> None:
    """Run `block` in a fresh DuckDB connection; its result must have rows."""
    with duckdb.connect() as connection:
        rows = connection.sql(block.code).fetchall()
    assert rows, f"{block.source} line {block.line}: the query returns no rows"


def run_bash(block: Block, setup: str, cwd: Path, env: dict[str, str], timeout_s: float) -> str:
    """Run `setup`, then `block`, in one bash (stopping at the first failing command); the
    output."""
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", setup + block.code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert done.returncode == 0, (
        f"{block.source} line {block.line}: exit {done.returncode}\n{done.stderr[-3000:]}"
    )
    return done.stdout
