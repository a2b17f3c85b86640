"""Ali-CCP, the ESMM paper's public dataset: convert the raw files, load the cache.

This is the documented import path (``esmm_np.aliccp``); the reader itself
lives in :mod:`esmm_np.data.aliccp`.
"""

from .data.aliccp import (SPLITS, SKELETON, COMMON, FORMAT, MalformedLine, convert, load,
    vocabulary, write_raw)
