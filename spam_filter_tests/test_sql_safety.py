"""SQL injection: hostile messages round-trip verbatim, and no query is built by formatting.

The scan reads every Python file of the project and follows the SQL text handed to a database
back to where it was made: it must be a whole literal statement, a module constant holding one, or
an entry of a constant table of such statements; values travel as parameters. Anything else (an
f-string, `%`, `.format()`, pieces glued with `+`, or a name the scan cannot trace) fails the test
with its place.
"""

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from spam_filter.storage.duckdb_storage import DuckDBStorage
from spam_filter_tests.helpers import PROJECT_ROOT, materialize_all

HOSTILE_MESSAGES = [
    "'; DROP TABLE messages; --",
    "Robert'); DELETE FROM models WHERE ('1'='1",
    '" OR 1=1 --',
    "$1 $seed ? ?? :name @x",
    "1; ATTACH '/etc/passwd' AS p; SELECT * FROM p",
    "back\\slash \\' and a NUL\x00in the middle",
    "UNION SELECT path, status FROM models /* comment */",
    "''''",
    "%s %(body)s {body} {0}",
]

# Calls that hand SQL text to DuckDB, and which argument holds it.
_SQL_METHODS = {"execute", "executemany", "sql", "query"}
# Project functions that pass an argument into SQL text: checked at their call sites.
_SQL_WRAPPERS: dict[str, tuple[int, str]] = {"_rows": (1, "query")}
_SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ATTACH|ALTER|FROM|WHERE)\b")
TESTS_FOLDER = "spam_filter_tests"
_SKIPPED_FOLDERS = {".venv", ".git", ".dagster_home", "data", "build"}


def _project_sources() -> Iterator[Path]:
    for path in sorted(PROJECT_ROOT.rglob("*.py")):
        if not _SKIPPED_FOLDERS & set(path.relative_to(PROJECT_ROOT).parts):
            yield path


class _Scope:
    """Where names in one module and function were bound, to trace SQL text to its origin."""

    def __init__(self, module: ast.Module, function: ast.AST | None) -> None:
        self.module = module
        self.function = function

    def bindings(self, name: str) -> list[ast.AST] | None:
        """The expressions bound to `name` (None when it is a parameter of the function)."""
        if self.function is not None:
            arguments = self.function.args
            parameters = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
            if any(parameter.arg == name for parameter in parameters):
                return None
            found = _assigned(self.function, name)
            if found:
                return found
        return _assigned(self.module, name, top_level=True)


def _assigned(tree: ast.AST, name: str, top_level: bool = False) -> list[ast.AST]:
    nodes = tree.body if top_level else list(ast.walk(tree))
    values: list[ast.AST] = []
    for node in nodes:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                values.extend(_matching(target, node.value, name))
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            if node.target.id == name:  # `q += piece` puts `piece` into q
                values.append(node.value)
        elif isinstance(node, ast.For) and isinstance(node.target, ast.Name):
            if node.target.id == name:
                values.append(ast.Starred(value=node.iter))
    return values


def _imports(module: ast.Module, name: str) -> bool:
    """Whether the module imports `name` at its top (`import name`, `from x import name`)."""
    return any(
        isinstance(node, ast.Import | ast.ImportFrom)
        and any((alias.asname or alias.name) == name for alias in node.names)
        for node in module.body
    )


def _matching(target: ast.AST, value: ast.AST, name: str) -> list[ast.AST]:
    if isinstance(target, ast.Name):
        return [value] if target.id == name else []
    if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
        pairs = zip(target.elts, value.elts, strict=False)
        return [found for t, v in pairs for found in _matching(t, v, name)]
    return []


