"""``python -m unitrack``: the unitrack command line."""

from unitrack.cli.app import main

if __name__ == "__main__":
    main()
