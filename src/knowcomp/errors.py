"""The one exception type users see: a message that names the problem and the fix."""


class KnowcompError(Exception):
    """A user-facing error. The CLI prints its message as one line and exits non-zero."""


class ModelNotFoundError(KnowcompError):
    """A model spec that is neither a local path, a short name, nor reachable on the hub."""


class RecipeError(KnowcompError):
    """A compression recipe that is malformed or cannot apply to the given model."""


class GroupError(KnowcompError):
    """A module group that is unknown, or empty for the given model."""


class DataError(KnowcompError):
    """A dataset that is missing, malformed, or fails its checksum."""
