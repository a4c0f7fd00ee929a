#!/usr/bin/env python3
"""The structure rules the tree keeps (issue 12), checked on every CI run:

  * no source file outside tests/ is longer than 600 lines;
  * no function in router/ is longer than 80 lines;
  * no run of more than 10 lines is written twice inside router/fabric/
    (blank lines, comments and #include lines do not count).

Usage: scripts/check_structure.py [source-root]. Prints each violation with
its place and exits 1 if there is any; prints a summary and exits 0 if not.
"""
import pathlib
import re
import sys

MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80
MAX_REPEATED_RUN = 10
SOURCE_DIRS = ["router", "libffverbs", "shm", "proto", "policy", "bench"]
SUFFIXES = {".cc", ".h", ".c", ".cpp", ".hpp"}
NOT_FUNCTIONS = re.compile(r"^\s*(namespace|class|struct|enum|union|extern|if|for|while|switch|do|else|try|catch)\b")


def sources(root, dirs):
    for d in dirs:
        for p in sorted((root / d).rglob("*")):
            if p.suffix in SUFFIXES and p.is_file():
                yield p


def long_files(root):
    for p in sources(root, SOURCE_DIRS):
        n = len(p.read_text(errors="replace").splitlines())
        if n > MAX_FILE_LINES:
            yield f"{p.relative_to(root)}: {n} lines (max {MAX_FILE_LINES})"


def strip_code(line):
    """The line without string/char literals and // comments (enough to count braces)."""
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])*'", "''", line)
    return line.split("//", 1)[0]


def functions(lines):
    """(first line, last line, signature) of each function definition whose
    body opens at the end of a signature line ('... ) {' or '... ) const {')."""
    depth = 0
    open_fn = []  # stack of (start index, depth before its body, signature)
    for i, raw in enumerate(lines):
        code = strip_code(raw)
        stripped = code.strip()
        starts = (stripped.endswith("{") and ")" in stripped and not NOT_FUNCTIONS.match(stripped)
                  and "=" not in stripped.split("(", 1)[0] and not stripped.startswith(("}", "[", "(", "return")))
        if starts and not open_fn:
            # the signature may start on an earlier line
            j = i
            while j > 0 and "(" not in strip_code(lines[j]) and strip_code(lines[j - 1]).strip():
                j -= 1
            while j > 0 and strip_code(lines[j - 1]).strip().endswith(",") :
                j -= 1
            open_fn.append((j, depth, stripped))
        depth += code.count("{") - code.count("}")
        if open_fn and depth <= open_fn[-1][1]:
            start, _, sig = open_fn.pop()
            yield start, i, sig


def long_functions(root):
    for p in sources(root, ["router"]):
        lines = p.read_text(errors="replace").splitlines()
        for start, end, sig in functions(lines):
            n = end - start + 1
            if n > MAX_FUNCTION_LINES:
                yield f"{p.relative_to(root)}:{start + 1}: function of {n} lines (max {MAX_FUNCTION_LINES}): {sig[:70]}"


def meaningful(lines):
    out = []
    in_block = False
    for no, raw in enumerate(lines, 1):
        s = raw.strip()
        if in_block:
            in_block = "*/" not in s
            continue
        if s.startswith("/*"):
            in_block = "*/" not in s
            continue
        if not s or s.startswith("//") or s.startswith("#include") or s in ("{", "}", "};"):
            continue
        out.append((no, s))
    return out


def repeated_runs(root):
    width = MAX_REPEATED_RUN + 1
    seen = {}
    found = []
    for p in sources(root, ["router/fabric"]):
        rel = p.relative_to(root)
        code = meaningful(p.read_text(errors="replace").splitlines())
        reported_until = -1
        for k in range(len(code) - width + 1):
            key = "\n".join(s for _, s in code[k:k + width])
            where = (rel, code[k][0], code[k + width - 1][0])
            if key in seen and k > reported_until:
                other = seen[key]
                found.append(f"{where[0]}:{where[1]}-{where[2]} repeats {other[0]}:{other[1]}-{other[2]}")
                reported_until = k + width
            seen.setdefault(key, where)
    return found


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parent.parent)
    problems = list(long_files(root)) + list(long_functions(root)) + repeated_runs(root)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} structure rule(s) broken (scripts/check_structure.py)")
        return 1
    print(f"structure: files <= {MAX_FILE_LINES} lines, router functions <= {MAX_FUNCTION_LINES} lines, "
          f"no run of more than {MAX_REPEATED_RUN} lines repeated in router/fabric")
    return 0


if __name__ == "__main__":
    sys.exit(main())
