"""The paper's tables and figures from the Parquet results and cached arrays.

Tables (Markdown, LaTeX, CSV): a table function takes the results frame of one model and
returns a :class:`pandas.DataFrame` laid out like the paper's table, whose cells are
:class:`SeedStat` / :class:`CombinedCell` (``str(cell)`` is the formatted text);
:func:`write_table` writes its files with the bold rule, :func:`caption_notes` and the
other caption helpers state what its numbers rest on.

- :mod:`~opnp.report.cells`: cells, :func:`long_format`;
- :mod:`~opnp.report.frames`: checks and row selection (the row and seed choices);
- :mod:`~opnp.report.table_methods`: Tables 1, 2, 5, 6, 4, selected hyperparameters;
- :mod:`~opnp.report.table_ablations`: Tables 3, 7, 8, 9;
- :mod:`~opnp.report.table_layouts`: the registry of layouts that catalogue entries name
  (:mod:`~opnp.report.paper_tables` registers the paper's and builds a table);
- :mod:`~opnp.report.captions`: caption sentences from the rows and cells;
- :mod:`~opnp.report.render`: the files and the bold rule;
- :mod:`~opnp.report.labels`: metric, method and percentage names shared by all.

Figures (PNG, PDF, facts JSON; :mod:`~opnp.report.figure_style` says what they share):
:mod:`~opnp.report.figure_sensitivity` (Figs. 1, 6-9), :mod:`~opnp.report.figure_pruning`
(Figs. 2, 3), :mod:`~opnp.report.figure_results` (Figs. 4, 5).
"""

from opnp.report.captions import (
    SUBSET_SAMPLES_KEY,
    bold_rule_text,
    caption_notes,
    layer_ablation_caption,
    onp_low_side_note,
    sample_sizes_text,
    seeds_text,
    small_sample_text,
    subset_sizes,
    subset_sizes_text,
)
from opnp.report.cells import CombinedCell, SeedStat, long_format
from opnp.report.figure_pruning import (
    METRIC_LABELS,
    PERCENTAGE_LABELS,
    SYMLOG_MIN_SPAN,
    plot_percentage_sweep,
    plot_pruning_before_after,
)
from opnp.report.figure_results import (
    CALIBRATION_LABELS,
    plot_reliability,
    plot_score_distributions,
)
from opnp.report.figure_sensitivity import (
    low_sensitivity_pruned,
    plot_layer_sensitivity,
    plot_pruned_weight_sensitivity,
    plot_sensitivity_distribution,
)
from opnp.report.figure_style import DPI, figure_paths
from opnp.report.labels import AVERAGE, METHOD_LABELS, METRICS, NO_PRUNING, PERCENTAGE_ORDER
from opnp.report.paper_tables import build_table
from opnp.report.render import write_table
from opnp.report.table_ablations import (
    LAYER_LABELS,
    SELECTED_LABEL,
    STATISTIC_LABELS,
    layer_ablation_table,
    pruned_accuracy_table,
    readings_table,
    statistic_table,
    subset_table,
)
from opnp.report.table_methods import (
    REACT_PERCENTILE_SOURCES,
    WITH_WITHOUT_LABELS,
    main_results_table,
    pruning_methods_table,
    selected_params_table,
)

__all__ = [
    "build_table",
    "AVERAGE",
    "CALIBRATION_LABELS",
    "DPI",
    "LAYER_LABELS",
    "METHOD_LABELS",
    "METRICS",
    "METRIC_LABELS",
    "NO_PRUNING",
    "PERCENTAGE_LABELS",
    "PERCENTAGE_ORDER",
    "REACT_PERCENTILE_SOURCES",
    "SELECTED_LABEL",
    "STATISTIC_LABELS",
    "SUBSET_SAMPLES_KEY",
    "SYMLOG_MIN_SPAN",
    "WITH_WITHOUT_LABELS",
    "CombinedCell",
    "SeedStat",
    "bold_rule_text",
    "caption_notes",
    "figure_paths",
    "layer_ablation_caption",
    "layer_ablation_table",
    "long_format",
    "low_sensitivity_pruned",
    "main_results_table",
    "onp_low_side_note",
    "plot_layer_sensitivity",
    "plot_percentage_sweep",
    "plot_pruned_weight_sensitivity",
    "plot_pruning_before_after",
    "plot_reliability",
    "plot_score_distributions",
    "plot_sensitivity_distribution",
    "pruned_accuracy_table",
    "pruning_methods_table",
    "sample_sizes_text",
    "small_sample_text",
    "seeds_text",
    "selected_params_table",
    "readings_table",
    "statistic_table",
    "subset_sizes",
    "subset_sizes_text",
    "subset_table",
    "write_table",
]
