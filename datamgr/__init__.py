"""datamgr: the DatamgrService daemon (DataShare, UDMF, aicap, sync) and its Python SDK."""

__version__ = "0.1.0"
