"""The command line from a source checkout: `python cli.py graph run rag` (installed, the `teachgraph`
command runs the same). The commands live in teachgraph/cli.py."""

from teachgraph.cli import main

if __name__ == "__main__":
    main()
