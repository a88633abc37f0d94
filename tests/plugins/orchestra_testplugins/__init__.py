"""Plugins for Orchestra's tests: what a site's own plugin package looks like."""
