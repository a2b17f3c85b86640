"""The same ESMM under PyTorch's autograd: see :mod:`esmm_np.teach.torch_bridge`.

Kept at this name because the README and docs/teaching.md give
``from esmm_np import torch_bridge``; the code lives in ``esmm_np/teach/``
with the rest of what checks a learner's work.
"""

from .teach.torch_bridge import ZERO_ATOL, compare, dropout_masks, format_rows, load_into, to_torch

__all__ = ["ZERO_ATOL", "compare", "dropout_masks", "format_rows", "load_into", "to_torch"]
