"""Whole-model gradient checks of the multi-task family (``esmm-np gradcheck --model NAME``).

Each example is the family member with every option it has switched on, as
:func:`esmm_np.gradcheck.everything_on_example` does for ESMM: PReLU,
dropout (masks fixed by the seed), batch norm, L2 on the table and on every
weight matrix, two dense features, towers of different widths, unequal loss
weights; parameters perturbed off their initial values. The check itself is
:func:`esmm_np.gradcheck.check_model`, centred differences in float64.
"""

import numpy as np

from . import gradcheck as G
from .aitm import AITM
from .gated import MMoE, PLE
from .multitask import SPACES, SharedBottom

#: Command-line name -> (class, its own options in the example, what they are in words).
EXAMPLES = {
    "sb": (SharedBottom, dict(bottom_units=(6, 5), tower_units=((4,), (3,))),
           "bottom (6, 5), towers (4,) and (3,)"),
    "mmoe": (MMoE, dict(n_experts=3, expert_units=(4,), tower_units=((4,), (3,))),
             "3 experts (4,), towers (4,) and (3,)"),
    "ple": (PLE, dict(n_levels=2, n_shared_experts=2, n_task_experts=1, expert_units=(4,),
                      tower_units=((4,), (3,))),
            "2 levels of 2 shared and 1 task expert (4,) each, towers (4,) and (3,)"),
    "aitm": (AITM, dict(tower_units=((5, 4), (3,)), calibrator_weight=0.8),
             "towers (5, 4) and (3,), information layer (3,), calibrator weight 0.8"),
}

#: The options every example shares (ESMM's every-option example, less its tower sizes).
COMMON = dict(embed_dim=3, activation="prelu", dropout=0.2, batch_norm=True,
              l2_reg_embedding=1e-2, l2_reg_dnn=1e-2, n_dense=2, loss_weights=(1.0, 0.7))


def everything_on_example(name, space="entire", n=16, seed=0, **overrides):
    """A small float64 family model with every option on, and a batch for it.

    Parameters
    ----------
    name : {"sb", "mmoe", "ple", "aitm"}
    space : {"entire", "clicked"}
        Not for AITM (whose losses are always over every impression).
    n : int >= 2
    seed : int
    **overrides : options replacing the example's (e.g. ``bag_dims``)

    Returns
    -------
    model, (X, click, conversion, dense)
    """
    if name not in EXAMPLES:
        raise ValueError(f"unknown model {name!r}; the family's are {sorted(EXAMPLES)}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"the example needs n >= 2 rows (batch norm and both click "
                         f"classes), got {n!r}")
    cls, own, _ = EXAMPLES[name]
    options = {**COMMON, **own, **({} if name == "aitm" else {"space": space}), **overrides}
    model = cls(G.EXAMPLE_FIELD_DIMS, seed=seed, **options)
    return model, G.perturb_and_draw(model, n, seed)


def run(name, n=16, seed=0, h=G.FD_STEP, tol=G.MODEL_TOL):
    """Print the gradient-check table of ``name`` (both spaces where it has them); exit code.

    Returns 0 when every tensor of every table is ok, else 1.
    """
    cls, _, words = EXAMPLES[name]
    spaces = ("entire",) if name == "aitm" else SPACES
    print(f"Gradient check of a float64 {cls.__name__} with every option on: PReLU, dropout "
          "(fixed masks), batch norm, L2 on the table and every weight matrix, 2 dense "
          f"features, loss weights (1, 0.7), {words}.")
    print(f"Centred differences, h = {h:g}; ok when relative error <= {tol:g}.")
    ok = True
    for space in spaces:
        model, (X, click, conversion, dense) = everything_on_example(name, space, n, seed)
        if name != "aitm":
            print(f"\nspace = {space!r}")
        rows = G.check_model(model, X, click, conversion, dense=dense, step=h, tol=tol,
                            seed=seed)
        print(G.format_table(rows))
        ok = ok and all(r["ok"] for r in rows)
    return 0 if ok else 1