def _problems(expression: ast.AST, scope: _Scope, wrapper_parameter: str | None) -> list[str]:
    """Why `expression` is not SQL text made only of literals, constants and identifiers."""
    node = expression
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return []
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return [f"line {node.lineno}: SQL text glued from pieces with +"]
    if isinstance(node, ast.Dict):  # a table of statements: every one must be safe
        return [p for value in node.values for p in _problems(value, scope, wrapper_parameter)]
    if isinstance(node, ast.Subscript):  # an entry of such a table
        return _problems(node.value, scope, wrapper_parameter)
    if isinstance(node, ast.Tuple | ast.List):
        return [p for element in node.elts for p in _problems(element, scope, wrapper_parameter)]
    if isinstance(node, ast.IfExp):  # a choice between texts: both must be safe
        return _problems(node.body, scope, wrapper_parameter) + _problems(
            node.orelse, scope, wrapper_parameter
        )
    if isinstance(node, ast.Starred):  # the iterable of a `for` loop binding the name
        return _problems(node.value, scope, wrapper_parameter)
    if isinstance(node, ast.Call):
        function = node.func
        called = (
            function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
        )
        return [f"line {node.lineno}: SQL text from a call to {called or 'an expression'}()"]
    if (
        isinstance(node, ast.Attribute)
        and node.attr.isupper()
        and isinstance(node.value, ast.Name)
        and _imports(scope.module, node.value.id)
    ):
        return []  # a constant of an imported module, which is scanned too
    if isinstance(node, ast.Name):
        bound = scope.bindings(node.id)
        if bound is None:
            if node.id == wrapper_parameter:
                return []  # checked where the wrapper is called
            return [f"line {node.lineno}: SQL text from the parameter {node.id!r}"]
        if not bound and node.id.isupper() and _imports(scope.module, node.id):
            return []  # an imported module constant; its own module is scanned too
        if not bound:
            return [f"line {node.lineno}: cannot trace where {node.id!r} comes from"]
        return [p for value in bound for p in _problems(value, scope, wrapper_parameter)]
    if isinstance(node, ast.JoinedStr):
        return [f"line {node.lineno}: SQL text from an f-string"]
    return [f"line {node.lineno}: SQL text from {type(node).__name__}"]


def _sql_argument(call: ast.Call) -> ast.AST | None:
    function = call.func
    name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
    if name in _SQL_METHODS and isinstance(function, ast.Attribute):
        if call.args:
            return call.args[0]
        return next((k.value for k in call.keywords if k.arg in {"query", "sql"}), None)
    if name in _SQL_WRAPPERS:
        index, keyword = _SQL_WRAPPERS[name]
        if len(call.args) > index:
            return call.args[index]
        return next((k.value for k in call.keywords if k.arg == keyword), None)
    return None


def _functions_by_node(module: ast.Module) -> dict[ast.AST, ast.AST]:
    """Each node's innermost enclosing def (lambdas belong to the def around them)."""
    owner: dict[ast.AST, ast.AST] = {}

    def visit(node: ast.AST, function: ast.AST | None) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            if inner is not None:
                owner[child] = inner
            visit(child, inner)

    visit(module, None)
    return owner


def unsafe_sql(source: str, check_constants: bool = True) -> list[str]:
    """Every place in `source` where SQL text is built by formatting or cannot be traced; with
    `check_constants`, also in module constants that hold SQL text."""
    module = ast.parse(source)
    owner = _functions_by_node(module)
    problems = []
    for node in ast.walk(module):
        formatted = _formatted_text(node)
        if formatted is not None and _SQL_WORDS.search(formatted):
            problems.append(f"line {node.lineno}: SQL built by string formatting")
        if isinstance(node, ast.Call) and (argument := _sql_argument(node)) is not None:
            function = owner.get(node)
            wrapper = None
            if isinstance(function, ast.FunctionDef) and function.name in _SQL_WRAPPERS:
                wrapper = _SQL_WRAPPERS[function.name][1]
            problems.extend(_problems(argument, _Scope(module, function), wrapper))
    # A module constant that holds SQL text is taken on trust where another module uses it, so
    # each is checked where it is made.
    for statement in module.body if check_constants else ():
        value = _sql_constant_value(statement)
        if value is not None:
            problems.extend(_problems(value, _Scope(module, None), None))
    return problems


def _sql_constant_value(statement: ast.stmt) -> ast.AST | None:
    """The value of a module-level assignment to an UPPERCASE name, if any text in it is SQL."""
    if isinstance(statement, ast.Assign):
        targets, value = statement.targets, statement.value
    elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
        targets, value = [statement.target], statement.value
    else:
        return None
    if not any(isinstance(t, ast.Name) and t.id.lstrip("_").isupper() for t in targets):
        return None
    texts = (
        node.value
        for node in ast.walk(value)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    )
    return value if any(_SQL_WORDS.search(text) for text in texts) else None


