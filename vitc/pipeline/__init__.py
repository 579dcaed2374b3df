"""``vitc run`` and ``vitc demo``: the YAML schema (``config``), what the run checks before any stage
(``preflight``), its stages (``plan``), the stage records and folder lock (``state``), running them
(``run``), targets checked against the report (``targets``), the demo configuration (``demo``) and the
report (``report``)."""
