"""The operators' web dashboard: server-rendered pages, sessions, live fragments."""
