import sys

from cnnblas.cli import main

sys.exit(main())
