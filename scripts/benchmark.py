#!/usr/bin/env python
"""Time one full ZTF frame through Tails, stage by stage (``tails benchmark``)."""

import sys

from tails.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
