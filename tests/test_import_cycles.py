"""rmpe_ext's modules import each other without cycles: in particular ``ops/affine.py`` and ``presets.py``
(presets builds on the affine maps; the affine ops never reach back into the presets, not even lazily)."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "rmpe_ext"


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> set:
    """Every rmpe_ext module ``path`` imports, at module level or inside functions (``from . import x`` counts
    as importing the submodule x)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)  # the submodule when a.name is one
    return out


def _graph() -> dict:
    mods = {_module_name(p): p for p in ROOT.rglob("*.py")}
    return {m: sorted(i for i in _imports(p) if i in mods and i != m) for m, p in mods.items()}


def test_affine_and_presets_do_not_import_each_other_both_ways():
    g = _graph()
    assert "rmpe_ext.ops.affine" in g["rmpe_ext.presets"]  # presets builds on the affine maps
    assert "rmpe_ext.presets" not in g["rmpe_ext.ops.affine"]


def test_rmpe_ext_has_no_import_cycle_below_the_package_roots():
    """No cycle among the modules (package __init__ files excluded: importing a submodule always runs its
    package's __init__, which re-exports the submodules)."""
    packages = {_module_name(p) for p in ROOT.rglob("__init__.py")}
    g = {m: [i for i in deps if i not in packages] for m, deps in _graph().items()}
    state = {}

    def visit(m, stack):
        state[m] = 1
        for d in g.get(m, []):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
