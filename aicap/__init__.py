"""aicap: the on-device LLM served to every app by the DatamgrService (work in progress, issue 3)."""
