import sys

from dmd.cli import main

sys.exit(main())
