"""Every method the experiment runner can train: the paper's baselines and ours
(:mod:`esmm_np.experiments.baselines`) and the multi-task family
(:mod:`esmm_np.experiments.family`).

The runner, its workers and the command line look methods up here, so the
two method modules never import each other.
"""

from . import baselines, family

#: Method name -> trainer(ctx) -> method.
TRAINERS = {**baselines.TRAINERS, **family.TRAINERS}
