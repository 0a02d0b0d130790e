"""The package's imports point one way, as docs/design.md's layer diagram states, with no
import cycle (function-level imports included: a lazy import still runs)."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "repro"


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that importing ``name`` runs: every import statement anywhere in
    the file, and the packages above each target (Python runs their ``__init__`` first)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (package[: len(package) - node.level + 1] if node.level else []) + (
                [node.module] if node.module else []
            )
            prefix = ".".join(base)
            names = [
                f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix
                for a in node.names
            ]
        else:
            continue
        for target in names:
            while target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in known and target.startswith("repro"):
                parents = target.split(".")
                targets |= {".".join(parents[:i]) for i in range(2, len(parents) + 1)}
    own_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    return targets - own_packages - {name, "repro"}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def layers() -> dict[str, int]:
    """Module -> line of the diagram in docs/design.md (0 at the top); ``pkg/`` stands for
    the package's modules that no other token names."""
    text = (ROOT / "docs" / "design.md").read_text()
    block = re.search(r"## Layers.*?```\n(.*?)```", text, re.S).group(1)
    explicit, packages = {}, {}
    for line_no, line in enumerate(block.splitlines()):
        for token in line.split():
            if not re.fullmatch(r"[\w/]+(\.py|/)", token):
                break
            if token.endswith("/"):
                packages["repro." + token.strip("/")] = line_no
                continue
            name = "repro." + token.removesuffix(".py").replace("/", ".")
            assert name not in explicit, f"{token} is on two lines of the diagram"
            explicit[name.removesuffix(".__init__")] = line_no
    placed = {}
    for name in modules():
        if name in explicit:
            placed[name] = explicit[name]
        else:
            package = next((p for p in packages if name == p or name.startswith(p + ".")), None)
            if package is not None:
                placed[name] = packages[package]
    return placed


def test_every_module_has_a_place_in_the_layer_diagram():
    missing = sorted(set(modules()) - set(layers()) - {"repro"})
    assert not missing, f"not in docs/design.md's layer diagram: {missing}"
    assert not set(layers()) - set(modules()), "the diagram names modules that do not exist"


def test_imports_point_down_the_layers():
    line = layers()
    upward = [
        f"{a} (line {line[a]}) imports {b} (line {line[b]})"
        for a, targets in graph().items()
        if a in line
        for b in sorted(targets)
        if line[b] < line[a]
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    edges = graph()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_a_cycle_and_an_upward_import(monkeypatch):
    """The checks above can fail: a lazy import of the runner from the engine is both."""
    real = imports

    def with_bad_edge(name, path, known):
        found = real(name, path, known)
        return found | {"repro.run.runner"} if name == "repro.engine" else found

    monkeypatch.setitem(globals(), "imports", with_bad_edge)
    upward = r"repro\.engine \(line \d+\) imports repro\.run\.runner"
    with pytest.raises(AssertionError, match=upward):
        test_imports_point_down_the_layers()
    with pytest.raises(AssertionError, match=r"import cycles: .*repro\.engine"):
        test_no_import_cycle()


def test_the_module_index_names_every_package_and_module():
    """docs/design.md's Modules block lists each package (``repro/x/``) and each module file
    (a package's ``__init__.py`` stands for the package), and nothing that does not exist."""
    text = (ROOT / "docs" / "design.md").read_text()
    block = re.search(r"## Modules.*?```\n(.*?)```", text, re.S).group(1)
    listed = {line.split()[0] for line in block.splitlines() if line.startswith("repro/")}
    actual = {
        str(path.relative_to(ROOT))
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py" or path.parent == PACKAGE
    }
    actual |= {
        str(path.relative_to(ROOT)) + "/"
        for path in PACKAGE.rglob("*")
        if path.is_dir() and (path / "__init__.py").exists() and path != PACKAGE
    }
    actual -= {"repro/__init__.py"}
    assert not actual - listed, f"not in docs/design.md's Modules: {sorted(actual - listed)}"
    assert not listed - actual, f"docs/design.md lists missing files: {sorted(listed - actual)}"
