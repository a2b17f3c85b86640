"""What a learner reads when following ``ESMM(...).loss`` through the package.

Runs ``ESMM(field_dims).loss(X, click, conversion)`` on a plain model (default
options: ReLU, one shared table, no bags, no dense features) under
``sys.settrace`` and counts the files, functions and code lines of esmm_np it
executes, and how many of those lines are the model's math. A *code line* is
one executed statement (a statement over several physical lines counts once;
for ``if``/``for``/``while`` only the header).

The rule, applied to each executed statement:

- **validation**: a statement of ``esmm_np/validate.py`` or of a function
  named ``check_*``, ``_check_*``, ``is_*`` or ``in_blocks``; a ``raise``;
  or a statement that calls such a function (``validate.check_int(...)``,
  ``self.check_rows(...)``): the entry point's checks;
- **math**: otherwise, a statement that computes on numbers: it has an
  arithmetic or matrix operator (``+ - * / // % @ ** ~``, augmented ones
  included; a comparison too, in an assignment: ``mask = x > 0``) outside
  string literals, or calls a NumPy routine that computes
  values (``np.take``, ``np.exp``, ``np.add.at``, ``.sum(``, ``.reshape(`` ...),
  or calls a function whose job is the math: a layer, loss or reference
  function (``*_forward``, ``*_backward``, also through the activation
  tables ``ACTIVATION_FORWARD[...]``, ``sigmoid``, ``softplus``, ``bce_*``,
  ``ctcvr_*``, ``scatter_add*``, ``l2_penalty``) or the models' own (``_embed``, ``_embed_backward``, ``_forward``, ``_loss_grads``,
  ``_loss_at_logits``, ``_l2``);
- **other**: everything else (option branches, dispatch, dict and tuple
  plumbing, returns of caches, the entry point's hand-offs).

Usage (the package found on PYTHONPATH is the one measured)::

    PYTHONPATH=. python benchmarks/reading_path.py [-v] [--reference]

``-v`` prints every statement with its class; ``--reference`` measures
``esmm_np.reference.loss`` on the same model and batch instead.
"""

import ast
import io
import os
import re
import sys
import tokenize

import numpy as np

import esmm_np

PACKAGE = os.path.dirname(os.path.abspath(esmm_np.__file__))

VALIDATION_FUNCS = re.compile(r"^(_?check_\w*|is_\w+|in_blocks|as_array)$")
MATH_CALLS = re.compile(
    r"(\bnp\.(take|exp|log|log1p|logaddexp|maximum|minimum|where|sort|cumsum|concatenate|"
    r"add\.at|add\.reduceat|sqrt|abs|mean|sum|zeros|zeros_like|not_equal|repeat|arange)\b|"
    r"\.sum\(|\.mean\(|\.reshape\(|\.T\b|\w+_forward\(|\w+_backward\(|\bsigmoid\(|"
    r"\bsoftplus\(|\bbce_\w+\(|\bctcvr_\w+\(|\bscatter_add\w*\(|\bl2_penalty\(|"
    r"_logsumexp3\(|\._embed\(|\._embed_backward\(|\._forward\(|\._loss_grads\(|"
    r"\._loss_at_logits\(|\._l2\(|_ACT_(FORWARD|BACKWARD)\[|ACTIVATION_(FORWARD|BACKWARD)\[)")
CALLS_CHECK = re.compile(r"(\bcheck_\w+\(|\bvalidate\.\w+\(|\b_check_\w+\()")
OPERATORS = {"+", "-", "*", "/", "//", "%", "@", "**", "~", "+=", "-=", "*=", "/=", "@=", "//="}
COMPARISONS = {">", "<", ">=", "<=", "==", "!="}


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
            or re.search(r"^\s*raise\b", line) or CALLS_CHECK.search(line):
        return "validation"
    toks = _code_only(line)
    if isinstance(toks, str):            # could not tokenize: look for spaced operators
        has_op = any(op in toks for op in (" + ", " - ", " * ", " / ", " @ "))
    else:                                # an operator token; a comparison only outside a test
        has_op = any(t.type == tokenize.OP and (
            t.string in OPERATORS or (t.string in COMPARISONS and toks[0].string not in (
                "if", "elif", "while", "return", "assert"))) for t in toks)
    code = "\n".join(part.split("#")[0] for part in line.splitlines())   # comments dropped
    if has_op or MATH_CALLS.search(code):
        return "math"
    return "other"


