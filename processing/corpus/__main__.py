import sys

from processing.corpus.cli import main

sys.exit(main())
