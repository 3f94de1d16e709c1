"""One module per external system; only it imports that system's client library."""
