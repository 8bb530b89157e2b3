import sys

# The daemon catches SIGTERM from its first line (nestor/stopping.py): a signal while it imports
# and starts ends it cleanly, not by the default handler.
if sys.argv[1:] and "serve" in sys.argv[1:]:
    from . import stopping

    if stopping.daemon_argv(sys.argv[1:]):
        from . import faults

        faults.pause("serve:start", stopping.catch().is_set)

# A nested-host guest's init starts its daemon as `nestor --home HOME serve --channel PORT`
# (images/nested_host_init.sh). That one command line is run without click and the CLI's
# modules (~1 s of its first answer under TCG); anything else goes through the CLI.
if len(sys.argv) == 6 and sys.argv[1] == "--home" and sys.argv[3:5] == ["serve", "--channel"]:
    from .api.server import main_channel

    sys.exit(main_channel(sys.argv[2], sys.argv[5]))

from .command import main

main()
