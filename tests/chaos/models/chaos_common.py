"""Shared by the chaos models: the SDK and the reference ph on sys.path, once-only markers.

Each chaos model is the reference ph (examples/python/reference_model.py) with one
misbehaviour, so the rows it does write can be checked against the Go kernel.
"""

import os
import sys

_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
sys.path[:0] = [os.path.join(_ROOT, "sdk", "python"), os.path.join(_ROOT, "examples", "python")]

import gridbatch_model  # noqa: E402
import reference_model  # noqa: E402

ph = reference_model.ph


def once(name):
    """True for the first caller among all the scenario's processes, False after.

    The marker is a file in the working directory (the scenario's temporary
    folder, where its models file is), created with O_EXCL.
    """
    try:
        os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        return True
    except FileExistsError:
        return False


def serve(compute):
    gridbatch_model.serve(compute, inputs=reference_model.INPUTS, series=reference_model.SERIES,
                          years=reference_model.YEARS, first_year=reference_model.FIRST_YEAR)
