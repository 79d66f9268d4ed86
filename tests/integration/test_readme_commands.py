"""Every command the README and the guides show is run against a live demo federation, so they cannot drift.

The ```sh blocks of README.md and of the guides in docs/ (DOCS, in that order) are read as a shell would split
them (a quoted argument or a trailing backslash carries a command onto the next line). Every ``hpf`` command
(``.venv/bin/hpf`` too) is run, in DOCS order, against one demo started for this module (``hpf demo``: 4 regions,
small ``--rows``), each in a fresh folder of its own that holds ``demo-data`` (the demo's folder) and the files
FILES makes for it. Then each command's exit code and output are checked by CHECKS, per verb.

Two trailing comments mean something to this test (README.md says so once, under "Quick start"):

    # not run by the tests: <why>    the line is not run (an install, a server that never returns, ...)
    # exit N: CODE                  the command is run and must fail with exit code N and error code CODE

To cover a new command in one of DOCS: a placeholder (an upper-case word such as ``ID`` or ``CONSENT-REF``) needs
an entry in SUBSTITUTIONS, a file the reader makes (such as ``my-node.yaml``) one in FILES, and a new verb a check
in CHECKS. A command missing any of them fails here with the line to add.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# the files whose commands are run, in this order: a later one may read what an earlier one left (the auditors'
# guide reads the receipts, refusals and screening the caseworkers' guide made)
DOCS = ("README.md", "docs/caseworkers.md", "docs/integrators.md", "docs/operators.md", "docs/auditors.md")
THIS = "tests/integration/test_readme_commands.py"

NOT_RUN = re.compile(r"^not run by the tests:\s*(?P<why>.*)$")
REFUSED = re.compile(r"^exit (?P<exit>\d+): (?P<code>[A-Z][A-Z0-9_]+)\b")
HPF = ("hpf", ".venv/bin/hpf")
SHELL_OPERATORS = frozenset({"&&", "||", "|", ";", "&", ">", ">>", "<", "(", ")"})
# an upper-case word of two letters or more, maybe with a file suffix: ID, CONSENT-REF, OLD.json
PLACEHOLDER = re.compile(r"^(?=(?:[^A-Z]*[A-Z]){2})[A-Z][A-Z0-9]*(?:[-_][A-Z0-9]+)*(?:\.[a-z]+)?$")

NODES = 4  # the README's demo has 4 cities, and --exclude-home needs 3 regions left for a masked sum
ROWS = 2000  # deposit rows per region: enough for the demo to plant a person with loans in two cities
DEMO_START_S = 300.0  # generating, certifying and starting 4 nodes and a coordinator on a busy 2-core machine
COMMAND_S = 120.0
STOP_S = 30.0

pytestmark = pytest.mark.timeout(900)  # one demo for the module: its start and every command run in the first test


# --- reading the README ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One command of a ```sh block: where it is, its words (comments dropped) and its trailing comment."""

    line: int  # the line of its file it starts on
    section: str  # the "## " heading it is under
    text: str  # as written, continuation lines joined with newlines
    argv: tuple[str, ...]
    comment: str  # the trailing comment's text without "#", "" if none
    complete: bool = True  # False: the block ends with a quote left open or a trailing backslash
    file: str = "README.md"  # the file of DOCS it is in

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def not_run(self) -> str | None:
        """Why the tests do not run it, when the README marks it so ("" for a mark without a reason)."""
        found = NOT_RUN.match(self.comment)
        return None if found is None else found["why"].strip()

    @property
    def refusal(self) -> tuple[int, str] | None:
        found = REFUSED.match(self.comment)
        return None if found is None else (int(found["exit"]), found["code"])

    @property
    def label(self) -> str:
        return f"{self.where}: {' '.join(self.text.split())}"


def fenced_blocks(text: str, lang: str) -> Iterator[tuple[int, str, list[str]]]:
    """Each ```lang block: its first line's number, its section, and its lines without the fence's indentation."""
    lines = text.splitlines()
    section = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        fence = re.match(rf"^(\s*)```{lang}\s*$", line)
        i += 1
        if fence is None:
            continue
        indent, start, body = len(fence[1]), i + 1, []
        while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
            body.append(lines[i][indent:] if not lines[i][:indent].strip() else lines[i].lstrip())
            i += 1
        i += 1
        yield start, section, body


def _scan(text: str) -> tuple[str, str, bool]:
    """``text`` without its comments, the text of its last comment, and whether it is a complete command (no
    quote left open, no trailing backslash)."""
    code, comment, quote, i = [], "", "", 0
    while i < len(text):
        ch = text[i]
        if quote:
            code.append(ch)
            if ch == "\\" and quote == '"' and i + 1 < len(text):
                code.append(text[i + 1])
                i += 1
            elif ch == quote:
                quote = ""
        elif ch == "\\" and i + 1 < len(text):
            code.append(ch + text[i + 1])
            i += 1
        elif ch in "'\"":
            quote = ch
            code.append(ch)
        elif ch == "#" and (i == 0 or text[i - 1].isspace()):
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            comment = text[i + 1 : end].strip()
            i = end
            continue
        else:
            code.append(ch)
        i += 1
    joined = "".join(code)
    return joined, comment, not quote and not joined.rstrip(" \t").endswith("\\")


