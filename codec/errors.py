"""The exceptions users of the codec see.

Every error caused by the user's input (an audio file, a stream of bytes, an option) derives from
`CodecError`, so the CLI and the server can catch that one class, print its one-line message and
fail cleanly, while programming errors (TypeError, ValueError on API misuse) still surface as
tracebacks.
"""


class CodecError(Exception):
    """Base class of every user-facing codec error; its message is one line."""


class InvalidAudioError(CodecError):
    """The input audio cannot be encoded (unreadable, empty, wrong shape, non-finite samples)."""


class CheckpointError(CodecError):
    """A checkpoint file that cannot be used: missing, corrupt, foreign or mismatched."""


class CorruptStreamError(CodecError):
    """The encoded stream is damaged: truncated, bad magic, bad CRC or an inconsistent header."""


class UnsupportedVersionError(CorruptStreamError):
    """The stream was written in a format version this code cannot read."""
