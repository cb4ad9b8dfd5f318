"""`cnnlab board`: a live local page over every run, CV, sweep and study under a folder."""

from cnnlab.workflows.board.app import board, create_board

__all__ = ["board", "create_board"]
