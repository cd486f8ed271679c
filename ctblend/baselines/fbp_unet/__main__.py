"""``python -m ctblend.baselines.fbp_unet``."""

import argparse
import shlex
import sys

from ctblend.baselines.fbp_unet.cli import add_arguments, run

parser = argparse.ArgumentParser(prog="python -m ctblend.baselines.fbp_unet")
add_arguments(parser)
args = parser.parse_args()
args.command = shlex.join(["python", "-m", "ctblend.baselines.fbp_unet", *sys.argv[1:]])
sys.exit(run(args))