def _words(code: str) -> tuple[str, ...]:
    """Shell words; an operator (&&, |, >...) is a word of its own."""
    lex = shlex.shlex(code.replace("\\\n", " "), posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = ""
    return tuple(lex)


def readme_commands(text: str, file: str = "README.md") -> list[Command]:
    """Every command of every ```sh block of ``file`` (whose text is ``text``), in order. A line that is only a
    comment is a note, not a command."""
    commands = []
    for start, section, body in fenced_blocks(text, "sh"):
        pending: list[str] = []
        first = start
        for number, line in enumerate(body, start):
            if not pending:
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                first = number
            pending.append(line)
            joined = "\n".join(pending)
            code, comment, complete = _scan(joined)
            if complete:
                commands.append(Command(first, section, joined, _words(code), comment, file=file))
                pending = []
        if pending:
            commands.append(Command(first, section, "\n".join(pending), (), "", complete=False, file=file))
    return commands


def yaml_blocks(text: str) -> list[str]:
    """The text of every ```yaml block, without the fence's indentation."""
    return ["\n".join(body) + "\n" for _, _, body in fenced_blocks(text, "yaml")]


def placeholders(argv: tuple[str, ...]) -> list[str]:
    """The placeholders in a command's words: upper-case words, whole or as a path's part (never inside an
    argument holding a space, which is SQL)."""
    found = []
    for word in argv:
        if any(c.isspace() for c in word):
            continue
        for part in re.split(r"[/=,:]", word):
            if PLACEHOLDER.match(part) and part not in found:
                found.append(part)
    return found


DOC_TEXTS = {name: (ROOT / name).read_text(encoding="utf-8") for name in DOCS}
COMMANDS = [c for name, text in DOC_TEXTS.items() for c in readme_commands(text, name)]
YAML_BLOCKS = [block for text in DOC_TEXTS.values() for block in yaml_blocks(text)]
RUN = [c for c in COMMANDS if c.not_run is None]
MARKED = [c for c in COMMANDS if c.not_run is not None]


def _catalog_block() -> str:
    """The guides' catalog example (the yaml block naming a federation and its tables)."""
    for block in YAML_BLOCKS:
        doc = yaml.safe_load(block)
        if isinstance(doc, dict) and "federation" in doc and "tables" in doc:
            return block
    raise AssertionError(f"none of {DOCS} has a catalog example (a ```yaml block with federation: and tables:)")


# --- the demo every command runs against -------------------------------------------------------------------------


@dataclass
class Demo:
    """The demo the module started, and what the substitutions and checks read from it."""

    workspace: Path
    data: Path
    person: str  # the person its ready: lines look up: one with housing loans in two cities
    node_ids: list[str]
    parties: list[int] = field(default_factory=list)  # the demo's node and coordinator processes

    @property
    def home(self) -> str:
        """The demo people's home region (the first city): its log is the one the README's audit commands read."""
        return self.node_ids[0]

    def audit_key_file(self, node: str) -> str:
        """The node's audit public key as the catalog publishes it, written to a file (what --public-key reads)."""
        catalog = yaml.safe_load((self.data / "federation.yaml").read_text(encoding="utf-8"))
        key = next(n["audit_key"] for n in catalog["nodes"] if n["id"] == node)
        path = self.workspace / f"{node}-audit-key.txt"
        path.write_text(key + "\n", encoding="utf-8")
        return str(path)

    def older_checkpoint(self, node: str) -> str:
        """The first checkpoint the node's log signed, kept in a file of its own (what --checkpoint reads)."""
        first = (self.data / "state" / node / "audit" / "checkpoints.jsonl").read_text(encoding="utf-8")
        path = self.workspace / f"{node}-first-checkpoint.json"
        path.write_text(first.splitlines()[0] + "\n", encoding="utf-8")
        return str(path)


# Placeholder -> its value in the demo. A README command with a placeholder not listed here fails its test.
SUBSTITUTIONS: dict[str, Callable[[Demo], str]] = {
    "ID": lambda demo: demo.person,  # a person: the one the demo's ready: lines look up
    "CONSENT-REF": lambda demo: "C1",
    "DIR": lambda demo: f"demo-data/state/{demo.home}/audit",  # a node's audit log directory
    "NODE": lambda demo: demo.home,
    "KEY": lambda demo: demo.audit_key_file(demo.home),
    "OLD.json": lambda demo: demo.older_checkpoint(demo.home),
    "RECEIPTS.jsonl": lambda demo: "demo-data/receipts/caseworker.jsonl",
    "GRANT-ID": lambda demo: "5f" * 16,  # a grant id, as `hpf consent grant` writes them
}

# A node policy for the README's own catalog (its one table, contributions): what a reader writes as my-node.yaml.
MY_NODE_POLICY = """\
version: 1
description: a node of the README's own federation
purposes:
  statistics: aggregate reporting
classes:
  identifier: []
  public: [output, filter, group, aggregate]
roles:
  caseworker:
    aggregates: [count, sum, avg]
    min_group_size: 5
    tables:
      contributions: {}
  analyst:
    aggregates: [count, sum]
    min_group_size: 10
    purposes: [statistics]
    privacy: {mode: dp, epsilon: 1.0, delta: 1.0e-8, budget: {epsilon: 30, delta: 1.0e-6, period: month}, threshold: 20}
    tables:
      contributions: {}
"""


def _readme_pki_init(folder: Path, demo: Demo) -> None:
    """What the README's own `hpf pki init` makes, made by that command."""
    init = next((c for c in RUN if c.argv[1:3] == ("pki", "init")), None)
    assert init is not None, "the README no longer shows `hpf pki init`, whose certificates its revoke example revokes"
    ran = _run(init.argv[1:], folder)
    assert ran.returncode == 0, f"{init.label}: {ran.stderr}"


def _node_block() -> str:
    """The guides' node.yaml example."""
    for block in YAML_BLOCKS:
        if "node_id" in (yaml.safe_load(block) or {}):
            return block
    raise AssertionError(f"none of {DOCS} has a node.yaml example (a ```yaml block with node_id:)")


def _readme_node(folder: Path, demo: Demo, node: str = "north", name: str = "node.yaml") -> Path:
    """The README's node.yaml (for ``node``, its own state), beside the catalog and certificates it names."""
    if not (folder / "federation.yaml").exists():
        FILES["federation.yaml"](folder, demo)
    if not (folder / "pki" / "nodes" / f"{node}.pem").exists():
        _readme_pki_init(folder, demo)
    doc = yaml.safe_load(_node_block())
    assert doc["node_id"] == "north", "the README's node.yaml is north's"
    text = _node_block() if node == "north" else _node_block().replace("north", node)
    (folder / name).write_text(text, encoding="utf-8")
    return folder / name


def _readme_node_keys(node: str) -> Callable[[Path, Demo], object]:
    """``NODE.keys.yaml``: what `hpf node keys` writes on that node's host, for the README's `hpf catalog keys`."""

    def make(folder: Path, demo: Demo) -> None:
        config = _readme_node(folder, demo, node, f"node-{node}.yaml")
        made = _run(["node", "keys", "--config", str(config), "--output", f"{node}.keys.yaml"], folder)
        assert made.returncode == 0, made.stderr

    return make


def _readme_consent_issuer(folder: Path, demo: Demo) -> None:
    """``consent-issuer/``: the key folder the README's `hpf consent keys` makes."""
    made = _run(["consent", "keys", "--issuer", "shanghai-consent"], folder)
    assert made.returncode == 0, made.stderr


def _own_files(region: str) -> Callable[[Path, Demo], object]:
    """A region's own table for the README's `hpf init`: a small lineitem (``data/REGION/lineitem.parquet``)."""

    def make(folder: Path, demo: Demo) -> None:
        import duckdb

        path = folder / "data" / region / "lineitem.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        seed = sum(map(ord, region))
        duckdb.sql(
            f"COPY (SELECT range::BIGINT AS l_orderkey, (1 + hash(range, {seed}) % 50)::DECIMAL(15,2) AS l_quantity, "
            f"['A', 'N', 'R'][1 + (hash(range, {seed}, 1) % 3)::BIGINT] AS l_returnflag FROM range(300)) "
            f"TO '{path}' (FORMAT parquet)"
        )

    return make


# A file a README command names that the reader makes -> how this test makes it in the command's folder.
FILES: dict[str, Callable[[Path, Demo], object]] = {
    **{f"{r}:lineitem=data/{r}/lineitem.parquet": _own_files(r) for r in ("north", "south", "east")},
    "federation.yaml": lambda folder, demo: (folder / "federation.yaml").write_text(_catalog_block()),
    "my-node.yaml": lambda folder, demo: (folder / "my-node.yaml").write_text(MY_NODE_POLICY),
    "pki/people/bob.pem": _readme_pki_init,
    "node.yaml": _readme_node,
    "north.keys.yaml": _readme_node_keys("north"),
    "south.keys.yaml": _readme_node_keys("south"),
    "consent-issuer": _readme_consent_issuer,
}


def _run(args: tuple[str, ...] | list[str], cwd: Path, timeout: float = COMMAND_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hpf.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "200"},
    )


