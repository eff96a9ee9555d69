"""Entry points (``python -m experiments.<name>``), and ``experiments.run`` to call them from Python.

Importing the package registers the config resolvers the configs use.
"""

from experiments import config_help, inputs
from experiments.api import Run, run

config_help.register()
inputs.register_resolvers()

__all__ = ["Run", "run"]
