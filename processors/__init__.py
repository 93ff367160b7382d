"""Consumer-group processors that keep PostgreSQL up to date from the event stream."""
