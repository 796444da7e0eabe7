"""Import-only stand-in for Ray on the lent GPU machine (Ray's 79 MB wheel exceeds the transfer limit).

evotorch imports ray at module level; metods-evo runs with es.num_actors = 0 there, so nothing here is called.
"""


def remote(*args, **kwargs):
    if args and callable(args[0]) and not kwargs:
        return args[0]
    return lambda cls: cls


def is_initialized() -> bool:
    return False


class ObjectRef:  # used in evotorch's type annotations only
    pass


def __getattr__(name):  # any other attribute is an annotation-time placeholder
    return type(name, (), {})
