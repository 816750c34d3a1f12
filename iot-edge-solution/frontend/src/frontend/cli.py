"""`frontend serve` runs the web app; `frontend users ...` manages the enrolled users."""

from __future__ import annotations

import argparse
import getpass
import logging
import secrets
import sys
from typing import Callable

from frontend.config import FrontendSettings, StoreSettings, load_settings
from frontend.errors import FrontendError, UserStoreError
from frontend.labels import ObjectCatalog
from frontend.users import DEFAULT_THRESHOLD, LoginGuard, UserStore, check_name

logger = logging.getLogger(__name__)

DEMO_NAME = "demo"
# what the demo video (iot-edge-solution/media/demo.mp4, made from coffee.png and chelsea.png) shows
DEMO_OBJECT = "espresso"


def _store() -> UserStore:
    settings = load_settings(StoreSettings)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return UserStore(settings.frontend_database, ObjectCatalog.from_file(settings.frontend_labels_file))


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise UserStoreError("the two passwords differ")
    return first


def cmd_serve(_: argparse.Namespace) -> int:
    """Run the web app with uvicorn until Ctrl-C."""
    import uvicorn  # pylint: disable=import-outside-toplevel

    from frontend.app import create_app  # pylint: disable=import-outside-toplevel

    settings = load_settings(FrontendSettings)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # the Storage SDK logs every HTTP request and response at INFO (one poll a second per waiting user): keep
    # its warnings only, unless the whole app runs at DEBUG
    if settings.log_level != "DEBUG":
        logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
    app = create_app(settings)
    print(f"FRONTEND_URL=http://{settings.frontend_host}:{settings.frontend_port}/", flush=True)
    uvicorn.run(app, host=settings.frontend_host, port=settings.frontend_port, log_level=settings.log_level.lower())
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    """Enrol a user."""
    store = _store()
    user = store.add(args.name, _read_password(args.password_stdin), args.object, args.threshold)
    print(f"added {user.name}: object {user.object!r}, threshold {user.threshold} %")
    return 0


def cmd_list(_: argparse.Namespace) -> int:
    """Print every user, one a line."""
    users = _store().list()
    for user in users:
        print(f"{user.name}\t{user.object}\t{user.threshold}")
    if not users:
        print("no users (add one with `frontend users add NAME --object CLASS`)", file=sys.stderr)
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    """Delete a user."""
    if not _store().remove(args.name):
        raise UserStoreError(f"no user {args.name.strip().lower()!r}")
    print(f"removed {args.name.strip().lower()}")
    return 0


def cmd_unlock(args: argparse.Namespace) -> int:
    """Clear a name's failed sign-ins, which ends its lock-out at once."""
    name = check_name(args.name)
    settings = load_settings(StoreSettings)
    cleared = LoginGuard(settings.frontend_database).reset(name)
    if cleared:
        print(f"unlocked {name}: {cleared} failed sign-in(s) cleared")
    else:
        print(f"{name} has no failed sign-ins: nothing to unlock")
    return 0


def cmd_ensure_demo(args: argparse.Namespace) -> int:
    """Create the demo user, or give it a new password; print its name, object and password (local use only)."""
    store = _store()
    password = secrets.token_urlsafe(12)
    if store.get(args.name) is None:
        user = store.add(args.name, password, args.object, args.threshold)
    else:
        user = store.update(args.name, password=password, object_name=args.object, threshold=args.threshold)
    print(f"DEMO_USER={user.name}")
    print(f"DEMO_OBJECT={user.object}")
    print(f"DEMO_THRESHOLD={user.threshold}")
    print(f"DEMO_PASSWORD={password}")
    return 0


def _threshold(text: str) -> int:
    try:
        value = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from e
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{value} is not from 1 to 100")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="frontend", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the web app (settings from the environment)").set_defaults(func=cmd_serve)

    users = commands.add_parser("users", help="manage users").add_subparsers(dest="users_command", required=True)
    add = users.add_parser("add", help="enrol a user: a password and an object of the classifier's model")
    add.add_argument("name")
    add.add_argument("--object", required=True, help="a class of the classifier's model, e.g. 'coffee mug'")
    add.add_argument("--threshold", type=_threshold, default=DEFAULT_THRESHOLD, help="confidence in %% (1-100)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin's first line")
    add.set_defaults(func=cmd_add)
    users.add_parser("list", help="list users: name, object, threshold").set_defaults(func=cmd_list)
    remove = users.add_parser("remove", help="delete a user")
    remove.add_argument("name")
    remove.set_defaults(func=cmd_remove)
    unlock = users.add_parser("unlock", help="end a user's lock-out after failed sign-ins (clears the failures)")
    unlock.add_argument("name")
    unlock.set_defaults(func=cmd_unlock)
    demo = users.add_parser("ensure-demo", help="create the demo user or reset its password; prints the password")
    demo.add_argument("--name", default=DEMO_NAME)
    demo.add_argument("--object", default=DEMO_OBJECT)
    demo.add_argument("--threshold", type=_threshold, default=DEFAULT_THRESHOLD)
    demo.set_defaults(func=cmd_ensure_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `frontend` console script."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except FrontendError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
