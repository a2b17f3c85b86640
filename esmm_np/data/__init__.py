"""Impressions: simulated with their ground truth, or read from real logs.

- :mod:`.simulator`: :func:`simulate`, a world where the true CTR and CVR of
  every impression, clicked or not, is known;
- :mod:`.dataset`: :class:`Dataset`, one checked table of impressions, and
  :func:`clean_dataset` for raw logs;
- :mod:`.bags`: multi-valued fields (bags of ids) in CSR form;
- :mod:`.csv_reader` and :mod:`.aliccp`: readers for a flat CSV log and for
  Ali-CCP, the ESMM paper's public dataset (:mod:`.aliccp_parse` reads its
  raw format, :mod:`.aliccp_sim` writes it from a simulated world,
  :mod:`.columns` holds the arrays the conversion streams to disk);
- :mod:`.files`: the one safe file writer and strict JSON.

``from esmm_np.data import Dataset`` keeps working as it always has.
"""

from .dataset import CleanReport, Dataset, clean_dataset, describe