def _children(pid: int) -> list[int]:
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found += [int(p) for p in children.read_text().split()]
    return found


def _alive_as(pid: int, marker: str) -> bool:
    """Whether ``pid`` still runs a command line holding ``marker`` (not a pid reused by another process)."""
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


@contextlib.contextmanager
def serving_demo(workspace: Path) -> Iterator[Demo]:
    """`hpf demo` serving in the background until the block ends; its ready: lines name the person to look up."""
    data = workspace / "demo-data"
    out, err = workspace / "demo.out", workspace / "demo.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hpf.cli", "demo", "--nodes", str(NODES), "--rows", str(ROWS), "--data", str(data)],
            cwd=workspace,
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    demo: Demo | None = None
    try:
        deadline = time.monotonic() + DEMO_START_S
        lines: list[str] = []
        while len(lines) < 3:
            if proc.poll() is not None:
                raise AssertionError(f"hpf demo exited ({proc.returncode}) before its ready: lines: {err.read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"hpf demo printed no ready: lines in {DEMO_START_S:.0f}s: {err.read_text()}")
            time.sleep(0.2)
            lines = out.read_text(encoding="utf-8").splitlines()
        assert lines[0].startswith("ready: "), lines
        lookup = shlex.split(lines[1])
        assert lookup[1:2] == ["lookup"], f"the demo's second ready: line is no longer a lookup: {lines[1]}"
        catalog = yaml.safe_load((data / "federation.yaml").read_text(encoding="utf-8"))
        demo = Demo(workspace, data, lookup[-1], [n["id"] for n in catalog["nodes"]], _children(proc.pid))
        yield demo
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the demo stops its parties, then itself
        try:
            proc.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_S)
        for pid in demo.parties if demo else []:
            if _alive_as(pid, str(data)):
                os.kill(pid, signal.SIGKILL)


@dataclass
class Ran:
    """A README command as run: its words with the placeholders filled in, where, and what it did."""

    command: Command
    argv: tuple[str, ...]  # without the leading hpf
    cwd: Path
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    problem: str = ""  # why it was not run (it could not be), or how it failed to finish

    def context(self) -> str:
        return (
            f"{self.command.label}\nran: hpf {shlex.join(self.argv)}\nin: {self.cwd}\nexit: {self.returncode}\n"
            f"stdout:\n{self.stdout[-3000:]}\nstderr:\n{self.stderr[-3000:]}"
        )


