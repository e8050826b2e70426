import sys

from moezoo.cli import main

sys.exit(main())
