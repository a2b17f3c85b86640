"""What a learner reads when following ``ESMM(...).loss`` through the package.

Runs ``ESMM(field_dims).loss(X, click, conversion)`` on a plain model (default
options: ReLU, one shared table, no bags, no dense features) under
``sys.settrace`` and counts the files, functions and code lines of esmm_np it
executes, and how many of those lines are the model's math.

The rule, applied to each executed line (comments and docstrings never run):

- **validation**: a line of ``esmm_np/validate.py``, of a function named
  ``check_*``, ``_check_*``, ``is_*``, ``in_blocks``, ``check_labels`` or
  ``check_bags``, or a line with ``raise``;
- **math**: otherwise, a line that computes on numbers: it has an arithmetic
  or matrix operator (``+ - * / @ **``, augmented ones included) outside
  string literals, or calls a NumPy routine that computes values
  (``np.take``, ``np.exp``, ``np.add.at``, ``.sum(``, ``.reshape(`` ...), or
  calls a layer, loss or reference function (``*_forward``, ``*_backward``,
  ``sigmoid``, ``softplus``, ``bce_*``, ``ctcvr_*``, ``scatter_add*``,
  ``l2_penalty``);
- **other**: everything else (option branches, dispatch, dict and tuple
  plumbing, returns of caches).

Usage (the package found on PYTHONPATH is the one measured)::

    PYTHONPATH=. python benchmarks/reading_path.py
"""

import io
import os
import re
import sys
import tokenize

import numpy as np

import esmm_np

PACKAGE = os.path.dirname(os.path.abspath(esmm_np.__file__))

VALIDATION_FUNCS = re.compile(r"^(_?check_\w*|is_\w+|in_blocks)$")
MATH_CALLS = re.compile(
    r"\b(np\.(take|exp|log|log1p|logaddexp|maximum|minimum|where|sort|cumsum|concatenate|"
    r"add\.at|add\.reduceat|sqrt|abs|mean|sum|zeros|zeros_like|not_equal|repeat|arange)|"
    r"\.sum\(|\.mean\(|\.reshape\(|\.T\b|\w+_forward\(|\w+_backward\(|\bsigmoid\(|"
    r"\bsoftplus\(|\bbce_\w+\(|\bctcvr_\w+\(|\bscatter_add\w*\(|\bl2_penalty\(|"
    r"_logsumexp3\()")
OPERATORS = {"+", "-", "*", "/", "@", "**", "+=", "-=", "*=", "/=", "@="}


def _code_only(line):
    """The line with string literals and comments removed (tokens joined by spaces)."""
    try:
        toks = list(tokenize.generate_tokens(io.StringIO(line.strip() + "\n").readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return line
    keep = [t for t in toks if t.type not in (tokenize.STRING, tokenize.COMMENT)
            and not (sys.version_info >= (3, 12) and t.type in (
                getattr(tokenize, "FSTRING_START", -1), getattr(tokenize, "FSTRING_MIDDLE", -1),
                getattr(tokenize, "FSTRING_END", -1)))]
    return keep


def classify(path, func, line):
    """'validation', 'math' or 'other' for one executed source line (the rule above)."""
    if os.path.basename(path) == "validate.py" or VALIDATION_FUNCS.match(func) \
            or func in ("check_labels", "check_bags") or re.search(r"\braise\b", line):
        return "validation"
    toks = _code_only(line)
    if isinstance(toks, str):
        text = toks
        has_op = any(op in text for op in (" + ", " - ", " * ", " / ", " @ "))
    else:
        text = " ".join(t.string for t in toks)
        prev = None
        has_op = False
        for t in toks:
            if t.type == tokenize.OP and t.string in OPERATORS:
                # a unary minus after '(' ',' '=' or at the start is still arithmetic
                has_op = True
                break
            prev = t
    text_nospace = re.sub(r"\s+", "", text).replace(".", ".")
    if has_op or MATH_CALLS.search(text_nospace.replace("np.", "np.")) or MATH_CALLS.search(text):
        return "math"
    return "other"


def trace_loss():
    """Execute a plain ESMM.loss under the tracer; return {(file, line): func} and the calls."""
    rng = np.random.default_rng(0)
    field_dims = (5, 4, 3)
    model = esmm_np.ESMM(field_dims)
    n = 32
    X = np.stack([rng.integers(0, d, n) for d in field_dims], axis=1)
    click = rng.integers(0, 2, n)
    conversion = click * rng.integers(0, 2, n)
    model.loss(X, click, conversion)                      # warm up (lazy imports, caches)
    lines, funcs = {}, set()

    def tracer(frame, event, arg):
        path = frame.f_code.co_filename
        if not path.startswith(PACKAGE):
            return None
        if event == "call":
            funcs.add((path, frame.f_code.co_name, frame.f_code.co_firstlineno))
        elif event == "line":
            lines[(path, frame.f_lineno)] = frame.f_code.co_name
        return tracer

    sys.settrace(tracer)
    try:
        model.loss(X, click, conversion)
    finally:
        sys.settrace(None)
    return lines, funcs


def modules():
    """(number of .py modules of the package, the longest one and its line count)."""
    sizes = {}
    for root, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                p = os.path.join(root, f)
                with open(p, encoding="utf-8") as fh:
                    sizes[os.path.relpath(p, PACKAGE)] = sum(1 for _ in fh)
    longest = max(sizes, key=sizes.get)
    return len(sizes), longest, sizes[longest]


def main():
    lines, funcs = trace_loss()
    sources = {}
    kinds = {"math": 0, "validation": 0, "other": 0}
    per_file = {}
    for (path, lineno), func in sorted(lines.items()):
        if path not in sources:
            with open(path, encoding="utf-8") as fh:
                sources[path] = fh.read().splitlines()
        text = sources[path][lineno - 1]
        kind = classify(path, func, text)
        kinds[kind] += 1
        per_file.setdefault(os.path.relpath(path, PACKAGE), {"math": 0, "validation": 0,
                                                             "other": 0})[kind] += 1
        if "-v" in sys.argv:
            print(f"{kind:<10} {os.path.relpath(path, PACKAGE)}:{lineno:<4} {text.strip()}")
    total = sum(kinds.values())
    n_mod, longest, longest_lines = modules()
    print(f"package: {PACKAGE}")
    print(f"plain ESMM.loss executes {len(per_file)} files, {len(funcs)} functions, "
          f"{total} code lines")
    print(f"  math {kinds['math']} ({kinds['math'] / total:.0%}), validation "
          f"{kinds['validation']}, other {kinds['other']}")
    for f, k in sorted(per_file.items()):
        print(f"  {f:<22} math {k['math']:>3}  validation {k['validation']:>3}  other {k['other']:>3}")
    print(f"modules: {n_mod} .py files; longest {longest} ({longest_lines} lines)")


if __name__ == "__main__":
    main()
