"""The paper's experiments on simulated worlds where the truth is known.

``import esmm_np.experiments as E`` gives every public name of the parts:

- :mod:`.config`: the configurations and the effort rule (``ExperimentConfig``,
  ``quick_config``, ``paper_config``, ``demo_config``, ``fair_effort``, ``make_world``);
- :mod:`.baselines`: the methods and their trainers (ESCM²'s included);
- :mod:`.workers`: running trainings in worker processes;
- :mod:`.scoring`: scores and intervals of differences to ESMM (within and across worlds);
- :mod:`.stopping`: the stopping rule (criterion, learning-rate decay, minimum positives);
- :mod:`.checks`: the size checks made before the first training;
- :mod:`.runner`: :func:`run_all`, the sweep, the effort checks;
- :mod:`.report` and :mod:`.figures`: tables, notes, results.json, the docs section, figures;
- :mod:`.regime`: ESMM − BASE across worlds (rho x CVR).
"""

from . import (baselines, checks, config, figures, regime, report, runner, scoring, stopping,
               workers)
from .config import (PAPER_TABLE2, COLUMNS, INTERVAL_METRICS, NULL_MEANS, fair_effort,
                     ExperimentConfig, quick_config, paper_config, demo_config, CONFIGS,
                     make_world, model_arch)
from .scoring import (intervals, SWEEP_INTERVALS, summarise, ACROSS_WORLDS, ONE_WORLD,
                      across_worlds, world_differences, world_interval)
from .stopping import MIN_VAL_POSITIVES, HALF_LIFE, CRITERIA
from .checks import check_world, TooSmall
from .runner import (run_all, run_experiment, sparsity_sweep, budget_check, budget_table,
                     stopping_curves)
from .report import (SHORT, GLOSSARY, glossary_table, unresolved_note, noise_note,
                     stopping_rule, excludes_zero, caveat, format_table, format_interval, interval_table,
                     choice_note, effort_note, division_note, report_text, results_json, save,
                     DOC_START, DOC_END, doc_markers, write_docs, sweep_table, capped,
                     effort_table)
from .figures import plot, plot_regime_map
from .regime import (regime_config, regime_map, regime_table, save_regime_map,
                     write_regime_docs)
from .regime import noise_line as regime_noise_line
