"""Keep BLAS to one thread in esmm_np's training loops.

esmm_np multiplies small matrices (a batch of a few hundred rows by a tower
of tens of units) thousands of times. NumPy's BLAS (OpenBLAS) splits each
product over all cores and its worker threads spin while they wait for the
next one. On a quiet machine that buys little for products this small; on a
busy one it is ruinous: when another process holds a core, every product
waits for a thread that is not running, and training becomes several times
slower (benchmarks/bench_busy.py measures it). One thread per process avoids
the stall, and parallelism, where wanted, comes from processes instead.

The limit is applied with ``threadpoolctl`` (a small library made for this,
the one scikit-learn uses), which changes the thread count of the BLAS that
is already loaded. It is an optional dependency (``pip install
esmm_np[threads]``; the test and notebook extras include it) because the
package needs only NumPy. Without it the limit is skipped and
:func:`hint` explains the alternative: set ``OPENBLAS_NUM_THREADS=1`` (or
``OMP_NUM_THREADS=1``) before Python starts.

An explicit choice wins: when one of those environment variables is set,
esmm_np leaves BLAS alone.
"""

import contextlib
import functools
import os

#: Threads BLAS may use inside :func:`esmm_np.fit` and the command line;
#: None leaves BLAS as it is.
TRAINING_THREADS = 1

#: Environment variables that, when set, mean the user chose a thread count.
_USER_SETTINGS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

_controller = None   # one threadpoolctl.ThreadpoolController, built on first use


def available():
    """True when threadpoolctl is installed, so the limit can be applied."""
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        return False
    return True


def user_chose():
    """True when the environment already sets a BLAS thread count."""
    return any(os.environ.get(v) for v in _USER_SETTINGS)


@contextlib.contextmanager
def limit_blas_threads(n_threads=None):
    """Within the block, BLAS uses at most ``n_threads`` (default :data:`TRAINING_THREADS`).

    Does nothing when the count is None, when the user set a thread count in
    the environment, or when threadpoolctl is not installed.
    """
    global _controller
    n_threads = TRAINING_THREADS if n_threads is None else n_threads
    if n_threads is None or user_chose() or not available():
        yield
        return
    if _controller is None:
        from threadpoolctl import ThreadpoolController
        _controller = ThreadpoolController()   # scanning loaded libraries costs milliseconds
    with _controller.limit(limits=int(n_threads), user_api="blas"):
        yield


def blas_limited(func):
    """Run ``func`` inside :func:`limit_blas_threads` (decorator for training entry points)."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with limit_blas_threads():
            return func(*args, **kwargs)
    return wrapper


def hint():
    """A one-line suggestion when the limit cannot be applied, else ''."""
    if TRAINING_THREADS is None or user_chose() or available():
        return ""
    return ("note: threadpoolctl is not installed, so BLAS may use every core and stall on a "
            "busy machine; pip install 'esmm_np[threads]' or set OPENBLAS_NUM_THREADS=1")
