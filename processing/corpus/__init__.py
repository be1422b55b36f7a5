"""The tweet corpora: readers, the `datasets` loader, features, statistics, tags, a synthetic corpus.

`python -m processing.corpus stats DIR` prints a corpus's statistics.
"""
