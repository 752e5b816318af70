import sys

from kmshc.cli import main

sys.exit(main())
