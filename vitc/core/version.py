"""vitc's version, in one place: the package (``vitc.__version__``), the build (pyproject's dynamic version) and the
metadata of every file vitc writes read it from here, so a layer below the package's face never imports the face."""

__version__ = "0.1.0"
