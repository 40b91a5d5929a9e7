"""The embedded demo: a synthetic multi-step task and the small model pair trained on it.

- :mod:`.task`: climbing a chain of command, one looked-up fact per reasoning step, exact to grade.
- :mod:`.train`: the training recipe and script that produce the pair (``rankguide train-demo``).
- :mod:`.pair`: where the trained pair lives in the package, its run settings, its problems.
"""
