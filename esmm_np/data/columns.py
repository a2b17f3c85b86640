"""Arrays written in pieces and read back without holding them in memory.

The Ali-CCP conversion (:mod:`esmm_np.data.aliccp`) streams raw files far
larger than memory: what it parses goes to temporary columns on disk
(:class:`Column`), the cache's ``.npy`` files are written front to back
(:class:`NpyWriter`), and ids are numbered and counted chunk by chunk
(:class:`IdTable`).
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


class IdTable:
    """Every distinct int64 key seen, a small id for each (0, 1, 2, ... in order of first
    sight) and a count per id; memory grows with the distinct keys, not the occurrences.

    The conversion stores each feature's id (int32) instead of its key, so that
    once the vocabulary is known a feature's code is one lookup in an array
    indexed by id.
    """

    def __init__(self):
        self.keys = np.zeros(0, dtype=np.int64)      # (K,) sorted
        self.ids = np.zeros(0, dtype=np.int64)       # (K,) id of each sorted key
        self.counts = np.zeros(0, dtype=np.int64)    # (K,) occurrences, by id

    def __len__(self):
        return len(self.counts)

    def ids_of(self, keys, count=True):
        """The ids of ``keys`` (new keys get new ids); ``count``: add one per occurrence."""
        if len(keys) == 0:
            return np.zeros(0, dtype=np.int32)
        u, inv = np.unique(keys, return_inverse=True)                 # (u,), (len(keys),)
        at = np.searchsorted(self.keys, u)
        found = at < len(self.keys)
        found[found] = self.keys[at[found]] == u[found]
        uid = np.empty(len(u), dtype=np.int64)
        uid[found] = self.ids[at[found]]
        new = np.flatnonzero(~found)
        if new.size:
            uid[new] = np.arange(len(self.counts), len(self.counts) + new.size)
            self.keys = np.insert(self.keys, at[new], u[new])         # stays sorted: u is
            self.ids = np.insert(self.ids, at[new], uid[new])
            self.counts = np.concatenate([self.counts, np.zeros(new.size, dtype=np.int64)])
        if count:
            self.counts[uid] += np.bincount(inv.ravel(), minlength=len(u))
        return uid[inv.ravel()].astype(np.int32)

    def add(self, ids, weights):
        """Add ``weights`` occurrences of each id in ``ids`` (ids known already)."""
        self.counts += np.bincount(ids, weights=weights,
                                   minlength=len(self.counts)).astype(np.int64)
