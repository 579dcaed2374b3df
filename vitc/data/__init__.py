"""Dataset sources: ``digits`` (embedded), ``imagefolder:PATH`` and ``synthetic``."""

from vitc.data.sources import DataSource, make_loader, parse_data

__all__ = ["DataSource", "make_loader", "parse_data"]
