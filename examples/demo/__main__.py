"""`python -m examples.demo [--size small|full] ...`, what `make demo` runs."""

import sys

from examples.demo.run import main

sys.exit(main())
