import sys

from personvit.cli import main

sys.exit(main())
