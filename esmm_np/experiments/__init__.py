"""The paper's experiments on simulated worlds where the truth is known.

``import esmm_np.experiments as E`` gives the runner (:mod:`.runner`): the
configurations, :func:`run_all`, the reports and the regime map. The methods
it compares are in :mod:`.baselines`.
"""

from . import baselines, runner
from .runner import (PAPER_TABLE2, COLUMNS, INTERVAL_METRICS, NULL_MEANS, fair_effort,
    ExperimentConfig, quick_config, paper_config, demo_config, CONFIGS, make_world, _arch,
    intervals, SWEEP_INTERVALS, summarise, run_all, run_experiment, sparsity_sweep, capped,
    effort_table, budget_check, budget_table, stopping_curves, regime_config, regime_map,
    regime_table, plot_regime_map, save_regime_map, write_regime_docs, SHORT, caveat,
    format_table, interval_table, choice_note, effort_note, division_note, report_text,
    results_json, save, DOC_START, DOC_END, doc_markers, write_docs, sweep_table, plot)
