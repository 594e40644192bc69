"""The packages' layers, read from the source (ast, nothing imported): no import circle among the
project's modules, and no import runs up a layer:

    cli/                 the commands
    rl/studies/          ablate, sweep on Ray, report, bench, plots, filters
    rl/training/         train, curriculum, evaluate, run folders
    rl/envs/ rl/agents/  the closed loop; the policies and cloning
    enkf/                the numerics (knows nothing of RL)

Every import counts, also one inside a function: a late import is still a dependency."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("enkf", "rl", "cli")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted name -> file of every module of the project's packages."""
    return {module_name(p, root): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports: ``import a.b``, ``from a.b import c`` (c itself when it
    is a module), relative imports resolved against the module's package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:  # `import rl.envs.x.y` of a name inside a module
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = project_modules(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (a -> b -> ... -> a), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def in_layer(module: str, layer: str) -> bool:
    return module == layer or module.startswith(layer + ".")


# (importing layers, forbidden layers): no module of the first imports one of the second
RULES = [
    (("enkf",), ("rl", "cli")),
    (("rl",), ("cli",)),
    (("rl.envs", "rl.agents"), ("rl.training", "rl.studies")),
    (("rl.training",), ("rl.studies",)),
]


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    return [f"{m} imports {t}" for m, targets in sorted(graph.items()) for t in sorted(targets)
            for lower, higher in RULES
            if any(in_layer(m, lo) for lo in lower) and any(in_layer(t, hi) for hi in higher)]


def test_the_graph_sees_the_imports():
    """The parser finds known imports of each kind (absolute, from-import of a module, relative)."""
    g = import_graph()
    assert "enkf.config" in g["rl.config"]
    assert "rl.envs.assimilation" in g["rl.envs.pointwise"] or "rl.envs.batched" in g["rl.envs.pointwise"]
    assert any(in_layer(t, "rl.training") for t in g["rl.studies.ablate"])
    assert any(in_layer(t, "rl") for t in g["cli.main"])


def test_no_import_circle():
    circle = find_circle(import_graph())
    assert circle is None, "import circle: " + " -> ".join(circle)


def test_no_import_runs_up_a_layer():
    assert layer_violations(import_graph()) == []


@pytest.mark.parametrize("source, broken", [
    ("from rl.config import from_dict\n", "enkf.models imports rl.config"),
    ("from .. import studies\n", None),
])
def test_the_checks_see_a_planted_import(tmp_path, source, broken):
    """A copy of the packages with one import planted: a layer rule or a circle is reported."""
    import shutil
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    if broken:  # enkf/ importing the RL layer
        target = tmp_path / "enkf/models.py"
        target.write_text(target.read_text() + source)
        assert broken in layer_violations(import_graph(tmp_path))
    else:  # rl.studies imports rl.envs.assimilation; planting the reverse closes a circle
        target = tmp_path / "rl/envs/assimilation.py"
        target.write_text(target.read_text() + source)
        g = import_graph(tmp_path)
        assert "rl.studies" in g["rl.envs.assimilation"]
        assert "rl.envs.assimilation imports rl.studies" in layer_violations(g)


# ---- the layout the readme shows ----------------------------------------------------------------------
def layout_block(readme: Path = ROOT / "readme.md") -> list[str]:
    """The lines of the fenced block under the readme's "## Layout"."""
    text = readme.read_text()
    section = text[text.index("\n## Layout"):]
    block = section.split("```")[1]
    return [line for line in block.splitlines()[1:] if line.strip()]


def layout_paths(lines: list[str]) -> list[str]:
    """Repository paths named by the layout block: each line is two spaces of indent per level, the
    names (separated by one space; a folder ends with /), two or more spaces, a description."""
    parents: list[str] = []
    out = []
    for line in lines:
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 2 == 0, f"layout line indented by {indent}: {line!r}"
        depth = indent // 2
        names = line.strip().split("  ")[0].split(" ")
        parents = parents[:depth]
        assert len(parents) == depth, f"layout line deeper than its folder: {line!r}"
        base = "".join(parents)
        out += [base + n for n in names]
        folders = [n for n in names if n.endswith("/")]
        if folders:
            parents.append(folders[-1] if len(folders) == 1 else "")
    return out


def tracked_files(root: Path = ROOT) -> list[str]:
    import subprocess
    listed = subprocess.check_output(["git", "ls-files"], cwd=root, text=True).splitlines()
    return [f for f in listed if (root / f).exists()]


def layout_problems(named: list[str], root: Path = ROOT) -> list[str]:
    """Named paths that do not exist (git-ignored output folders aside), and what the layout must name
    but does not: every top-level entry, every package and subpackage and module, every script."""
    import subprocess
    problems = []
    ignored_paths = set(subprocess.run(["git", "check-ignore", "--stdin"], cwd=root, input="\n".join(named),
                                       capture_output=True, text=True).stdout.splitlines())
    for p in named:
        ignored = p in ignored_paths
        if not (root / p).exists() and not ignored:
            problems.append(f"the layout names {p}, which does not exist")
        elif p.endswith("/") != (root / p).is_dir() and not ignored:
            problems.append(f"the layout names {p}: {'not ' if p.endswith('/') else ''}a folder")
    files = tracked_files(root)
    must = {f.split("/")[0] + ("/" if "/" in f else "") for f in files} - {"readme.md", ".gitignore"}
    for f in files:
        top = f.split("/")[0]
        if top in PACKAGES and f.endswith(".py") and not f.endswith("__init__.py"):
            must.add(f)
        if top in PACKAGES and f.endswith("__init__.py") and f.count("/") > 1:
            must.add(f.rsplit("/", 1)[0] + "/")  # a subpackage
        if top == "scripts":
            must.add(f)
    problems += [f"the layout does not name {p}" for p in sorted(must - set(named))]
    return problems


def test_the_layout_parser_reads_nesting():
    named = layout_paths(["rl/   the agents", "  envs/   bottom", "    a.py b.py   two", "  c.py   top",
                          "docs/   documents"])
    assert named == ["rl/", "rl/envs/", "rl/envs/a.py", "rl/envs/b.py", "rl/c.py", "docs/"]


def test_the_readme_layout_matches_the_tree():
    assert layout_problems(layout_paths(layout_block())) == []


def test_the_layout_check_sees_a_missing_and_an_unnamed_file():
    named = layout_paths(layout_block())
    problems = layout_problems([p for p in named if p != "enkf/filters.py"] + ["enkf/gone.py"])
    assert problems == ["the layout names enkf/gone.py, which does not exist",
                        "the layout does not name enkf/filters.py"]


# ---- every command the readme names exists ------------------------------------------------------------
def named_commands(text: str) -> tuple[list[tuple[str, list[str]]], set[str], set[str]]:
    """From the readme: (enkfrl subcommand, its --flags) per code span that runs one, the make
    targets it names, and the repository files (scripts/, docs/, .ci/) it names."""
    import re
    spans = re.findall(r"`([^`\n]+)`", text) + re.findall(r"```bash\n(.*?)```", text, re.S)
    enkfrl = [(m[1], re.findall(r"--[a-z][a-z-]*", m[2])) for s in spans
              for m in re.finditer(r"enkfrl ([a-z][a-z-]*)([^\n]*)", s) if m[1] != "commands"]
    targets = {m[1] for s in spans for m in re.finditer(r"\bmake ([a-z_]+)", s)}
    listed = re.search(r"`make help` lists the make targets: `([^`]+)`", text)
    targets |= set(listed[1].split()) if listed else set()
    files = {m[0] for s in spans for m in re.finditer(r"\b(?:scripts|docs|\.ci)/[\w./-]*\w", s)}
    files |= set(re.findall(r"\]\(((?:docs|scripts)/[^)#]+)", text))
    return enkfrl, targets, files


def command_problems(text: str, root: Path = ROOT) -> list[str]:
    import re
    from cli.main import main
    enkfrl, targets, files = named_commands(text)
    problems = []
    for name, flags in enkfrl:
        command = main.commands.get(name)
        if command is None:
            problems.append(f"enkfrl {name}: no such command")
            continue
        known = {opt for p in command.params for opt in p.opts + p.secondary_opts} | {"--help"}
        problems += [f"enkfrl {name} {f}: no such option" for f in flags if f not in known]
    make_targets = set(re.findall(r"^([a-z_]+):", (root / "makefile").read_text(), re.M))
    problems += [f"make {t}: no such target" for t in sorted(targets - make_targets)]
    problems += [f"{f}: no such file" for f in sorted(files) if not (root / f).exists()]
    return problems


@pytest.mark.parametrize("doc", ["readme.md", "docs/results.md", "docs/design.md"])
def test_every_command_the_documents_name_exists(doc):
    text = (ROOT / doc).read_text()
    enkfrl, targets, files = named_commands(text)
    if doc == "readme.md":
        assert len(enkfrl) >= 14 and {"test", "run", "setup"} <= targets and "scripts/time_quickstart.py" in files
    assert command_problems(text) == []


def test_the_command_check_sees_a_missing_command_option_target_and_file():
    text = ("`enkfrl evaluate --exp E --results-dir X` `enkfrl nosuch --exp E` `make visualize` "
            "`scripts/gone.sh` [x](docs/gone.md)")
    assert command_problems(text) == ["enkfrl evaluate --results-dir: no such option", "enkfrl nosuch: no such command",
                                      "make visualize: no such target", "docs/gone.md: no such file",
                                      "scripts/gone.sh: no such file"]
