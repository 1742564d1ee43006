import sys

from esseg.cli import main

sys.exit(main())
