"""docs/operations.md's Configuration table is the one list of the environment variables the
product reads, each with the code's default: this test reads the code and the table and fails on
any difference, so neither can drift without the other.

"The product" is what runs in production and what an operator runs against it: the packages
`integration`, `workers` and `web`, `celeryconfig.py`, the `rlm-loop` command line
(`cli/`, and `stack/cli.py` for the local stack), the Procfile's `${VAR:-default}` and app.json's config vars.
A read is `os.environ.get("X", d)`, `os.environ["X"]`, `os.getenv("X", d)`, or a call of the
settings helpers (`_env`, `env_int`, `env_float`, or `env` bound to `os.environ.get`) with the
name as its first argument; `read(...) or d` gives the default `d`.
"""
from __future__ import annotations

import ast
import json
import operator
import re
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TABLE_DOC = ROOT / "docs" / "operations.md"
PRODUCT_PY = sorted(
    [p for package in ("integration", "workers", "web", "cli") for p in (ROOT / package).rglob("*.py")]
    + [ROOT / "celeryconfig.py", ROOT / "stack" / "cli.py"])
READERS = {"_env", "env", "env_int", "env_float"}
NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


class NoDefault:
    """A read without a default: the variable is optional (or required) and unset means unset."""

    def __repr__(self) -> str:
        return "no default"


class Computed:
    """A default the code computes (an f-string, another variable): not compared."""

    def __repr__(self) -> str:
        return "computed"


NO_DEFAULT, COMPUTED = NoDefault(), Computed()
_ARITHMETIC = {ast.Mult: operator.mul, ast.Add: operator.add, ast.Sub: operator.sub,
               ast.Div: operator.truediv, ast.Pow: operator.pow}