def statements(path):
    """{first line of each statement: its source text}; compound statements give their header."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    lines = text.splitlines()
    out, first = {}, {}
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.stmt):
            continue
        if isinstance(node, (ast.If, ast.For, ast.While, ast.With, ast.Try)):
            body0 = node.body[0].lineno if node.body else node.lineno + 1
            end = max(node.lineno, body0 - 1)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            continue
        else:
            end = node.end_lineno
        out[node.lineno] = "\n".join(lines[node.lineno - 1:end])
        for ln in range(node.lineno, end + 1):
            first.setdefault(ln, node.lineno)
    return out, first


def trace_loss():
    """Execute a plain ESMM.loss under the tracer; return {(file, line): func} and the calls."""
    rng = np.random.default_rng(0)
    field_dims = (5, 4, 3)
    model = esmm_np.ESMM(field_dims)
    n = 32
    X = np.stack([rng.integers(0, d, n) for d in field_dims], axis=1)
    click = rng.integers(0, 2, n)
    conversion = click * rng.integers(0, 2, n)
    if "--reference" in sys.argv:                         # the plain file instead of the package
        from esmm_np import reference
        rows = X + model.offsets
        call = lambda: reference.loss(model.params, rows, click, conversion)   # noqa: E731
    else:
        call = lambda: model.loss(X, click, conversion)                        # noqa: E731
    call()                                                # warm up (lazy imports, caches)
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
        call()
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
    executed = {}
    for (path, lineno), func in lines.items():
        if path not in sources:
            sources[path] = statements(path)
        stmts, first = sources[path]
        if lineno in first:
            executed[(path, first[lineno])] = func
    for (path, lineno), func in sorted(executed.items()):
        text = sources[path][0][lineno]
        kind = classify(path, func, text)
        kinds[kind] += 1
        per_file.setdefault(os.path.relpath(path, PACKAGE), {"math": 0, "validation": 0,
                                                             "other": 0})[kind] += 1
        if "-v" in sys.argv:
            print(f"{kind:<10} {os.path.relpath(path, PACKAGE)}:{lineno:<4} "
                  f"{' '.join(text.split())[:110]}")
    total = sum(kinds.values())
    # The same count without the bodies of the validation functions: a reader follows
    # ``check_ids(X)`` as one line and does not step into it.
    inside = sum(1 for (path, lineno), func in executed.items()
                 if os.path.basename(path) == "validate.py" or VALIDATION_FUNCS.match(func))
    n_mod, longest, longest_lines = modules()
    print(f"package: {PACKAGE}")
    what = "reference.loss" if "--reference" in sys.argv else "plain ESMM.loss"
    print(f"{what} executes {len(per_file)} files, {len(funcs)} functions, "
          f"{total} code lines")
    print(f"  math {kinds['math']} ({kinds['math'] / total:.0%}), validation "
          f"{kinds['validation']}, other {kinds['other']}")
    read = total - inside
    print(f"  without the {inside} statements inside validation functions: {read} code lines, "
          f"math {kinds['math']} ({kinds['math'] / read:.0%}), validation calls "
          f"{kinds['validation'] - inside}, other {kinds['other']}")
    for f, k in sorted(per_file.items()):
        print(f"  {f:<22} math {k['math']:>3}  validation {k['validation']:>3}  other {k['other']:>3}")
    print(f"modules: {n_mod} .py files; longest {longest} ({longest_lines} lines)")


if __name__ == "__main__":
    main()
