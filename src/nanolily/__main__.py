import sys

from nanolily.interfaces.cli import main

sys.exit(main())
