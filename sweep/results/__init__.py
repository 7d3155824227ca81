"""The result store: its schema, how a row is built, reading and writing it, older key schemas."""
