"""``python -m adapt.hub push|pull``: the command line of ``adapt.hub.share``.

``share`` (and with it torch and transformers) is imported once the door has checked the
command line (``adapt.cli.command_line``).
"""

import sys

from adapt.cli import command_line, register_cli_config
from adapt.hub import action_argv

if __name__ == "__main__":
    sys.argv = action_argv(sys.argv)
    register_cli_config("hub")  # share registers it too, on import: the door composes first
    command_line("adapt.hub.share:main", "hub")
