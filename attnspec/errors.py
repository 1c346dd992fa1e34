"""The exceptions attnspec raises on bad input (defined in :mod:`attnspec.spec.errors`)."""

from attnspec.spec.errors import (AttnSpecError, ConventionError, DomainError, FormatError, ImplementationError,
                                  MaskError, ShapeError, VectorFileError, require)

__all__ = ["AttnSpecError", "ConventionError", "DomainError", "FormatError", "ImplementationError", "MaskError",
           "ShapeError", "VectorFileError", "require"]
