"""The top layer: the ``v2a`` command line, named experiments and the wiring of generation, scoring and the web
page (it may import every other package; nothing imports it)."""
