"""``python -m adapt.annotate [calibrate] k=v ...``: the command line of ``adapt.annotate.command``.

The command module (and with it numpy and Hydra's main) is imported once the door has checked the
command line (``adapt.cli.command_line``).
"""

import sys

from adapt.annotate import action_argv
from adapt.cli import command_line, register_cli_config
from adapt.inference.prompt_syntax import FREE_TEXT_KEYS, quote_argv

if __name__ == "__main__":
    sys.argv = quote_argv(action_argv(sys.argv), (*FREE_TEXT_KEYS, "cases"))  # save cases=id,id: one string
    register_cli_config("annotate")
    command_line("adapt.annotate.command:main", "annotate")
