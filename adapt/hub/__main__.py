"""``python -m adapt.hub push|pull``: the command line of ``adapt.hub.share``."""

import sys

from adapt.cli import command_line
from adapt.hub.share import action_argv, main

if __name__ == "__main__":
    sys.argv = action_argv(sys.argv)
    command_line(main, "hub")
