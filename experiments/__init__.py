"""Entry points (``python -m experiments.<name>``); importing the package registers the config resolvers."""

from experiments import config_help

config_help.register()
