"""`python -m mailprime`: the same command as the `mailprime` console script."""

from mailprime.cli.main import main

if __name__ == "__main__":
    main()