def literal(node: ast.expr | None):
    """The value of a literal default (arithmetic on constants included), NO_DEFAULT for None or
    no default, COMPUTED for anything else."""
    if node is None:
        return NO_DEFAULT
    if isinstance(node, ast.Constant):
        return NO_DEFAULT if node.value is None else node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        left, right = literal(node.left), literal(node.right)
        if isinstance(left, int | float) and isinstance(right, int | float):
            return _ARITHMETIC[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = literal(node.operand)
        if isinstance(value, int | float):
            return -value
    return COMPUTED


def _is_environ(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or \
        (isinstance(node, ast.Name) and node.id == "environ")


def _read(node: ast.AST) -> tuple[str, ast.expr | None] | None:
    """(variable, default expression) if `node` reads an environment variable."""
    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_environ(node.value):
        key = node.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            return key.value, None
        return None
    if not isinstance(node, ast.Call) or not node.args:
        return None
    first = node.args[0]
    if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
        return None
    func = node.func
    is_read = (
        (isinstance(func, ast.Attribute) and func.attr in ("get", "setdefault") and _is_environ(func.value))
        or (isinstance(func, ast.Attribute) and func.attr == "getenv")
        or (isinstance(func, ast.Name) and func.id in READERS))
    if not is_read:
        return None
    return first.value, node.args[1] if len(node.args) > 1 else None


@lru_cache(maxsize=1)
def code_reads() -> dict[str, list[tuple[str, object]]]:
    """Every variable the product reads: [(where, default)] per read."""
    reads: dict[str, list[tuple[str, object]]] = defaultdict(list)
    for path in PRODUCT_PY:
        tree = ast.parse(path.read_text(), str(path))
        or_default: dict[int, ast.expr] = {}
        for node in ast.walk(tree):
            # `read("X") or "d"` (and `read("X", "") or "d"`): the default is what follows.
            if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
                for value, after in zip(node.values, node.values[1:], strict=False):
                    or_default[id(value)] = after
        for node in ast.walk(tree):
            found = _read(node)
            if found is None or not NAME.match(found[0]):
                continue
            name, default = found
            value = literal(default)
            if value in (NO_DEFAULT, "") and id(node) in or_default:
                value = literal(or_default[id(node)])
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            reads[name].append((where, value))
    procfile = (ROOT / "Procfile").read_text()
    for match in re.finditer(r"\$\{([A-Z][A-Z0-9_]*)(?::([-?])([^}]*))?\}", procfile):
        name, kind, text = match.groups()
        reads[name].append(("Procfile", text if kind == "-" else NO_DEFAULT))
    for name in json.loads((ROOT / "app.json").read_text())["env"]:
        reads[name].append(("app.json", NO_DEFAULT))  # a deployment's value, not a default
    return dict(reads)


@lru_cache(maxsize=1)
def table() -> list[tuple[str, str, str]]:
    """(variable, default cell, meaning) per row of the Configuration table."""
    text = TABLE_DOC.read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) == 3, f"a Configuration row has three cells: {line}"
        rows.append((cells[0], cells[1], cells[2]))
    return rows


def _variable(cell: str) -> str:
    match = re.fullmatch(r"`([A-Z][A-Z0-9_]*)`", cell)
    assert match, f"one variable per row, as `NAME`: {cell!r}"
    return match.group(1)


def _same(documented: str, default: object) -> bool:
    try:
        return float(documented) == float(default)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return documented == str(default)


def test_the_code_reads_what_the_scan_expects():
    # The scan itself: a few reads of each kind, so a broken scanner cannot pass everything.
    reads = code_reads()
    assert [d for _, d in reads["STUCK_AFTER_S"]] == [900.0]
    assert [d for _, d in reads["LOOP_OUTCOME_WINDOW_S"]] == [21600.0]
    assert 259200.0 in [d for _, d in reads["PARTIAL_GRACE_S"]]
    assert "none" in [d for _, d in reads["REDIS_SSL_CERT_REQS"]]  # `... or "none"`
    assert "demo" in [d for _, d in reads["MERCHANT_NAME"]]  # `env(...) or "demo"`
    assert {d for _, d in reads["PORT"]} == {"8000", "5555"}  # the Procfile's
    assert "TASK_RETRY_BASE_S" in reads and "BENCH_BASELINE" in reads and "DYNO" in reads


def test_every_variable_is_listed_once_and_every_row_is_read():
    rows = [_variable(v) for v, _, _ in table()]
    twice = sorted({v for v in rows if rows.count(v) > 1})
    assert not twice, f"listed more than once in docs/operations.md, Configuration: {twice}"
    reads = code_reads()
    missing = sorted(set(reads) - set(rows))
    assert not missing, ("read by the product but not in docs/operations.md, Configuration: "
                         + ", ".join(f"{n} ({reads[n][0][0]})" for n in missing))
    unread = sorted(set(rows) - set(reads))
    assert not unread, f"in docs/operations.md, Configuration, but read nowhere: {unread}"


@pytest.mark.parametrize("variable, cell", [(_variable(v), d) for v, d, _ in table()],
                         ids=[_variable(v) for v, _, _ in table()])
def test_the_documented_default_is_the_codes(variable, cell):
    reads = code_reads().get(variable, [])
    literals = {(where, d) for where, d in reads if d not in (NO_DEFAULT, COMPUTED)}
    quoted = re.findall(r"`([^`]*)`", cell)
    if not literals:
        if all(d is NO_DEFAULT for _, d in reads):
            assert cell.startswith("unset"), \
                f"{variable} has no default in the code ({reads}): its Default should say unset"
        return  # computed (an f-string, another variable): described in words
    assert quoted and not cell.startswith("unset"), \
        f"{variable}: the Default cell should start with the code's default: {sorted(literals)}"
    assert any(_same(quoted[0], d) for _, d in literals), \
        f"{variable}: documented {quoted[0]!r}, but the code says {sorted(literals, key=str)}"
    for where, default in literals:
        assert any(_same(q, default) for q in quoted), \
            f"{variable}: {where} defaults to {default!r}, which the Default cell {cell!r} does not give"


def test_the_readme_and_env_example_point_at_the_table_rather_than_repeat_it():
    listed = {_variable(v) for v, _, _ in table()}
    readme = (ROOT / "README.md").read_text()
    repeated = sorted(v for v in listed if re.search(rf"^\| `{v}`", readme, re.M))
    assert not repeated, f"README.md repeats Configuration rows: {repeated}"
    assert "docs/operations.md#configuration" in readme
    example = (ROOT / ".env.example").read_text()
    in_example = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", example, re.M))
    assert in_example <= listed, f".env.example sets variables the table lacks: {in_example - listed}"