def _unrunnable(command: Command) -> str:
    """Why a command not marked `# not run by the tests:` cannot be run, or "" when it can."""
    mark = "or mark it: end its last line with `# not run by the tests: <why>`"
    if not command.complete:
        return f"{command.label}: a quote is left open or the last line ends in a backslash"
    if not command.argv or command.argv[0] not in HPF:
        return f"{command.label}: not an hpf command; {mark}"
    operators = [w for w in command.argv if w in SHELL_OPERATORS]
    if operators:
        return f"{command.label}: shell operators {operators} are not run here: write one hpf command, {mark}"
    if any(w.startswith("[") or w.endswith("]") or w == "..." for w in command.argv):
        return f"{command.label}: a synopsis ([optional] parts, ...) cannot be run: write a runnable command, {mark}"
    unknown = [p for p in placeholders(command.argv) if p not in SUBSTITUTIONS]
    if unknown:
        entries = ", ".join(f'"{p}": lambda demo: ...' for p in unknown)
        return (
            f"{command.label}: placeholder(s) {', '.join(unknown)} have no value: add {entries} to SUBSTITUTIONS in "
            f"{THIS}, with a real value of the demo"
        )
    return ""


def run_readme_command(command: Command, demo: Demo, folder: Path) -> Ran:
    folder.mkdir(parents=True)
    (folder / "demo-data").symlink_to(demo.data, target_is_directory=True)
    problem = _unrunnable(command)
    if problem:
        return Ran(command, command.argv[1:], folder, problem=problem)
    argv = []
    for word in command.argv[1:]:
        if word in FILES and not (folder / word).exists():
            try:
                FILES[word](folder, demo)
            except (AssertionError, OSError, subprocess.TimeoutExpired) as err:
                return Ran(command, command.argv[1:], folder, problem=f"{command.label}: making {word}: {err}")
        if not any(c.isspace() for c in word):
            word = "".join(
                SUBSTITUTIONS[part](demo) if part in SUBSTITUTIONS else part for part in re.split(r"([/=,:])", word)
            )
        argv.append(word)
    ran = Ran(command, tuple(argv), folder)
    try:
        done = _run(argv, folder)
    except subprocess.TimeoutExpired:
        ran.problem = f"{command.label}: did not finish in {COMMAND_S:.0f}s"
        return ran
    ran.returncode, ran.stdout, ran.stderr = done.returncode, done.stdout, done.stderr
    return ran


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with serving_demo(tmp_path_factory.mktemp("readme")) as running:
        yield running


@pytest.fixture(scope="module")
def ran(demo: Demo) -> dict[str, Ran]:
    """Every command the tests run, run once, in DOCS order (a later one may read what an earlier one left: the
    caseworker's receipts, a refusal in the audit log), by the file and line it starts on."""
    return {c.where: run_readme_command(c, demo, demo.workspace / _folder(c)) for c in RUN}


def _folder(command: Command) -> str:
    return f"{Path(command.file).stem}-line-{command.line}"


# --- what each verb's output must show -----------------------------------------------------------------------------


def _option(argv: tuple[str, ...], *names: str) -> str | None:
    for i, word in enumerate(argv):
        if word in names and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _table(text: str) -> tuple[list[str], list[list[str]]]:
    """The header and body rows of the first table ``text`` prints (rich's box characters)."""
    header: list[str] = []
    rows: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("┃") and not header:
            header = [c.strip() for c in line.strip("┃").split("┃")]
        elif line.startswith("│") and header:
            rows.append([c.strip() for c in line.strip("│").split("│")])
        elif line.startswith("└") and header:
            break
    return header, rows


def _sql_columns(sql: str, demo: Demo) -> list[str]:
    from hpf.federation.catalog import load_catalog
    from hpf.federation.planner import plan_query

    return list(plan_query(sql, load_catalog(demo.data / "federation.yaml")).output_names)


def check_query(r: Ran, demo: Demo) -> None:
    sql = r.argv[-1]
    if "--explain" in r.argv:
        n = len(demo.node_ids)
        assert f"{n} of {n} region(s) would answer" in r.stdout, "every region's policy should accept it"
        assert re.search(r"^plan:\s+[0-9a-f]{16}$", r.stdout, re.M), "the explain prints the plan's fingerprint"
        return
    columns = _sql_columns(sql, demo)
    fmt = _option(r.argv, "--format", "-f") or "table"
    if fmt == "json":
        doc = json.loads(r.stdout)
        assert doc["columns"] == columns and doc["rows"], doc
        assert sorted(doc["regions"]["answered"]) == sorted(demo.node_ids) and doc["regions"]["missing"] == []
        return
    if fmt == "csv":
        assert next(csv.reader(io.StringIO(r.stdout))) == columns
        return
    header, rows = _table(r.stdout)
    assert header == columns, f"the table's columns are {header}, the query's {columns}"
    assert rows, "the table has no row"
    assert f"regions answered: {len(demo.node_ids)}" in r.stdout.splitlines()


# the lines `hpf lookup` prints for each fact asked for (--facts)
FACTS_PRINTED = {
    "accounts": ("cities with an account", "with an active account", "with a sealed account"),
    "contributions": ("contribution months", "contributions"),
    "balance": ("balance",),
    "loans": ("housing loans", "outstanding"),
    "loan_cities": ("cities with an open loan",),
    "duplicate_loans": ("open loans in two or more cities",),
}
FACT_LABELS = (
    "cities with an account",
    "contribution months",
    "contributions",
    "balance",
    "housing loans",
    "outstanding",
    "cities with an open loan",
    "open loans in two or more cities",
)


