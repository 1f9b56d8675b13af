"""`layertap report RUN`: one self-contained HTML file and the same figures as PNGs.

    data.py      what a run holds, gathered by pure functions (layers, tasks, grids, rows)
    quantity.py  the per-token quantity drawn over the ARC grids (norm, PCA, a direction)
    stats.py     the per-layer statistics the figures read (the one seam to `run.stats()`)
    figures.py   one matplotlib Figure per figure (Agg, no pyplot state)
    html.py      the HTML page: inline CSS, figures as data URIs, no script, no fetch
    build.py     everything checked and drawn in memory, then written in one rename
    cli.py       the command's flags

The report imports neither JAX nor the model: it reads the store.
"""
