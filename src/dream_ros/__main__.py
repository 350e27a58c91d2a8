import sys

from dream_ros.cli import main

sys.exit(main())
