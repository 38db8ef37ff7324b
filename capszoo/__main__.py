import sys

from capszoo.cli import main

sys.exit(main())
