"""Execute notebooks top to bottom, so they can be committed with their outputs.

    python notebooks/execute.py                      # the walkthrough notebooks, in place
    python notebooks/execute.py 02_esmm_from_scratch.ipynb
    python notebooks/execute.py --quick              # ESMM_NP_QUICK=1: the tests' small size
    python notebooks/execute.py --out /tmp/run       # write the executed copies elsewhere
    python notebooks/execute.py --solutions --out /tmp/key notebooks/exercises/*.ipynb
                                                     # exercise notebooks with our answers filled in

Each notebook runs in a fresh kernel from its own folder. A notebook is
written only after a clean run, to a temporary file that then replaces the
target, so an error in any cell leaves the target untouched and the script
exits non-zero. Kernels get OPENBLAS_NUM_THREADS=1 (and OMP_NUM_THREADS=1)
unless you set them: the notebooks' matrices are small, and a second BLAS
thread on a busy machine can slow them many times over.
"""

import argparse
import glob
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def execute(path, timeout=900, solutions=False):
    """Run one notebook in a fresh kernel; return (the executed notebook, seconds taken).

    With ``solutions=True`` the exercise blanks are first filled with our
    reference functions (:func:`esmm_np.exercises.fill_blanks`).
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    if solutions:
        from esmm_np.exercises import fill_blanks
        fill_blanks(nb)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}}).execute()
    return nb, time.perf_counter() - start


def write_atomically(nb, target):
    """Write ``nb`` to a temporary file beside ``target``, then rename it into place."""
    import nbformat

    tmp = f"{target}.tmp{os.getpid()}"
    try:
        nbformat.write(nb, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python notebooks/execute.py",
        description="Execute notebooks top to bottom in fresh kernels and write them with "
                    "their outputs (in place, or into --out).")
    p.add_argument("notebooks", nargs="*",
                   help="notebook files (default: the walkthrough notebooks notebooks/[0-9]*.ipynb)")
    p.add_argument("--out", metavar="DIR",
                   help="write the executed notebooks into DIR instead of over the originals")
    p.add_argument("--timeout", type=float, default=900, metavar="SECONDS",
                   help="longest a single cell may run (default 900)")
    p.add_argument("--quick", action="store_true",
                   help="set ESMM_NP_QUICK=1: the small configuration the tests use")
    p.add_argument("--solutions", action="store_true",
                   help="fill the exercise blanks with our reference functions first "
                        "(needs --out: exercise notebooks are committed blank)")
    args = p.parse_args(argv)
    if args.solutions and not args.out:
        p.error("--solutions needs --out: the exercise notebooks are committed without solutions")
    if args.timeout <= 0:
        p.error("--timeout must be positive")
    missing = [n for n in args.notebooks if not os.path.isfile(n)]
    if missing:
        p.error(f"no such notebook: {', '.join(missing)}")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.quick:
        os.environ["ESMM_NP_QUICK"] = "1"          # the kernel inherits the environment
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    paths = args.notebooks or sorted(glob.glob(os.path.join(HERE, "[0-9]*.ipynb")))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    for path in paths:
        nb, seconds = execute(path, timeout=args.timeout, solutions=args.solutions)
        target = os.path.join(args.out, os.path.basename(path)) if args.out else path
        write_atomically(nb, target)
        print(f"{os.path.basename(path)}: executed in {seconds:.0f} s -> {target}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
