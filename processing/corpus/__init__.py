"""The tweet corpora: readers, the `datasets` loader, features, statistics, tags, a synthetic corpus, and the
export of a corpus as a Hub dataset folder (`hub_dataset`).

`python -m processing.corpus stats DIR` prints a corpus's statistics; `python -m processing.corpus export DIR
OUT` writes it as a dataset folder that `datasets.load_dataset(OUT)` reads.
"""
