"""The ``synthbrew-exporter`` command line: it parses arguments, hands over to the modules that
do the work, and prints; exit codes 0 ok, 1 the work failed, 2 bad usage or config (3:
``regenerate --wait`` timed out). One module per group of commands; importing them registers
their commands on :data:`main`.
"""

from exporter.cli import data, regenerate, running
from exporter.cli.common import main

__all__ = ["data", "main", "regenerate", "running"]
