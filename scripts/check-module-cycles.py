#!/usr/bin/env python3
"""Fails when modules of a crate use each other in a circle.

For each crate of the workspace, reads every non-test source file, takes the
paths it names (`crate::a::b`, `super::b`, `use` lists), and builds the graph
of which module uses which, at two levels: the crate's top-level modules, and
the submodules inside each module folder. Test code (`#[cfg(test)]` modules,
`tests.rs`, `test_*.rs`) and comments are left out: tests may use anything.
Prints each cycle found and exits 1; exits 0 when both levels are acyclic.

    scripts/check-module-cycles.py            # every crate of the workspace
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRATES = {"agentpulse": "src", "agentpulse-core": "crates/core/src", "agentpulse-client": "crates/client/src"}


def strip(text):
    """Source without comments, string literals and #[cfg(test)] modules."""
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'r#*"(?:.|\n)*?"#*|"(?:\\.|[^"\\])*"', '""', text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+\w+\s*(;|\{)", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        if m.group(1) == ";":
            i = m.end()
            continue
        depth, j = 1, m.end()
        while depth and j < len(text):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def module_of(rel):
    """`hub/stream/mod.rs` -> ['hub', 'stream']; `lib.rs` -> []."""
    parts = rel[:-3].split("/")
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts


def used_paths(code, here):
    """Absolute module paths (lists) that `code`, in module `here`, names."""
    found = []
    for m in re.finditer(r"\b(crate|super)((?:::\w+)+)", code):
        base = [] if m.group(1) == "crate" else here[:-1]
        found.append(base + m.group(2).split("::")[1:])
    # `use super::{a, b}` / `use crate::{a::X, b}`: the first name in a list.
    for m in re.finditer(r"\b(crate|super)::\{([^}]*)\}", code):
        base = [] if m.group(1) == "crate" else here[:-1]
        for item in m.group(2).split(","):
            name = item.strip().split("::")[0]
            if re.fullmatch(r"[a-z_][a-z0-9_]*", name):
                found.append(base + [name])
    return found


def cycles(graph):
    """Every elementary cycle, found by depth-first search (graphs are small)."""
    seen, result = set(), []

    def walk(start, node, path):
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                cyc = path[:]
                key = frozenset(cyc)
                if key not in seen:
                    seen.add(key)
                    result.append(cyc + [start])
            elif nxt not in path and nxt > start:
                walk(start, nxt, path + [nxt])

    for n in sorted(graph):
        walk(n, n, [n])
    return result


def check(crate, src):
    files = {}
    for d, _, names in os.walk(os.path.join(ROOT, src)):
        for n in names:
            if n.endswith(".rs") and n != "tests.rs" and not n.startswith("test_"):
                rel = os.path.relpath(os.path.join(d, n), os.path.join(ROOT, src))
                files[rel] = module_of(rel)
    modules = {tuple(m) for m in files.values()}
    graph = {}
    for rel, here in files.items():
        if not here:
            continue
        code = strip(open(os.path.join(ROOT, src, rel)).read())
        for path in used_paths(code, here):
            # The longest known module that is a prefix of the path.
            target = max((m for m in modules if tuple(path[: len(m)]) == m), key=len, default=None)
            if target is None:
                continue
            # Level 1: top-level modules; level 2: siblings inside one folder.
            for depth in range(1, min(len(here), len(target)) + 1):
                a, b = tuple(here[:depth]), tuple(target[:depth])
                if a[:-1] != b[:-1]:
                    break
                if a != b:
                    graph.setdefault("::".join(a), set()).add("::".join(b))
                    break
    found = cycles(graph)
    for c in found:
        print(f"{crate}: module cycle: {' -> '.join(c)}")
    return not found


ok = all([check(c, s) for c, s in CRATES.items()])
if ok:
    print("no module cycles in " + ", ".join(CRATES))
sys.exit(0 if ok else 1)
