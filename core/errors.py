"""Domain exceptions: each carries a message a user can act on (pages show it, the CLI prints it)."""


class UserError(Exception):
    """Base for errors caused by input or state the user can fix; never a bug."""


class ConfigError(UserError):
    """A setting (environment variable) is missing or malformed; the message names the variable."""


class NotFound(UserError):
    """The referenced row or object does not exist."""


class InvalidInput(UserError):
    """A value given by the user was rejected; the message says which and why."""


class Conflict(UserError):
    """The action collides with the current state (a duplicate name, a newer label by someone else)."""


class PermissionDenied(UserError):
    """The current user's role does not allow the action; the message names the role needed."""


class JobCancelled(Exception):
    """Raised inside a job function when the user asked to cancel it (checked between steps)."""


class ServiceUnavailable(UserError):
    """A backing server (database, Redis, object store) could not be reached."""
