"""The ``sample`` stages (split, budget, context, mix) and what they share (``common``)."""
