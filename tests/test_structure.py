"""The module map of `eib/` stays clean: no import cycles (function-level imports included) and no use of another
module's `_private` names (imported, or reached as an attribute of an imported eib module)."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "eib"
MODULES = sorted(p.stem for p in PKG.glob("*.py") if p.stem not in ("__init__", "_modidx"))


def _target(node: ast.AST, here: str):
    "The eib module an import node refers to (None for anything else)."
    if isinstance(node, ast.ImportFrom):
        mod = node.module or ""
        if node.level == 1: return mod.split(".")[0] or None
        if mod == "eib": return None  # `from eib import x`: x is a module, handled per name
        if mod.startswith("eib."): return mod.split(".")[1]
    return None


def imports(name: str):
    "(edges, private uses) of module `name`: the eib modules it imports anywhere, and `module._name` uses of other modules."
    tree = ast.parse((PKG / f"{name}.py").read_text())
    edges, private, aliases = set(), [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            t = _target(node, name)
            if (node.module == "eib" and node.level == 0) or (node.module is None and node.level == 1):  # from eib / from . import m
                for a in node.names:
                    if a.name in MODULES: edges.add(a.name); aliases[a.asname or a.name] = a.name
            if t and t in MODULES:
                edges.add(t)
                private += [f"{name}: from {t} import {a.name}" for a in node.names if a.name.startswith("_") and t != name]
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "eib" and len(parts) > 1 and parts[1] in MODULES:
                    edges.add(parts[1])
                    if a.asname: aliases[a.asname] = parts[1]
    for node in ast.walk(tree):  # module._name, module being another eib module
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            v = node.value
            if isinstance(v, ast.Name) and aliases.get(v.id, name) != name:
                private.append(f"{name}: {v.id}.{node.attr}")
            if isinstance(v, ast.Attribute) and isinstance(v.value, ast.Name) and v.value.id == "eib" and v.attr in MODULES and v.attr != name:
                private.append(f"{name}: eib.{v.attr}.{node.attr}")
    edges.discard(name)
    return edges, private


def test_no_import_cycles():
    graph = {m: imports(m)[0] for m in MODULES}
    state, cycles = {}, []
    def visit(m, path):
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open": cycles.append(" -> ".join(path[path.index(n):] + [n]))
            elif n not in state: visit(n, path + [n])
        state[m] = "done"
    for m in MODULES:
        if m not in state: visit(m, [m])
    assert cycles == []


def test_no_private_names_across_modules():
    assert [p for m in MODULES for p in imports(m)[1]] == []


def test_the_checks_see_what_they_look_for(tmp_path, monkeypatch):
    "The two checks find a planted cycle and a planted private import."
    import sys
    fake = tmp_path / "eib"; fake.mkdir()
    (fake / "a.py").write_text("def f():\n    from eib.b import _g\n")
    (fake / "b.py").write_text("from .a import f\nimport eib.a as A\nx = A._h\n")
    (fake / "c.py").write_text("from . import a as AA\ny = AA._k\n")
    monkeypatch.setattr(sys.modules[__name__], "PKG", fake)
    monkeypatch.setattr(sys.modules[__name__], "MODULES", ["a", "b", "c"])
    assert imports("a") == ({"b"}, ["a: from b import _g"])
    assert imports("b") == ({"a"}, ["b: A._h"])
    assert imports("c") == ({"a"}, ["c: AA._k"])  # a relative `from . import a as AA`


NBS = PKG.parent / "nbs"


def chapter_of() -> dict:
    "Module name -> the number of the chapter (notebook) that exports it."
    import json, re
    out = {}
    for nb in sorted(NBS.glob("[0-9]*.ipynb")):
        for c in json.loads(nb.read_text())["cells"]:
            m = re.match(r"#\|\s*default_exp\s+(\S+)", "".join(c["source"]))
            if m: out[m.group(1)] = int(nb.name.split("_")[0])
    return out


def later_imports() -> list[str]:
    "`chapter: module` for every eib module a chapter's cells import that a later chapter exports."
    import json, re
    ch, bad = chapter_of(), []
    for nb in sorted(NBS.glob("[0-9]*.ipynb")):
        n = int(nb.name.split("_")[0])
        if n >= 20: continue  # the findings, results and reproduction pages read the whole library, by design
        src = "\n".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code")
        for mod in sorted(set(re.findall(r"(?m)^[ \t]*(?:from|import)\s+eib\.(\w+)", src))):
            if ch.get(mod, -1) > n: bad.append(f"{nb.stem}: {mod}")
    return bad


def test_chapters_use_only_earlier_chapters():
    assert set(chapter_of()) >= {"core", "codec", "bitstream", "rate", "records", "sweep"}
    assert later_imports() == []


def test_the_chapter_check_sees_a_later_chapter(tmp_path, monkeypatch):
    import json, sys
    cell = lambda s: {"cell_type": "code", "source": [s], "metadata": {}, "outputs": [], "execution_count": None}
    for name, src in (("01_a", "#| default_exp a\n"), ("02_b", "#| default_exp b\n")):
        (tmp_path / f"{name}.ipynb").write_text(json.dumps({"cells": [cell(src), cell("from eib.b import f\n" if name == "01_a" else "x = 1\n")]}))
    monkeypatch.setattr(sys.modules[__name__], "NBS", tmp_path)
    assert later_imports() == ["01_a: b"]
