"""esmm_np: the Entire Space Multi-Task Model (ESMM) in NumPy, for learning.

Ma, X., Zhao, L., Huang, G., Wang, Z., Hu, Z., Zhu, X., Gai, K. (2018).
Entire Space Multi-Task Model: An Effective Approach for Estimating
Post-Click Conversion Rate. SIGIR 2018.

The lesson is the flat core: ``layers``, ``losses``, ``reference``,
``model``, ``escm2``, ``optim``, ``train``, ``gradcheck``. The folders hold
what a learner reads later: ``data/`` (simulator, Dataset, bags, readers),
``experiments/`` (baselines, runner, reports).
"""

from . import data, gradcheck, layers, losses, metrics, optim, threads, validate
from . import aliccp
from .data import bags, files, simulator
from .data.csv_reader import read_csv
from .data.dataset import CleanReport, Dataset, clean_dataset, describe
from .model import ESMM, TowerModel
from .escm2 import ESCM2
from .optim import SGD, Adam
from .persist import load_model
from .data.simulator import simulate
from .train import fit
from .version import __version__

__all__ = ["ESMM", "ESCM2", "TowerModel", "SGD", "Adam", "fit", "simulate", "Dataset", "clean_dataset",
           "CleanReport", "describe", "load_model", "data", "files", "gradcheck", "layers",
           "losses", "metrics", "optim", "simulator", "threads", "validate",
           "aliccp", "bags", "read_csv"]
