"""The read side: a JSON API and HTML pages over the tables, behind admin tokens."""
