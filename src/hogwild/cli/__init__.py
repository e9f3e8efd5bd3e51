"""The ``hogwild`` command line: ``solve``, ``show``, ``models``, ``eval``, ``report``, ``bench``, ``serve``.

Adding a command is one decorated function in a module of this package (imported below)::

    @app.command()
    def bench(...): ...

Every command runs inside :class:`HogwildGroup`, which turns a :class:`HogwildError` into
``error: <message>`` on stderr with exit code 2 (no traceback) and Ctrl-C into exit code 130.
Heavy imports (torch, the model code) happen inside commands so that ``hogwild --help`` and
``hogwild show`` stay fast.
"""

from . import serve, solve, tools  # noqa: F401 - importing a command module registers its commands
from .app import EXIT_INTERRUPTED, EXIT_USER_ERROR, app, main, print_error
from .solve import SAVE_FORMAT, load_saved

__all__ = ["EXIT_INTERRUPTED", "EXIT_USER_ERROR", "SAVE_FORMAT", "app", "load_saved", "main", "print_error"]


if __name__ == "__main__":  # pragma: no cover
    main()