def check_lookup(r: Ran, demo: Demo) -> None:
    person = r.argv[-1]
    asked = [n for n in demo.node_ids if not ("--exclude-home" in r.argv and n == demo.home)]
    if (_option(r.argv, "--format", "-f") or "table") == "json":
        doc = json.loads(r.stdout)
        assert doc["regions"]["asked"] == asked and doc["regions"]["answered"] == asked and doc["complete"], doc
        assert {"cities", "contribution_months", "balance_fen", "outstanding_fen"} <= doc["facts"].keys()
        if person == demo.person:
            assert doc["facts"]["duplicate_loans"] is True, "the demo's person holds loans in two cities"
        return
    scope = f"every region but {demo.home}" if "--exclude-home" in r.argv else "federation-wide"
    assert r.stdout.startswith(f"Facts about one person, {scope}"), "the lookup's first line says its scope"
    header, rows = _table(r.stdout)
    facts = {row[0]: row[1] for row in rows}
    named = _option(r.argv, "--facts")
    if named is None:
        assert header == ["fact", "value"] and all(label in facts for label in FACT_LABELS), facts
    else:  # only the facts asked for are printed
        wanted = {label for fact in named.split(",") for label in FACTS_PRINTED[fact]}
        assert header == ["fact", "value"] and set(facts) == wanted, facts
    assert f"regions answered: {len(asked)} of {len(asked)}" in r.stdout
    if person == demo.person and "open loans in two or more cities" in facts:
        assert facts["open loans in two or more cities"] == "YES", "the demo's person holds loans in two cities"
    if "--by-city" in r.argv:
        by_city = r.stdout[r.stdout.index("By city") :]
        assert [row[0] for row in _table(by_city)[1]] == asked, "one row per region asked"


def check_screen(r: Ran, demo: Demo) -> None:
    source = _option(r.argv, "--input", "-i")
    assert source is not None
    with (r.cwd / source).open(encoding="utf-8") as fh:
        applicants = [row["person_id"] for row in csv.DictReader(fh)]
    assert f"screened {len(applicants):,} applicant(s)" in r.stderr
    output = _option(r.argv, "--output", "-o")
    text = (r.cwd / output).read_text(encoding="utf-8") if output else r.stdout
    if (_option(r.argv, "--format", "-f") or "csv") == "json":
        results = json.loads(text)["applicants"]
    else:
        results = list(csv.DictReader(io.StringIO(text)))
    assert [row["person_id"] for row in results] == applicants, "one result per applicant, in the input's order"
    flagged = {row["person_id"] for row in results if str(row["duplicate_loans"]).lower() == "true"}
    assert demo.person in flagged, "the demo's person, among the applicants it wrote, holds loans in two cities"


def check_audit_show(r: Ran, demo: Demo) -> None:
    footer = re.search(r"^(\d+) shown, (\d+) matching, (\d+) in the log$", r.stdout, re.M)
    assert footer is not None, "the table ends with how many entries it shows"
    shown = int(footer[1])
    assert shown >= 1, "the README's example finds entries in the demo's log"
    header, rows = _table(r.stdout)
    assert len(rows) == shown
    decision = _option(r.argv, "--decision")
    if decision:
        assert {row[header.index("decision")] for row in rows} == {decision}
    if "--person" in r.argv:
        assert {row[header.index("operation")] for row in rows} == {"lookup"}, "only lookups name a person"
    limit = _option(r.argv, "--limit")
    assert limit is None or shown <= int(limit)


def check_audit_consent(r: Ran, demo: Demo) -> None:
    footer = re.search(r"^(\d+) lookup\(s\), (\d+) under a named grant, \d+ in the log$", r.stdout, re.M)
    assert footer is not None, "the table ends with how many lookups of the person it found"
    assert int(footer[1]) >= 1, "the README's person was looked up"
    if "--tokens" in r.argv and (_option(r.argv, "--tokens") or "").endswith("applicants.csv"):
        assert int(footer[2]) >= 1, "the bank's screening of the README's person is named by its grant"
    assert demo.person not in r.stdout, "the identifier is never printed"


def check_audit_verify(r: Ran, demo: Demo) -> None:
    directory = r.argv[2]
    node = _option(r.argv, "--node") or demo.home
    pinned = "--catalog" in r.argv or "--public-key" in r.argv
    ok = rf"^{re.escape(directory)}: ok: (\d+) entries, \d+ checkpoints, node {node}, "
    line = re.search(ok + r"root [0-9a-f]{64} at size \d+ \(.*\), key (NOT )?pinned$", r.stdout, re.M)
    assert line is not None, "the first line says the log is ok, whose it is and its root"
    assert int(line[1]) >= 1 and (line[2] is None) == pinned, "the key is pinned exactly when one is given"
    receipts = _option(r.argv, "--receipts")
    if receipts:
        kept = re.search(rf"^{re.escape(receipts)}: (\d+) receipt\(s\) of node {node} still in the log", r.stdout, re.M)
        assert kept is not None and int(kept[1]) >= 1, "the caseworker's receipts of this node are checked"


def check_audit_receipts(r: Ran, demo: Demo) -> None:
    last = re.search(r"^(\d+) of (\d+) receipt\(s\) still logged", r.stdout, re.M)
    assert last is not None and last[1] == last[2] and int(last[1]) >= 1, "every receipt kept is still logged"
    header, rows = _table(r.stdout)
    assert {row[header.index("status")] for row in rows} == {"still logged"}
    assert {row[0] for row in rows} == set(demo.node_ids), "the caseworker holds receipts of every region"


def check_policy_check(r: Ran, demo: Demo) -> None:
    path, catalog = r.argv[2], _option(r.argv, "--catalog")
    against = f", checked against {catalog}" if catalog else ""
    ok = rf"^{re.escape(path)}: ok: [1-9]\d* role\(s\), \d+ purpose\(s\){re.escape(against)}$"
    assert re.search(ok, r.stdout, re.M), "the first line says the policy is ok"


