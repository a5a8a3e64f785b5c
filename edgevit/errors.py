"""Error classes of edgevit. Every message says what failed and how to fix it."""

from __future__ import annotations


class EdgevitError(Exception):
    """Base class of every error edgevit raises on purpose."""


class ConfigError(EdgevitError, ValueError):
    """A recipe or a config object is invalid (the message names the key path)."""


class RegistryError(EdgevitError, KeyError):
    """An unknown or duplicate name in one of the registries."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class ModelLoadError(EdgevitError, ValueError):
    """A model name, checkpoint file or state dict could not be loaded."""


class DataError(EdgevitError, ValueError):
    """A dataset is missing, malformed, or does not fit the model's input spec."""


class ExportError(EdgevitError, RuntimeError):
    """An export failed, or its output disagrees with the source model beyond tolerance."""


class ParityError(ExportError):
    """An exported artefact's outputs differ from its parent's beyond the configured tolerance."""


class RuntimeLoadError(EdgevitError, RuntimeError):
    """A runtime could not load or run an artefact."""


class InputSpecError(EdgevitError, ValueError):
    """An input batch does not match the artefact's input spec (shape, channels or dtype)."""


class MissingBackendError(EdgevitError, ImportError):
    """An optional backend is not installed; the message names the pip extra that provides it."""


class QuantizationError(EdgevitError, RuntimeError):
    """An INT8 quantisation pass failed, or no configuration met the accuracy budget (``.record`` holds the figures)."""


class StageError(EdgevitError, RuntimeError):
    """A recipe stage failed with an unexpected error. The message names the stage, the cause and the log file
    holding the traceback; the finished stages before it are kept (``edgevit compress --resume`` continues)."""


class StorageError(EdgevitError, OSError):
    """The disk is full, a file-size limit was reached, or a path is not writable (the message names the path and
    what to do). Nothing half-written is left where a later run would read it."""


class RemoteError(EdgevitError, RuntimeError):
    """A remote device could not be reached or logged into, or lacks what a remote profile needs (the message
    names what to install or change)."""


class HostKeyError(RemoteError):
    """A device's SSH host key is not in known_hosts, or differs from the one recorded there."""
