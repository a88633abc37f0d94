"""A module that cannot be imported: the entry points naming it must stop the start."""

raise ImportError("orchestra_testplugins.broken cannot be imported (on purpose)")
