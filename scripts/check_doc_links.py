#!/usr/bin/env python3
"""Check the relative links of README.md and docs/**/*.md: every target file or folder exists
and every #anchor names a heading of the target (GitHub's heading slugs). Prints each broken
link and exits 1 if there is one. Usage: python3 scripts/check_doc_links.py [repo root]"""
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parent.parent).resolve()
files = [root / "README.md"] + sorted((root / "docs").rglob("*.md"))
link_re = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def strip_code(text):
    """Drop fenced code blocks and inline code spans (links there are not links)."""
    out, fenced = [], False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            out.append("")
            continue
        out.append("" if fenced else re.sub(r"`[^`]*`", "", line))
    return "\n".join(out)


def slugs(path):
    result, seen, fenced = set(), {}, False
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced or not re.match(r"#{1,6} ", line):
            continue
        title = line.lstrip("#").strip()
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # link text only
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        result.add(slug if n == 0 else f"{slug}-{n}")
    return result


bad = 0
for f in files:
    for target in link_re.findall(strip_code(f.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        dest = (f.parent / path_part).resolve() if path_part else f
        problem = None
        if not dest.exists():
            problem = "no such file"
        elif anchor and dest.is_file() and dest.suffix == ".md" and anchor not in slugs(dest):
            problem = f"no heading #{anchor}"
        if problem:
            bad += 1
            print(f"{f.relative_to(root)}: ({target}): {problem}")
print(f"{len(files)} files checked, {bad} broken link(s)")
sys.exit(1 if bad else 0)
