"""The operators' web dashboard (issue 4): server-rendered pages, sessions, live fragments."""
