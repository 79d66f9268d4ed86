"""Loading YAML configuration files into pydantic models, with errors that name the file, field and fix."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError, ValidationInfo

from hpf.federation.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def field_path(loc: tuple[int | str, ...]) -> str:
    """``('roles', 'analyst', 'tables', 0)`` -> ``roles.analyst.tables[0]``."""
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def validation_message(path: Path | str, err: ValidationError) -> str:
    """One line per problem: ``file: field: what is wrong``."""
    lines = []
    for problem in err.errors():
        loc = tuple(x for x in problem["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        msg = problem["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        lines.append(f"{path}: {field_path(loc)}: {msg}")
    return "\n".join(lines)


# the most a configuration file may hold: a catalog a client can fetch (client.session.CLIENT_RECEIVE_BYTES)
MAX_CONFIG_BYTES = 16 * 1024 * 1024

FileStamp = tuple[int, int, int]


def file_stamp(path: Path) -> FileStamp | None:
    """What changes when a file is rewritten or replaced (its inode, modification time and size), or None when
    it cannot be seen: a party re-reads a file it serves on (the catalog, the revocation list) only when this
    changes, so a request costs one ``stat``."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def read_yaml(path: Path) -> object:
    """Parse a YAML file, turning every failure into a ConfigError naming the file."""
    return parse_yaml(path, decode_text(path, read_bytes(path)))


def read_bytes(path: Path) -> bytes:
    """The bytes of a configuration file; a missing or unreadable one is a ConfigError naming it.

    A party re-reads some files while it serves (the catalog on a request, see :mod:`federation.catalog_watch`),
    so a read never waits and never holds more than :data:`MAX_CONFIG_BYTES`: a path that is not a regular file
    (a FIFO no one writes to, a device, a directory) is ``CONFIG_UNREADABLE``, a larger file ``CONFIG_TOO_LARGE``.
    """
    try:
        # O_NONBLOCK: opening a FIFO does not wait for a writer (the file kind is checked before any read)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found", code="CONFIG_NOT_FOUND") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})", code="CONFIG_UNREADABLE") from None
    try:
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise ConfigError(
                    f"{path}: not a regular file", code="CONFIG_UNREADABLE", hint="give the path of a file"
                )
            data = fh.read(MAX_CONFIG_BYTES + 1)  # a file growing meanwhile is bounded too
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})", code="CONFIG_UNREADABLE") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MiB, which no configuration file is",
            code="CONFIG_TOO_LARGE",
            hint="check the path names the configuration file",
        )
    return data


def decode_text(path: Path | str, data: bytes) -> str:
    """``data`` (read from ``path``) as UTF-8 text, with its line ends as they are."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text", code="CONFIG_SYNTAX", hint="save the file as UTF-8") from None


# the deepest a configuration file nests, and the most values its aliases may expand it to (past what it writes)
MAX_YAML_DEPTH = 64
MAX_YAML_VALUES = 1_000_000


class YamlTooComplex(yaml.YAMLError):
    """A document nested too deeply, or whose aliases expand it past its bound (see :class:`BoundedLoader`)."""

    def __init__(self, problem: str, mark: yaml.Mark | None) -> None:
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark

    def error(self, path: Path | str, code: str = "CONFIG_TOO_COMPLEX") -> ConfigError:
        """The ConfigError naming ``path`` and the line."""
        line = f":{self.problem_mark.line + 1}" if self.problem_mark is not None else ""
        return ConfigError(
            f"{path}{line}: {self.problem}",
            code=code,
            hint="write the values out: no configuration file nests this deep or repeats an alias this often",
        )


class BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that composes no document nested deeper than :data:`MAX_YAML_DEPTH` (PyYAML's composer
    recurses, and a few thousand ``[`` would end in a RecursionError), no alias inside the value it names (a
    value holding itself, which every reader walking the document would follow forever) and none whose aliases
    expand it past ``max_values`` values and past what the file writes (a few lines of aliases of aliases
    expand to billions of values: every reader walking the document walks them all).

    >>> BoundedLoader("a: &x [1, 2]\\nb: *x\\n").get_single_node().value[1][1].value[0].value
    '1'
    >>> BoundedLoader("[" * 100 + "]" * 100).get_single_node()
    Traceback (most recent call last):
    hpf.federation.config_files.YamlTooComplex: nested deeper than 64 levels
    """

    def __init__(self, stream: str, *, max_values: int = MAX_YAML_VALUES) -> None:
        super().__init__(stream)
        self._depth = 0
        self._written = 0  # nodes the file writes (aliases aside)
        self._max_values = max_values
        self._sizes: dict[int, int] = {}  # id(node): values it expands to, once composed

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            named = self.anchors.get(event.anchor)
            if named is not None and id(named) not in self._sizes:
                raise YamlTooComplex(f"the alias *{event.anchor} is inside the value it names", event.start_mark)
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        start = self.peek_event().start_mark
        if self._depth >= MAX_YAML_DEPTH:
            raise YamlTooComplex(f"nested deeper than {MAX_YAML_DEPTH} levels", start)
        self._depth += 1
        try:
            node: yaml.Node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._written += 1
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        size = 1 + sum(self._sizes.get(id(child), 1) for child in children)
        if size > self._max_values and size > self._written:
            raise YamlTooComplex(
                f"more than {self._max_values} values once its aliases are expanded (it writes {self._written})",
                start,
            )
        self._sizes[id(node)] = size
        return node


