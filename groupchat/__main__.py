"""``python -m groupchat`` runs the same CLI as the ``groupchat`` script."""

from groupchat.cli import main

if __name__ == "__main__":
    main()
