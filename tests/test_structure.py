"""The package's structure, read from the source with ``ast`` (nothing of edgevit is imported here).

- no import cycles among edgevit's modules — counting imports inside functions too;
- no library module imports a CLI module (``edgevit/cli/``, ``edgevit/__main__.py``, a format's or method's
  ``cli.py``): the CLI is the top floor;
- no module imports another package's ``_private`` name: what is shared is promoted to a public name in a lower
  floor (``edgevit.formats.common`` for the exporters, say);
- every format listed in ``edgevit.formats.FORMATS`` is a folder with a ``spec.py`` declaring ``SPEC``, and its
  runtime never imports its exporter (a runtime depends on the format's spec).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edgevit"


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. "edgevit.formats.onnx.export"
    path: Path
    is_package: bool  # an __init__.py

    @property
    def package(self) -> str:
        """The package the module belongs to (itself for an ``__init__``)."""
        return self.name if self.is_package else self.name.rpartition(".")[0]


@dataclass(frozen=True)
class Import:
    importer: str  # the importing module
    target: str  # the module imported ("from X import name" → X.name when that is a module, else X)
    source: str  # X of "from X import name" (the module named in the statement); the target for "import X"
    name: str | None  # the imported name of "from X import name"; None for "import X"
    in_function: bool  # inside a function body (a lazy import) rather than at module level
    line: int

    def where(self) -> str:
        return f"{self.importer} (line {self.line}{', in a function' if self.in_function else ''}) → {self.target}"


@lru_cache(maxsize=1)
def modules() -> dict[str, Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        out[".".join(parts)] = Module(".".join(parts), path, is_package)
    return out


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.package.split(".")
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


@lru_cache(maxsize=1)
def imports() -> tuple[Import, ...]:
    """Every import statement of every edgevit module that names an edgevit module."""
    mods = modules()
    found: list[Import] = []

    def visit(module: Module, node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ImportFrom):
                source = _absolute(module, child)
                for alias in child.names:
                    sub = f"{source}.{alias.name}"
                    found.append(Import(module.name, sub if sub in mods else source, source, alias.name,
                                        in_function, child.lineno))
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(module.name, alias.name, alias.name, None, in_function, child.lineno))
            visit(module, child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                   ast.Lambda)))

    for module in mods.values():
        visit(module, ast.parse(module.path.read_text(encoding="utf-8"), str(module.path)), False)
    return tuple(i for i in found if i.source == "edgevit" or i.source.startswith("edgevit."))


def _cycles(edges: list[Import]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a list of module names."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        if e.target in modules() and e.target != e.importer:
            graph.setdefault(e.importer, set()).add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(modules()):
        if v not in index:
            connect(v)
    return out


def _describe(cycles: list[list[str]], edges: list[Import]) -> str:
    lines = []
    for comp in cycles:
        inside = set(comp)
        lines.append("cycle among " + ", ".join(comp) + ":")
        lines += [f"  {e.where()}" for e in edges if e.importer in inside and e.target in inside]
    return "\n".join(lines)


def test_the_source_is_parsed():
    """The checks below see the package: its modules and the imports between them."""
    mods = modules()
    assert {"edgevit", "edgevit.formats", "edgevit.formats.onnx.export", "edgevit.cli"} <= set(mods)
    assert any(i.importer == "edgevit.formats.onnx.export" and i.target == "edgevit.formats.common"
               for i in imports())
    assert any(i.in_function for i in imports()) and any(not i.in_function for i in imports())


def test_no_import_cycles_at_module_level():
    edges = [i for i in imports() if not i.in_function]
    cycles = _cycles(edges)
    assert not cycles, "import cycles (module-level imports):\n" + _describe(cycles, edges)


def test_no_import_cycles_counting_function_level_imports():
    """Imports inside functions count too. A lazy import keeps ``import edgevit`` light, but it is still a
    dependency: two modules that import each other, even lazily, are one unit that cannot be read, tested or placed
    on a floor apart. (Importing ``a.b.c`` also imports the package ``a.b`` first; that implicit parent-package
    import is not an edge here — a package ``__init__`` that re-exports its submodules lazily is no cycle — but an
    explicit ``from .. import name`` is.)"""
    edges = list(imports())
    cycles = _cycles(edges)
    assert not cycles, "import cycles (module-level and function-level imports):\n" + _describe(cycles, edges)


def _is_cli(module: str) -> bool:
    """``edgevit.cli`` and below, ``edgevit.__main__``, and the ``cli.py`` of a format or method folder."""
    parts = module.split(".")
    return (module == "edgevit.cli" or module.startswith("edgevit.cli.") or module == "edgevit.__main__"
            or (len(parts) == 4 and parts[1] in ("formats", "methods") and parts[3] == "cli"))


def test_no_library_module_imports_the_cli():
    assert _is_cli("edgevit.cli.common") and _is_cli("edgevit.formats.tvm.cli") and _is_cli("edgevit.methods.distill.cli")
    assert not _is_cli("edgevit.formats.tvm.export") and not _is_cli("edgevit.stages.core")
    bad = [i.where() for i in imports() if not _is_cli(i.importer) and _is_cli(i.target)]
    assert not bad, "library modules importing the CLI (the top floor):\n" + "\n".join(bad)


def _private(segment: str) -> bool:
    return segment.startswith("_") and not (segment.startswith("__") and segment.endswith("__"))


def _package_of(dotted: str) -> str:
    mod = modules().get(dotted)
    if mod is not None:
        return mod.package
    return dotted.rpartition(".")[0]


def private_import_violations() -> list[str]:
    """Imports of another package's private names.

    - A private *name* (``from X import _name``, ``_name`` not a module) belongs to X's package: only modules of
      that same package may import it (not its subpackages, not its parent).
    - A private *module* (``edgevit._optional``, ``edgevit.methods.distill.distributed``) belongs to the package that
      holds it, subpackages included: ``edgevit._optional`` is the core floor's helper for all of edgevit.
    """
    mods = modules()
    bad = []
    for i in imports():
        importer_pkg = mods[i.importer].package
        path = i.target.split(".")
        for k, seg in enumerate(path):  # private modules along the imported path
            if _private(seg) and ".".join(path[: k + 1]) in mods:
                owner = ".".join(path[:k])
                if importer_pkg != owner and not importer_pkg.startswith(owner + "."):
                    bad.append(f"{i.where()}: private module '{seg}' of package {owner}")
        if i.name is not None and _private(i.name) and i.target == i.source:  # a private name, not a module
            owner = _package_of(i.source)
            if importer_pkg != owner:
                bad.append(f"{i.where()}: private name '{i.name}' of package {owner}")
    return bad


def test_no_module_imports_another_packages_private_names():
    bad = private_import_violations()
    assert not bad, ("private names imported from another package (promote them to a public name in a lower "
                     "floor):\n" + "\n".join(bad))


def _constant(module: str, name: str):
    """The literal value of ``name`` in ``module``: assigned there, or imported there from another edgevit module
    (``edgevit.formats`` re-exports the registry's ``FORMATS``, say) and assigned in that one."""
    mod = modules()[module]
    for node in ast.parse(mod.path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            original = next(a.name for a in node.names if (a.asname or a.name) == name)
            return _constant(_absolute(mod, node), original)
        targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets if isinstance(node, ast.Assign) \
            else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{mod.path.relative_to(ROOT)} neither assigns nor imports {name}")


def _formats() -> tuple[str, ...]:
    """``edgevit.formats.FORMATS``, the registration: one name per format folder."""
    return tuple(_constant("edgevit.formats", "FORMATS"))


def test_every_registered_format_is_a_folder_with_a_spec():
    names = _formats()
    assert "onnx" in names and len(names) == len(set(names))
    for name in names:
        spec = PACKAGE / "formats" / name / "spec.py"
        assert spec.is_file(), f"format '{name}' is registered in FORMATS but has no {spec.relative_to(ROOT)}"
        tree = ast.parse(spec.read_text(encoding="utf-8"))
        declared = [node for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign)) and any(
            isinstance(t, ast.Name) and t.id == "SPEC" for t in (node.targets if isinstance(node, ast.Assign)
                                                                 else [node.target]))]
        assert declared, f"{spec.relative_to(ROOT)} declares no module-level SPEC"
        call = declared[-1].value
        if isinstance(call, ast.Call):  # FormatSpec(name="<folder>", ...): the name is the folder's
            given = {kw.arg: kw.value for kw in call.keywords}
            if isinstance(given.get("name"), ast.Constant):
                assert given["name"].value == name, f"{spec.relative_to(ROOT)}: SPEC is named {given['name'].value!r}"


def test_a_format_runtime_never_imports_its_exporter():
    names = _formats()
    bad = []
    for name in names:
        runtime_prefix = f"edgevit.formats.{name}.runtime"
        exporter = f"edgevit.formats.{name}.export"
        bad += [i.where() for i in imports() if (i.importer == runtime_prefix or i.importer.startswith(
            runtime_prefix + "_")) and (i.target == exporter or i.target.startswith(exporter + "."))]
    assert any(f"edgevit.formats.{n}.runtime" in modules() for n in names)
    assert not bad, "format runtimes importing their exporter (depend on the format's spec instead):\n" + "\n".join(bad)
