"""The paper's tables from the Parquet results.

Tables (Markdown, LaTeX, CSV): a table function takes the results frame of one model and
returns a :class:`pandas.DataFrame` laid out like the paper's table, whose cells are
:class:`SeedStat` / :class:`CombinedCell` (``str(cell)`` is the formatted text);
:func:`write_table` writes its files with the bold rule, :func:`caption_notes` and the
other caption helpers state what its numbers rest on.

- :mod:`~opnp.report.cells`: cells, :func:`long_format`;
- :mod:`~opnp.report.frames`: checks and row selection (the row and seed choices);
- :mod:`~opnp.report.table_methods`: Tables 1, 2, 5, 6, 4, selected hyperparameters;
- :mod:`~opnp.report.table_ablations`: Tables 3, 7, 8, 9;
- :mod:`~opnp.report.captions`: caption sentences from the rows and cells;
- :mod:`~opnp.report.render`: the files and the bold rule;
- :mod:`~opnp.report.labels`: metric, method and percentage names shared by all.

Figures: :mod:`opnp.report.plots`.
"""

from opnp.report.captions import (
    SUBSET_SAMPLES_KEY,
    bold_rule_text,
    caption_notes,
    layer_ablation_caption,
    onp_low_side_note,
    sample_sizes_text,
    seeds_text,
    subset_sizes,
    subset_sizes_text,
)
from opnp.report.cells import CombinedCell, SeedStat, long_format
from opnp.report.labels import AVERAGE, METHOD_LABELS, METRICS, NO_PRUNING, PERCENTAGE_ORDER
from opnp.report.render import write_table
from opnp.report.table_ablations import (
    LAYER_LABELS,
    SELECTED_LABEL,
    STATISTIC_LABELS,
    layer_ablation_table,
    pruned_accuracy_table,
    statistic_table,
    subset_table,
)
from opnp.report.table_methods import (
    REACT_PERCENTILE_SOURCES,
    TABLE4_METHODS,
    WITH_WITHOUT_LABELS,
    main_results_table,
    pruning_methods_table,
    selected_params_table,
)

__all__ = [
    "AVERAGE",
    "LAYER_LABELS",
    "METHOD_LABELS",
    "METRICS",
    "NO_PRUNING",
    "PERCENTAGE_ORDER",
    "REACT_PERCENTILE_SOURCES",
    "SELECTED_LABEL",
    "STATISTIC_LABELS",
    "SUBSET_SAMPLES_KEY",
    "TABLE4_METHODS",
    "WITH_WITHOUT_LABELS",
    "CombinedCell",
    "SeedStat",
    "bold_rule_text",
    "caption_notes",
    "layer_ablation_caption",
    "layer_ablation_table",
    "long_format",
    "main_results_table",
    "onp_low_side_note",
    "pruned_accuracy_table",
    "pruning_methods_table",
    "sample_sizes_text",
    "seeds_text",
    "selected_params_table",
    "statistic_table",
    "subset_sizes",
    "subset_sizes_text",
    "subset_table",
    "write_table",
]
