"""Topics of other shapes than gristmill's own: source mappings, Debezium and JSON rows."""
