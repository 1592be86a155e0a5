"""The task resource: the handlers of the contract's `tasks` tag, the tables, the store (user-scoped
SQL), the list statement, cursor keys, the mapping of request bodies to columns, the demo data."""
