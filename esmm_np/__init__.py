"""esmm_np: the Entire Space Multi-Task Model (ESMM) in NumPy, for learning.

Ma, X., Zhao, L., Huang, G., Wang, Z., Hu, Z., Zhu, X., Gai, K. (2018).
Entire Space Multi-Task Model: An Effective Approach for Estimating
Post-Click Conversion Rate. SIGIR 2018.
"""

from . import gradcheck, layers, losses, optim, validate
from .model import ESMM, TowerModel
from .optim import SGD, Adam
from .train import fit

__all__ = ["ESMM", "TowerModel", "SGD", "Adam", "fit", "gradcheck", "layers", "losses",
           "optim", "validate"]
__version__ = "0.1.0"
