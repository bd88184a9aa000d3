import sys

from originctl.cli import main

sys.exit(main())
