"""Matrix: `!deskphone ...` in a room -> relay; the report -> a notice in the command's thread."""

from deskbot.sources.matrix.adapter import MatrixError, MatrixSource

__all__ = ["MatrixError", "MatrixSource"]