def check_policy_show(r: Ran, demo: Demo) -> None:
    head, _, body = r.stdout.partition("\n")
    assert head == f"# effective policy of {r.argv[2]}"
    assert yaml.safe_load(body)["roles"], "the merged policy names its roles"


def check_catalog_check(r: Ran, demo: Demo) -> None:
    path = r.argv[2]
    doc = yaml.safe_load((r.cwd / path).read_text(encoding="utf-8"))
    nodes, tables = len(doc["nodes"]), len(doc["tables"])
    groupable = sum(1 for t in doc["tables"].values() for c in t["columns"].values() if "domain" in c)
    expected = [f"{path}: ok: {nodes} node(s), {tables} table(s), {groupable} groupable column(s)"]
    unclassified = [
        f"{t}.{c}" for t, s in doc["tables"].items() for c, col in s["columns"].items() if not col.get("class")
    ]
    if unclassified:  # the README's catalog shows one, and what every policy makes of it
        expected.append(f"note: {len(unclassified)} column(s) have no class yet ({', '.join(unclassified)}): every ")
    lines = r.stdout.strip().splitlines()
    assert len(lines) == len(expected) and lines[0] == expected[0]
    assert all(line.startswith(want) for line, want in zip(lines[1:], expected[1:], strict=True))


def check_pki_init(r: Ran, demo: Demo) -> None:
    folder = r.cwd / (_option(r.argv, "--dir") or "")
    federation = _option(r.argv, "--federation")
    nodes = (_option(r.argv, "--nodes") or "").split(",")
    people = [r.argv[i + 1].split(":")[0] for i, w in enumerate(r.argv) if w == "--person"]
    assert r.stdout.startswith(f"federation {federation} (servers are named coordinator.{federation} ")
    made = [folder / "ca.pem", folder / "coordinator.pem"]
    made += [folder / "nodes" / f"{n}.pem" for n in nodes] + [folder / "people" / f"{p}.pem" for p in people]
    assert all(path.exists() for path in made), [str(p) for p in made if not p.exists()]
    assert f"\n{len(made)} certificate(s) written" in r.stdout, "a fresh folder: every certificate is new"


def check_pki_revoke(r: Ran, demo: Demo) -> None:
    name = Path(r.argv[-1]).stem
    assert re.search(rf"^revoked:\s+{re.escape(name)} \(serial [0-9a-f]+\)$", r.stdout, re.M)
    assert re.search(r"^list:\s+\S*crl\.pem \(number [2-9]\d*\)$", r.stdout, re.M), "the next list, numbered"


def check_node_keys(r: Ran, demo: Demo) -> None:
    from hpf.federation.catalog_keys import load_node_keys

    output = _option(r.argv, "--output")
    config = yaml.safe_load((r.cwd / (_option(r.argv, "--config") or "")).read_text(encoding="utf-8"))
    assert f"node {config['node_id']}: keys kept in " in r.stderr
    text = r.stdout if output is None else (r.cwd / output).read_text(encoding="utf-8")
    if output is not None:
        assert f"public keys written to {output}" in r.stderr, "the key file is this command's"
    keys = load_node_keys(r.cwd / output) if output else None
    assert keys is None or (keys.node, bool(keys.audit_key), bool(keys.agreement_key)) == (
        config["node_id"],
        True,
        True,
    )
    assert "PRIVATE" not in text + r.stdout + r.stderr, "no secret is printed"


def check_catalog_keys(r: Ran, demo: Demo) -> None:
    from hpf.federation.catalog import load_catalog
    from hpf.federation.catalog_keys import load_node_keys

    catalog_path = r.argv[2]
    published = {n.id: (n.audit_key, n.agreement_key) for n in load_catalog(r.cwd / catalog_path).nodes}
    for key_file in r.argv[3:]:
        keys = load_node_keys(r.cwd / key_file)
        assert published[keys.node] == (keys.audit_key, keys.agreement_key), f"{key_file}'s keys are published"
        assert re.search(rf"^{re.escape(catalog_path)}: node {keys.node}: .*published", r.stdout, re.M), r.stdout
    assert f"{catalog_path}: written" in r.stdout


def check_init(r: Ran, demo: Demo) -> None:
    from hpf.federation.catalog import load_catalog

    folder = r.cwd / r.argv[1]
    catalog = load_catalog(folder / "federation.yaml")
    sources = [r.argv[i + 1] for i, w in enumerate(r.argv) if w == "--source"]
    regions = [s.split(":")[0] for s in sources]
    assert catalog.node_ids == regions and catalog.federation == _option(r.argv, "--federation")
    assert all(n.audit_key and n.agreement_key for n in catalog.nodes), "every node's keys are published"
    assert all(c.column_class is None for t in catalog.tables.values() for c in t.columns.values()), "no class guessed"
    serve = [line for line in r.stdout.splitlines() if " serve --config " in line]
    assert len(serve) == len(regions) + 1, "a command per node and the coordinator"
    assert all((folder / "nodes" / f"{region}.yaml").exists() for region in regions)
    assert re.search(r' query -p \S+client\.yaml "SELECT COUNT\(\*\) FROM lineitem"$', r.stdout, re.M), r.stdout


# A verb (the words after hpf) -> what its output must show. A README command whose verb is not here fails.
def check_consent_keys(r: Ran, demo: Demo) -> None:
    from hpf.federation.catalog_parties import IssuerEntry

    entry = yaml.safe_load(r.stdout)
    assert IssuerEntry.model_validate(entry[0]).id == _option(r.argv, "--issuer"), "the catalog's issuers: entry"
    assert (r.cwd / "consent-issuer" / "issuer.key").stat().st_mode & 0o777 == 0o600


