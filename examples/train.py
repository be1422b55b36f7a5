#!/usr/bin/env python
"""Train MGCM for multimodal NER with Accelerate, from one CPU to many GPUs.

    accelerate launch examples/train.py                  # the embedded synthetic corpus, tiny backbones
    accelerate launch examples/train.py --dataset_dir ../shared/data/twitter2015 ...

`python examples/train.py --help` lists every flag; the training code is `processing/training/` (the command
line in `arguments.py`, the loop in `loop.py`).
"""

from processing.training.loop import main

if __name__ == "__main__":
    main()
