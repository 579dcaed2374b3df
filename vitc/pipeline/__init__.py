"""``vitc run`` and ``vitc demo``: the YAML schema (``config``), the stage runner (``run``), the demo
configuration (``demo``) and the report (``report``)."""