def check_consent_grant(r: Ran, demo: Demo) -> None:
    from hpf.federation.consent import tokens as consent

    people = list(csv.DictReader((r.cwd / (_option(r.argv, "--input") or "")).open(encoding="utf-8")))
    out = r.cwd / (_option(r.argv, "--out") or "")
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == len(people) and f"granted: {len(rows)} consent(s)" in r.stdout
    text = out.read_text(encoding="utf-8") + r.stdout + r.stderr
    assert not any(p["person_id"] in text for p in people), "no identifier is written or printed"
    token = consent.parse_token_text(rows[0]["consent_token"])
    facts = (_option(r.argv, "--facts") or "").split(",")
    assert token.grant.purpose == _option(r.argv, "--purpose") and consent.fact_names(token.grant.facts) == tuple(facts)


def check_consent_revoke(r: Ran, demo: Demo) -> None:
    path = _option(r.argv, "--list") or ""
    assert re.search(rf"^list:\s+{re.escape(path)} \(number 1\)$", r.stdout, re.M), "a new list, numbered 1"


def check_node_refresh(r: Ran, demo: Demo) -> None:
    config = yaml.safe_load((r.cwd / (_option(r.argv, "--config") or "")).read_text(encoding="utf-8"))
    node = config["node_id"]
    assert f"node {node}: the node took the request" in r.stderr, "the running node took it"
    found = re.search(rf"^node {node}: lookup facts computed for ([\d,]+) people in [\d,]+ ms$", r.stdout, re.M)
    assert found and int(found.group(1).replace(",", "")) > 0, "the running node computed its facts"


def check_node_doctor(r: Ran, demo: Demo) -> None:
    config = yaml.safe_load((r.cwd / (_option(r.argv, "--config") or "")).read_text(encoding="utf-8"))
    node = config["node_id"]
    lines = r.stdout.splitlines()
    for check in ("config", "certificates", "catalog", "policy", "sources", "reachability"):
        assert f"ok       {check}" in lines, f"the {check} check found nothing wrong"
    assert re.search(rf"^note     node {node} is running and SERVING on ", r.stdout, re.M), "the running node serves"
    assert lines[-1] == f"node {node}: no problem found (0 problems, 0 warnings)"


def check_health(r: Ran, demo: Demo) -> None:
    assert re.fullmatch(r"SERVING \S+:\d+\n", r.stdout), "one line: SERVING and the address"


CHECKS: dict[tuple[str, ...], Callable[[Ran, Demo], None]] = {
    ("query",): check_query,
    ("lookup",): check_lookup,
    ("screen",): check_screen,
    ("audit", "show"): check_audit_show,
    ("audit", "consent"): check_audit_consent,
    ("audit", "verify"): check_audit_verify,
    ("audit", "receipts"): check_audit_receipts,
    ("policy", "check"): check_policy_check,
    ("policy", "show"): check_policy_show,
    ("catalog", "check"): check_catalog_check,
    ("pki", "init"): check_pki_init,
    ("pki", "revoke"): check_pki_revoke,
    ("node", "keys"): check_node_keys,
    ("node", "refresh"): check_node_refresh,
    ("node", "doctor"): check_node_doctor,
    ("node", "health"): check_health,
    ("coordinator", "health"): check_health,
    ("catalog", "keys"): check_catalog_keys,
    ("init",): check_init,
    ("consent", "keys"): check_consent_keys,
    ("consent", "grant"): check_consent_grant,
    ("consent", "revoke"): check_consent_revoke,
}


def _verb(argv: tuple[str, ...]) -> tuple[str, ...] | None:
    return next((v for v in sorted(CHECKS, key=len, reverse=True) if argv[: len(v)] == v), None)


# --- the tests --------------------------------------------------------------------------------------------------


def _id(command: Command) -> str:
    verb = []
    for word in command.argv[1:3]:
        if word.startswith("-"):
            break
        verb.append(word)
    return f"{Path(command.file).stem}-line{command.line}-" + "-".join(verb)


@pytest.mark.parametrize("command", RUN, ids=[_id(c) for c in RUN])
def test_readme_command(command: Command, ran: dict[str, Ran], demo: Demo) -> None:
    """The command runs against the demo with the exit code the README implies and the output it promises."""
    r = ran[command.where]
    if r.problem:
        pytest.fail(r.problem + ("" if r.returncode is None else "\n" + r.context()))
    refusal = command.refusal
    if refusal is not None:
        exit_code, code = refusal
        assert r.returncode == exit_code and f"[{code}]" in r.stderr, f"the README shows it refused:\n{r.context()}"
        return
    assert r.returncode == 0, (
        "the README shows it working; it failed: fix the README or the code (or, if it reads a file the reader "
        f"makes, add that file to FILES in {THIS}):\n{r.context()}"
    )
    verb = _verb(r.argv)
    if verb is None:
        pytest.fail(
            f"{command.label}: no check for `hpf {' '.join(r.argv[:2])}`: add one to CHECKS in {THIS}, a function "
            f"asserting what its output must show\n{r.context()}"
        )
    try:
        CHECKS[verb](r, demo)
    except AssertionError as err:
        raise AssertionError(f"{err}\nthe output is not what the README promises:\n{r.context()}") from None


def test_every_line_not_run_says_why_and_names_what_hpf_has(tmp_path: Path) -> None:
    """A line the tests skip gives its reason; if it is an hpf command, its verb and options exist (`--help`)."""
    assert MARKED, "the README marks its install line"
    for command in MARKED:
        assert command.not_run, f"{command.label}: say why after `# not run by the tests:`"
        if command.argv[:1] and command.argv[0] in HPF:
            words = [w for w in command.argv[1:] if not w.startswith("-")]
            verb = words[:1]
            shown = _run([*verb, "--help"], tmp_path, timeout=60)
            if shown.returncode == 0 and "Commands" in shown.stdout and len(words) > 1:  # a group: its command
                verb = words[:2]
                shown = _run([*verb, "--help"], tmp_path, timeout=60)
            assert shown.returncode == 0, f"{command.label}: `hpf {' '.join(verb)}` is no command: {shown.stderr}"
            for option in (w for w in command.argv if w.startswith("--")):
                assert option in shown.stdout, f"{command.label}: `hpf {' '.join(verb)}` has no option {option}"


