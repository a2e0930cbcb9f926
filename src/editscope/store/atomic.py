"""The store's atomic write: :func:`editscope.atomic.write_atomically`, re-exported here (it
lives outside the store package so that saving an editor, ``editscope.state_io``, uses it
without importing the store, which imports the editors)."""

from editscope.atomic import write_atomically

__all__ = ["write_atomically"]
