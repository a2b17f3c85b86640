"""Execute notebooks in place, so they are committed with their outputs.

    python notebooks/execute.py                 # every notebook in this folder
    python notebooks/execute.py 01_*.ipynb      # some of them
    python notebooks/execute.py --quick         # with ESMM_NP_QUICK=1 (the tests' small configuration)

Each notebook runs top to bottom in a fresh kernel from the notebooks/
folder; an error in any cell stops with a non-zero exit and leaves the file
untouched (it is written only after a clean run).
"""

import glob
import os
import sys
import time

import nbformat
from nbclient import NotebookClient

HERE = os.path.dirname(os.path.abspath(__file__))


def execute(path, timeout=900):
    """Run one notebook; return (the executed notebook, seconds taken)."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}}).execute()
    return nb, time.perf_counter() - start


def main(paths):
    if "--quick" in paths:
        paths = [p for p in paths if p != "--quick"]
        os.environ["ESMM_NP_QUICK"] = "1"   # the kernel inherits it
    paths = paths or sorted(glob.glob(os.path.join(HERE, "[0-9]*.ipynb")))
    for path in paths:
        nb, seconds = execute(path)
        tmp = path + ".tmp"
        nbformat.write(nb, tmp)
        os.replace(tmp, path)
        print(f"{os.path.basename(path)}: executed in {seconds:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