def test_every_markdown_file_with_commands_is_run() -> None:
    """A ```sh block anywhere in the README or docs/ is in a file of DOCS, so no shown command goes unrun."""
    shown = {"README.md"} | {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    with_commands = {name for name in shown if list(fenced_blocks((ROOT / name).read_text(encoding="utf-8"), "sh"))}
    assert with_commands <= set(DOCS), f"add {sorted(with_commands - set(DOCS))} to DOCS in {THIS}"
    assert all((ROOT / name).exists() for name in DOCS)


def test_the_readme_yaml_examples_fit_each_other_and_the_pki_it_makes(ran: dict[str, Ran]) -> None:
    """The node.yaml example loads as a node's configuration, names a node and the tables of the catalog example,
    and its certificates are the files the README's own `hpf pki init` wrote."""
    from hpf.federation.catalog import load_catalog
    from hpf.node.config import load_node_config

    init = next(r for r in ran.values() if r.argv[:2] == ("pki", "init"))
    assert init.returncode == 0, init.context()
    (init.cwd / "federation.yaml").write_text(_catalog_block(), encoding="utf-8")
    catalog = load_catalog(init.cwd / "federation.yaml")
    nodes = [b for b in YAML_BLOCKS if "node_id" in (yaml.safe_load(b) or {})]
    assert nodes, f"none of {DOCS} has a node.yaml example"
    for block in nodes:
        (init.cwd / "node.yaml").write_text(block, encoding="utf-8")
        config = load_node_config(init.cwd / "node.yaml")
        assert config.node_id in catalog.node_ids, f"node {config.node_id} is not in the catalog example"
        assert set(config.tables) <= set(catalog.tables), "the node serves tables the catalog example lacks"
        assert config.tls is not None
        for path in (config.tls.ca, config.tls.cert, config.tls.key, config.revocations):
            assert path is not None and (init.cwd / path).exists(), f"{path}: not made by {init.command.label}"


def test_the_people_the_readme_looks_up_are_the_default_demos(tmp_path: Path) -> None:
    """A literal identifier in a README command is a person of `hpf demo` as the README runs it (no options): one
    with an account in its data; the quick start's has open housing loans in two cities, as it says."""
    import inspect

    import duckdb

    from hpf.cli.demo import demo
    from hpf.demo.launcher import ensure_data, layout_for

    options = {name: p.default.default for name, p in inspect.signature(demo).parameters.items()}
    layout = layout_for(tmp_path / "default-demo", options["nodes"])
    ensure_data(layout, options["rows"], options["seed"], lambda _msg: None)
    literal = [(c, w) for c in COMMANDS for w in c.argv if re.fullmatch(r"\d{17}[\dX]", w)]
    assert literal, "the README looks up real people"
    con = duckdb.connect()
    try:
        for command, person in literal:
            accounts, loan_cities = con.execute(
                f"SELECT (SELECT COUNT(*) FROM '{layout.data}/*/accounts.parquet' WHERE person_id = $p), "
                f"(SELECT COUNT(DISTINCT city_code) FROM '{layout.data}/*/loans.parquet' "
                "WHERE person_id = $p AND status IN ('active', 'overdue'))",
                {"p": person},
            ).fetchone() or (0, 0)
            assert accounts > 0, f"{command.label}: {person} has no account in the default demo: name one who has"
            if command.section == "Quick start":
                assert loan_cities >= 2, f"{command.label}: {person} holds no open loans in two cities of the demo"
    finally:
        con.close()


SAMPLE = """\
## Sample

```sh
hpf query -p c.yaml \\
  "SELECT a, COUNT(*)
   FROM t GROUP BY a"   # exit 4: POLICY_PURPOSE_REQUIRED
# a note
hpf lookup --consent CONSENT-REF ID   # who # looked
pip install x && hpf demo   # not run by the tests: it installs
```

1. Step

   ```sh
   hpf audit verify DIR --node NODE --checkpoint OLD.json [--receipts R.jsonl]
   ```
"""


def test_the_reader_splits_commands_as_a_shell_does() -> None:
    """Quotes and backslashes carry a command over lines; a comment is kept apart; markers are read."""
    query, lookup, install, synopsis = readme_commands(SAMPLE)
    assert query.line == 4 and query.argv[-1] == "SELECT a, COUNT(*)\n   FROM t GROUP BY a"
    assert query.argv[:-1] == ("hpf", "query", "-p", "c.yaml")
    assert query.refusal == (4, "POLICY_PURPOSE_REQUIRED") and query.not_run is None and query.section == "Sample"
    assert lookup.line == 8 and lookup.comment == "who # looked" and lookup.refusal is None
    assert placeholders(lookup.argv) == ["CONSENT-REF", "ID"] and placeholders(query.argv) == []
    assert install.not_run == "it installs" and "&&" in install.argv
    assert synopsis.line == 15 and placeholders(synopsis.argv) == ["DIR", "NODE", "OLD.json"]
    assert "synopsis" in _unrunnable(synopsis) and "not an hpf command" in _unrunnable(install)
    missing = _unrunnable(Command(1, "", "hpf lookup WHO", ("hpf", "lookup", "WHO"), ""))
    assert f'add "WHO": lambda demo: ... to SUBSTITUTIONS in {THIS}' in missing
