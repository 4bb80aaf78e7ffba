"""``python -m graphc ...``: the same command line as the ``graphc`` console script."""

from graphc.cli import main

if __name__ == "__main__":
    main()