def parse_yaml(path: Path | str, text: str) -> object:
    """Parse YAML ``text`` read from ``path``; a syntax error is a ConfigError naming the file, line and column,
    and a key written twice in one mapping (which YAML would silently take the last of) is ``CONFIG_INVALID``
    naming both lines: a file that reads one way to its reviewer and another to a party is refused. A document
    nested too deeply or expanded too far by its aliases is ``CONFIG_TOO_COMPLEX`` (:class:`BoundedLoader`)."""
    loader = BoundedLoader(text)
    try:
        node = loader.get_single_node()
        duplicates = duplicate_keys(node, str(path)) if node is not None else []
        data = loader.construct_document(node) if node is not None and not duplicates else None
    except YamlTooComplex as exc:
        raise exc.error(path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}:{where}: {problem}", code="CONFIG_SYNTAX", hint="fix the YAML syntax") from None
    finally:
        loader.dispose()
    if duplicates:
        raise ConfigError("\n".join(duplicates), code="CONFIG_INVALID", hint="write each key once")
    return data


def duplicate_keys(
    node: yaml.Node, file: str, loc: tuple[int | str, ...] = (), seen: set[int] | None = None
) -> list[str]:
    """Keys written twice in one mapping of the composed ``node`` (YAML would silently keep the last), one
    ``file:line: field: written twice (first on line N)`` each; '<<' merge keys aside."""
    seen = set() if seen is None else seen
    if id(node) in seen:  # an alias: already checked where its anchor is
        return []
    seen.add(id(node))
    problems: list[str] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key, line = key_node.value, key_node.start_mark.line + 1
            if key in first:
                problems.append(f"{file}:{line}: {field_path((*loc, key))}: written twice (first on line {first[key]})")
            first.setdefault(key, line)
            problems += duplicate_keys(value_node, file, (*loc, key), seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            problems += duplicate_keys(item, file, (*loc, i), seen)
    return problems


def resolve_path(value: Path, info: ValidationInfo) -> Path:
    """A path from a config file: ``~`` expanded, relative paths taken from the file's folder."""
    base = (info.context or {}).get("base_dir") if isinstance(info.context, dict) else None
    value = value.expanduser()
    return Path(base) / value if base is not None and not value.is_absolute() else value


def load_model(path: Path | str, model: type[M], overrides: dict[str, object] | None = None) -> M:
    """Read ``path`` and validate it as ``model``; errors name the file, the field and the fix.

    ``overrides`` (e.g. ``{"insecure": True}`` from a command-line flag) replace top-level fields first.
    """
    path = Path(path)
    data = read_yaml(path)
    if data is None:
        raise ConfigError(f"{path}: the file is empty", code="CONFIG_INVALID")
    if overrides:
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the file must hold a mapping of fields", code="CONFIG_INVALID")
        data = {**data, **overrides}
    return parse_model(path, data, model)


# Each kind of file the product reads, by the top-level fields only it has: a file given where another kind is
# expected is named for what it is, rather than reported field by field.
FILE_KINDS: dict[str, tuple[frozenset[str], str]] = {
    "Catalog": (frozenset({"federation", "nodes", "tables"}), "a federation catalog"),
    "ClientProfile": (frozenset({"coordinator"}), "a client profile"),
    "NodeConfig": (frozenset({"node_id", "tables"}), "a node config"),
    "CoordinatorConfig": (frozenset({"catalog", "deadline_ms"}), "a coordinator config"),
    "Policy": (frozenset({"version", "roles"}), "a node policy"),
    "NodeKeys": (frozenset({"node", "agreement_key"}), "a node's public keys (from `hpf node keys`)"),
}


def file_kind(data: object) -> str | None:
    """What kind of file ``data`` (a parsed YAML document) looks like, or None when it looks like none.

    >>> file_kind({"federation": "f", "nodes": [], "tables": {}})
    'a federation catalog'
    >>> file_kind({"coordinator": "127.0.0.1:50050", "keys": "k"}), file_kind([1, 2])
    ('a client profile', None)
    """
    if not isinstance(data, dict):
        return None
    for fields, kind in FILE_KINDS.values():
        if fields <= data.keys():
            return kind
    return None


def parse_model(path: Path | str, data: object, model: type[M]) -> M:
    try:
        return model.model_validate(data, context={"base_dir": Path(path).parent})
    except ValidationError as err:
        expected = FILE_KINDS.get(model.__name__)
        found = file_kind(data)
        if expected is not None and found is not None and found != expected[1]:
            raise ConfigError(
                f"{path}: this is {found}, where {expected[1]} is expected",
                code="CONFIG_WRONG_KIND",
                hint=f"give {expected[1]} here (and {found} where the command asks for one)",
            ) from None
        raise ConfigError(validation_message(path, err), code="CONFIG_INVALID") from None