def _formatted_text(node: ast.AST) -> str | None:
    """The literal text of an f-string, a `%` format or a `.format()` call; None otherwise."""
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value for part in node.values if isinstance(part, ast.Constant))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        if isinstance(node.left, ast.Constant) and isinstance(node.left.value, str):
            return node.left.value
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in {"format", "format_map"}
        and isinstance(node.func.value, ast.Constant)
        and isinstance(node.func.value.value, str)
    ):
        return node.func.value.value
    return None


@pytest.mark.parametrize(
    "source",
    [
        "conn.execute(f\"SELECT * FROM messages WHERE body = '{body}'\")",
        "conn.execute(\"SELECT * FROM messages WHERE body = '%s'\" % body)",
        "conn.execute(\"SELECT * FROM messages WHERE body = '{}'\".format(body))",
        "conn.execute('SELECT * FROM t WHERE ' + ('a' if flag else where))",
        "query = 'SELECT * FROM t WHERE id = ' + str(value)\nconn.execute(query)",
        "def f(conn, where):\n    conn.execute('SELECT * FROM t WHERE ' + where)",
        "conn.execute(unknown_name)",
        "def f(conn, where):\n    q = 'SELECT * FROM t WHERE '\n    q += where\n"
        "    conn.execute(q)",
        "def f(conn, where):\n    conn.execute(query='SELECT * FROM t WHERE ' + where)",
        "def f(conn, req):\n    conn.execute(req.SQL)",
        "template = 'DELETE FROM {}'.format(name)",
        "conn.execute('SELECT count(*) FROM ' + TABLE_NAME)",
        "def f(conn, name):\n    conn.execute('SELECT count(*) FROM ' + identifier(name))",
        "STATEMENTS = {'a': 'SELECT 1', 'b': 'SELECT ' + value}\nconn.execute(STATEMENTS[key])",
        # Used by another module, which trusts a module's constants.
        "SELECT_ACTIVE = \"SELECT path FROM models WHERE status = '\" + os.environ['S'] + \"'\"",
        "DELETE_OLD: str = 'DELETE FROM models WHERE ' + condition()",
    ],
)
def test_the_scan_catches_formatted_and_untraceable_sql(source: str) -> None:
    assert unsafe_sql(source)


def test_the_scan_accepts_literal_statements_and_constants() -> None:
    source = (
        "from spam_filter.storage import queries\n"
        "QUERY = 'SELECT spam, body FROM messages WHERE body = ?'\n"
        "COUNTS = {'messages': 'SELECT count(*) FROM messages'}\n"
        "def f(conn, name, body):\n"
        "    select = QUERY\n"
        "    conn.execute(select, [body])\n"
        "    conn.execute(COUNTS[name])\n"
        "    conn.execute(queries.INSERT_MESSAGE, [True, body])\n"
        "    for statement in ('BEGIN', 'COMMIT'):\n"
        "        conn.execute(statement)\n"
    )
    assert unsafe_sql(source) == []


def test_no_query_in_the_project_is_built_by_formatting() -> None:
    scanned = list(_project_sources())
    assert len(scanned) > 20  # the scan reads the project, not an empty folder
    problems = [
        f"{path.relative_to(PROJECT_ROOT)}: {problem}"
        for path in scanned
        # The tests' own constants are hostile text to send, not statements to run.
        for problem in unsafe_sql(
            path.read_text(encoding="utf-8"), check_constants=path.parent.name != TESTS_FOLDER
        )
    ]
    assert problems == []


def test_hostile_messages_reach_the_warehouse_verbatim(resources: dict, app_db: str) -> None:
    storage = DuckDBStorage(app_db)
    storage.insert_messages([(i % 2 == 0, text) for i, text in enumerate(HOSTILE_MESSAGES * 20)])
    assert materialize_all(resources).success
    with DuckDBStorage(resources["warehouse"].database).connection(read_only=True) as conn:
        copied = conn.execute("SELECT body FROM public.user_messages").fetchall()
    assert sorted(body for (body,) in copied) == sorted(HOSTILE_MESSAGES * 20)
    assert storage.message_count() == len(HOSTILE_MESSAGES) * 20
