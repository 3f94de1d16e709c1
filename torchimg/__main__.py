import sys

from torchimg.cli import main

sys.exit(main())
