"""``python -m ctblend.bench``."""

import argparse
import sys

from ctblend.bench.cli import add_arguments, run

parser = argparse.ArgumentParser(prog="python -m ctblend.bench")
add_arguments(parser)
sys.exit(run(parser.parse_args()))
