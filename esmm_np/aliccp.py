"""Ali-CCP, the ESMM paper's public dataset: convert the raw files, load the cache.

This is the documented import path (``esmm_np.aliccp``); the reader itself
lives in :mod:`esmm_np.data.aliccp` (conversion and loading),
:mod:`esmm_np.data.aliccp_parse` (the raw format) and
:mod:`esmm_np.data.aliccp_sim` (raw files from a simulated world).
"""

from .data.aliccp import (SPLITS, SKELETON, COMMON, FORMAT, MalformedLine, convert, load,
    vocabulary, write_raw)
