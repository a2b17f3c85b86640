"""Arrays written in pieces and read back without holding them in memory.

The Ali-CCP conversion (:mod:`esmm_np.data.aliccp`) streams raw files far
larger than memory: what it parses goes to temporary columns on disk
(:class:`Column`), the cache's ``.npy`` files are written front to back
(:class:`NpyWriter`), and id occurrences are counted chunk by chunk
(:class:`Counter`).
"""

import numpy as np


class Column:
    """An array written in pieces to a raw binary file, read back memory-mapped."""

    def __init__(self, path, dtype):
        self.path, self.dtype, self.n = path, np.dtype(dtype), 0
        self.fh = open(path, "wb")

    def append(self, a):
        np.ascontiguousarray(a, dtype=self.dtype).tofile(self.fh)
        self.n += len(a)

    def read(self):
        """Finish writing; return a reader (slices and index arrays give ndarrays)."""
        self.fh.close()
        return ColumnReader(self.path, self.dtype, self.n)


class ColumnReader:
    """Reads a :class:`Column` back: a slice with a plain file read (so its pages do
    not stay resident), an index array through a read-only memory map."""

    def __init__(self, path, dtype, n):
        self.path, self.dtype, self.n, self.map = path, dtype, n, None

    def __len__(self):
        return self.n

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, _ = key.indices(self.n)
            count = max(stop - start, 0)
            if count == 0:
                return np.zeros(0, dtype=self.dtype)
            return np.fromfile(self.path, dtype=self.dtype, count=count,
                               offset=start * self.dtype.itemsize)
        if self.n == 0:
            return np.zeros(np.shape(key), dtype=self.dtype)
        if self.map is None:
            self.map = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.n,))
        return self.map[key]

    def all(self):
        return self[0:self.n]


class NpyWriter:
    """A ``.npy`` file of known shape written front to back in pieces.

    Plain file writes rather than a writable memory map, so the written
    pages do not stay in the process's resident memory.
    """

    def __init__(self, path, dtype, shape):
        self.dtype, self.shape = np.dtype(dtype), tuple(int(d) for d in shape)
        self.left = int(np.prod(self.shape))
        self.fh = open(path, "wb")
        np.lib.format.write_array_header_1_0(
            self.fh, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                      "shape": self.shape})

    def append(self, a):
        a = np.ascontiguousarray(a, dtype=self.dtype)
        self.left -= a.size
        a.tofile(self.fh)

    def close(self):
        self.fh.close()
        if self.left != 0:
            raise RuntimeError(f"{self.fh.name}: {self.left} values short of shape {self.shape}")


class Counter:
    """Occurrences of each int64 key, merged chunk by chunk; memory grows with distinct keys."""

    def __init__(self):
        self.keys = np.zeros(0, dtype=np.int64)
        self.counts = np.zeros(0, dtype=np.int64)
        self.pending, self.n_pending = [], 0

    def add(self, keys, weights=None):
        if len(keys) == 0:
            return
        u, inv = np.unique(keys, return_inverse=True)
        c = np.bincount(inv, weights=weights, minlength=len(u)).astype(np.int64)
        self.pending.append((u, c))
        self.n_pending += len(u)
        if self.n_pending > max(len(self.keys), 1 << 18):   # merge when the pending part is large
            self._merge()

    def _merge(self):
        if not self.pending:
            return
        keys = np.concatenate([self.keys] + [u for u, _ in self.pending])
        counts = np.concatenate([self.counts] + [c for _, c in self.pending])
        self.keys, inv = np.unique(keys, return_inverse=True)
        self.counts = np.bincount(inv, weights=counts, minlength=len(self.keys)).astype(np.int64)
        self.pending, self.n_pending = [], 0

    def result(self):
        self._merge()
        return self.keys, self.counts
